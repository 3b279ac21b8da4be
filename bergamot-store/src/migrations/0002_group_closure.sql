-- Version 2: precomputed group graph for the aggregate query.
--
-- The group graph changes only at config sync, so its transitive closure and
-- the multi-path memberships are rebuilt there (Store::sync_config, one
-- recursive query) instead of on every aggregate query.

-- Every (group, group at or below it) pair, the group itself included, once.
CREATE TABLE group_closure (
    anc  uuid NOT NULL,
    des  uuid NOT NULL,
    PRIMARY KEY (anc, des)
);
CREATE INDEX group_closure_des ON group_closure (des, anc);

-- Checks that reach a group through `extra + 1` of their direct groups
-- (extra >= 1): the per-group sums count them that many times.
CREATE TABLE group_extra_paths (
    anc       uuid NOT NULL,
    check_id  uuid NOT NULL,
    extra     integer NOT NULL,
    PRIMARY KEY (anc, check_id)
);

-- The status a check contributes to aggregates: an ignored check (suppressed,
-- in downtime, acknowledged, encompassed) counts as PENDING (0).
ALTER TABLE check_state ADD COLUMN eff smallint GENERATED ALWAYS AS (
    CASE WHEN suppressed OR in_downtime OR acknowledged <> 0 OR encompassed
         THEN 0::int2 ELSE status END) STORED;

INSERT INTO group_closure (anc, des)
WITH RECURSIVE closure(anc, des) AS (
    SELECT id, id FROM groups
    UNION
    SELECT c.anc, gp.group_id FROM closure c JOIN group_parents gp ON gp.parent_id = c.des
)
SELECT anc, des FROM closure;

INSERT INTO group_extra_paths (anc, check_id, extra)
SELECT c.anc, cg.check_id, count(*) - 1
FROM check_groups cg JOIN group_closure c ON c.des = cg.group_id
WHERE NOT cg.sole
GROUP BY c.anc, cg.check_id
HAVING count(*) > 1;

-- Per direct group, the counts of its member checks' contributions (every
-- membership; a check in several groups counts in each). Rebuilt by
-- sync_config (which alone inserts and deletes states and memberships) and
-- kept up to date on every check_state UPDATE by the statement trigger below,
-- so the aggregate query reads 10k rows instead of joining 120k memberships
-- with 100k states. The worst status is the highest k with c<k> > 0.
CREATE TABLE group_counts (
    group_id  uuid PRIMARY KEY,
    total int4 NOT NULL DEFAULT 0,
    c0 int4 NOT NULL DEFAULT 0,
    c1 int4 NOT NULL DEFAULT 0,
    c2 int4 NOT NULL DEFAULT 0,
    c3 int4 NOT NULL DEFAULT 0,
    c4 int4 NOT NULL DEFAULT 0,
    c5 int4 NOT NULL DEFAULT 0,
    c6 int4 NOT NULL DEFAULT 0,
    c7 int4 NOT NULL DEFAULT 0,
    c8 int4 NOT NULL DEFAULT 0,
    c9 int4 NOT NULL DEFAULT 0,
    sup int4 NOT NULL DEFAULT 0,
    dt int4 NOT NULL DEFAULT 0,
    ack int4 NOT NULL DEFAULT 0,
    enc int4 NOT NULL DEFAULT 0
);

-- Per ancestor, what the roll-up of group_counts over group_closure counts
-- more than once (group_extra_paths weighted by `extra`); kept by the same
-- trigger and rebuilt by sync_config. Few rows: only ancestors shared by
-- two groups of one check.
CREATE TABLE group_extra_counts (
    anc  uuid PRIMARY KEY,
    total int4 NOT NULL DEFAULT 0,
    c0 int4 NOT NULL DEFAULT 0,
    c1 int4 NOT NULL DEFAULT 0,
    c2 int4 NOT NULL DEFAULT 0,
    c3 int4 NOT NULL DEFAULT 0,
    c4 int4 NOT NULL DEFAULT 0,
    c5 int4 NOT NULL DEFAULT 0,
    c6 int4 NOT NULL DEFAULT 0,
    c7 int4 NOT NULL DEFAULT 0,
    c8 int4 NOT NULL DEFAULT 0,
    c9 int4 NOT NULL DEFAULT 0,
    sup int4 NOT NULL DEFAULT 0,
    dt int4 NOT NULL DEFAULT 0,
    ack int4 NOT NULL DEFAULT 0,
    enc int4 NOT NULL DEFAULT 0
);

CREATE FUNCTION group_counts_on_update() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
    -- Lock the affected rows in id order first: concurrent batches touching
    -- the same groups then queue instead of deadlocking.
    PERFORM 1 FROM group_counts WHERE group_id IN (
        SELECT cg.group_id
        FROM old_rows o JOIN new_rows n ON n.check_id = o.check_id
        JOIN check_groups cg ON cg.check_id = n.check_id
        WHERE (CASE WHEN o.suppressed OR o.in_downtime OR o.acknowledged <> 0 OR o.encompassed THEN 0::int2 ELSE o.status END, o.suppressed, o.in_downtime, o.acknowledged <> 0, o.encompassed) IS DISTINCT FROM (CASE WHEN n.suppressed OR n.in_downtime OR n.acknowledged <> 0 OR n.encompassed THEN 0::int2 ELSE n.status END, n.suppressed, n.in_downtime, n.acknowledged <> 0, n.encompassed))
    ORDER BY group_id FOR UPDATE;
    UPDATE group_counts g SET total = g.total + d.total, c0 = g.c0 + d.c0, c1 = g.c1 + d.c1, c2 = g.c2 + d.c2, c3 = g.c3 + d.c3, c4 = g.c4 + d.c4, c5 = g.c5 + d.c5, c6 = g.c6 + d.c6, c7 = g.c7 + d.c7, c8 = g.c8 + d.c8, c9 = g.c9 + d.c9, sup = g.sup + d.sup, dt = g.dt + d.dt, ack = g.ack + d.ack, enc = g.enc + d.enc
    FROM (
        SELECT cg.group_id, sum(x.w)::int4 AS total, coalesce(sum(x.w) FILTER (WHERE x.eff = 0), 0)::int4 AS c0, coalesce(sum(x.w) FILTER (WHERE x.eff = 1), 0)::int4 AS c1, coalesce(sum(x.w) FILTER (WHERE x.eff = 2), 0)::int4 AS c2, coalesce(sum(x.w) FILTER (WHERE x.eff = 3), 0)::int4 AS c3, coalesce(sum(x.w) FILTER (WHERE x.eff = 4), 0)::int4 AS c4, coalesce(sum(x.w) FILTER (WHERE x.eff = 5), 0)::int4 AS c5, coalesce(sum(x.w) FILTER (WHERE x.eff = 6), 0)::int4 AS c6, coalesce(sum(x.w) FILTER (WHERE x.eff = 7), 0)::int4 AS c7, coalesce(sum(x.w) FILTER (WHERE x.eff = 8), 0)::int4 AS c8, coalesce(sum(x.w) FILTER (WHERE x.eff = 9), 0)::int4 AS c9, coalesce(sum(x.w) FILTER (WHERE x.sup), 0)::int4 AS sup, coalesce(sum(x.w) FILTER (WHERE x.dt), 0)::int4 AS dt, coalesce(sum(x.w) FILTER (WHERE x.ack), 0)::int4 AS ack, coalesce(sum(x.w) FILTER (WHERE x.enc), 0)::int4 AS enc
        FROM (
            SELECT o.check_id, -1 AS w, CASE WHEN o.suppressed OR o.in_downtime OR o.acknowledged <> 0 OR o.encompassed THEN 0::int2 ELSE o.status END AS eff, o.suppressed AS sup,
                   o.in_downtime AS dt, o.acknowledged <> 0 AS ack, o.encompassed AS enc
            FROM old_rows o JOIN new_rows n ON n.check_id = o.check_id WHERE (CASE WHEN o.suppressed OR o.in_downtime OR o.acknowledged <> 0 OR o.encompassed THEN 0::int2 ELSE o.status END, o.suppressed, o.in_downtime, o.acknowledged <> 0, o.encompassed) IS DISTINCT FROM (CASE WHEN n.suppressed OR n.in_downtime OR n.acknowledged <> 0 OR n.encompassed THEN 0::int2 ELSE n.status END, n.suppressed, n.in_downtime, n.acknowledged <> 0, n.encompassed)
            UNION ALL
            SELECT n.check_id, 1, CASE WHEN n.suppressed OR n.in_downtime OR n.acknowledged <> 0 OR n.encompassed THEN 0::int2 ELSE n.status END, n.suppressed,
                   n.in_downtime, n.acknowledged <> 0, n.encompassed
            FROM old_rows o JOIN new_rows n ON n.check_id = o.check_id WHERE (CASE WHEN o.suppressed OR o.in_downtime OR o.acknowledged <> 0 OR o.encompassed THEN 0::int2 ELSE o.status END, o.suppressed, o.in_downtime, o.acknowledged <> 0, o.encompassed) IS DISTINCT FROM (CASE WHEN n.suppressed OR n.in_downtime OR n.acknowledged <> 0 OR n.encompassed THEN 0::int2 ELSE n.status END, n.suppressed, n.in_downtime, n.acknowledged <> 0, n.encompassed)
        ) x JOIN check_groups cg ON cg.check_id = x.check_id
        GROUP BY cg.group_id
    ) d
    WHERE g.group_id = d.group_id;
    PERFORM 1 FROM group_extra_counts WHERE anc IN (
        SELECT p.anc
        FROM old_rows o JOIN new_rows n ON n.check_id = o.check_id
        JOIN group_extra_paths p ON p.check_id = n.check_id
        WHERE (CASE WHEN o.suppressed OR o.in_downtime OR o.acknowledged <> 0 OR o.encompassed THEN 0::int2 ELSE o.status END, o.suppressed, o.in_downtime, o.acknowledged <> 0, o.encompassed) IS DISTINCT FROM (CASE WHEN n.suppressed OR n.in_downtime OR n.acknowledged <> 0 OR n.encompassed THEN 0::int2 ELSE n.status END, n.suppressed, n.in_downtime, n.acknowledged <> 0, n.encompassed))
    ORDER BY anc FOR UPDATE;
    UPDATE group_extra_counts e SET total = e.total + d.total, c0 = e.c0 + d.c0, c1 = e.c1 + d.c1, c2 = e.c2 + d.c2, c3 = e.c3 + d.c3, c4 = e.c4 + d.c4, c5 = e.c5 + d.c5, c6 = e.c6 + d.c6, c7 = e.c7 + d.c7, c8 = e.c8 + d.c8, c9 = e.c9 + d.c9, sup = e.sup + d.sup, dt = e.dt + d.dt, ack = e.ack + d.ack, enc = e.enc + d.enc
    FROM (
        SELECT p.anc, sum(x.w * p.extra)::int4 AS total, coalesce(sum(x.w * p.extra) FILTER (WHERE x.eff = 0), 0)::int4 AS c0, coalesce(sum(x.w * p.extra) FILTER (WHERE x.eff = 1), 0)::int4 AS c1, coalesce(sum(x.w * p.extra) FILTER (WHERE x.eff = 2), 0)::int4 AS c2, coalesce(sum(x.w * p.extra) FILTER (WHERE x.eff = 3), 0)::int4 AS c3, coalesce(sum(x.w * p.extra) FILTER (WHERE x.eff = 4), 0)::int4 AS c4, coalesce(sum(x.w * p.extra) FILTER (WHERE x.eff = 5), 0)::int4 AS c5, coalesce(sum(x.w * p.extra) FILTER (WHERE x.eff = 6), 0)::int4 AS c6, coalesce(sum(x.w * p.extra) FILTER (WHERE x.eff = 7), 0)::int4 AS c7, coalesce(sum(x.w * p.extra) FILTER (WHERE x.eff = 8), 0)::int4 AS c8, coalesce(sum(x.w * p.extra) FILTER (WHERE x.eff = 9), 0)::int4 AS c9, coalesce(sum(x.w * p.extra) FILTER (WHERE x.sup), 0)::int4 AS sup, coalesce(sum(x.w * p.extra) FILTER (WHERE x.dt), 0)::int4 AS dt, coalesce(sum(x.w * p.extra) FILTER (WHERE x.ack), 0)::int4 AS ack, coalesce(sum(x.w * p.extra) FILTER (WHERE x.enc), 0)::int4 AS enc
        FROM (
            SELECT o.check_id, -1 AS w, CASE WHEN o.suppressed OR o.in_downtime OR o.acknowledged <> 0 OR o.encompassed THEN 0::int2 ELSE o.status END AS eff, o.suppressed AS sup,
                   o.in_downtime AS dt, o.acknowledged <> 0 AS ack, o.encompassed AS enc
            FROM old_rows o JOIN new_rows n ON n.check_id = o.check_id WHERE (CASE WHEN o.suppressed OR o.in_downtime OR o.acknowledged <> 0 OR o.encompassed THEN 0::int2 ELSE o.status END, o.suppressed, o.in_downtime, o.acknowledged <> 0, o.encompassed) IS DISTINCT FROM (CASE WHEN n.suppressed OR n.in_downtime OR n.acknowledged <> 0 OR n.encompassed THEN 0::int2 ELSE n.status END, n.suppressed, n.in_downtime, n.acknowledged <> 0, n.encompassed)
            UNION ALL
            SELECT n.check_id, 1, CASE WHEN n.suppressed OR n.in_downtime OR n.acknowledged <> 0 OR n.encompassed THEN 0::int2 ELSE n.status END, n.suppressed,
                   n.in_downtime, n.acknowledged <> 0, n.encompassed
            FROM old_rows o JOIN new_rows n ON n.check_id = o.check_id WHERE (CASE WHEN o.suppressed OR o.in_downtime OR o.acknowledged <> 0 OR o.encompassed THEN 0::int2 ELSE o.status END, o.suppressed, o.in_downtime, o.acknowledged <> 0, o.encompassed) IS DISTINCT FROM (CASE WHEN n.suppressed OR n.in_downtime OR n.acknowledged <> 0 OR n.encompassed THEN 0::int2 ELSE n.status END, n.suppressed, n.in_downtime, n.acknowledged <> 0, n.encompassed)
        ) x JOIN group_extra_paths p ON p.check_id = x.check_id
        GROUP BY p.anc
    ) d
    WHERE e.anc = d.anc;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER group_counts_on_update AFTER UPDATE ON check_state
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION group_counts_on_update();

DELETE FROM group_counts;
INSERT INTO group_counts (group_id, total, c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, sup, dt, ack, enc)
SELECT g.id, count(x.check_id)::int4, (count(*) FILTER (WHERE x.eff = 0))::int4, (count(*) FILTER (WHERE x.eff = 1))::int4, (count(*) FILTER (WHERE x.eff = 2))::int4, (count(*) FILTER (WHERE x.eff = 3))::int4, (count(*) FILTER (WHERE x.eff = 4))::int4, (count(*) FILTER (WHERE x.eff = 5))::int4, (count(*) FILTER (WHERE x.eff = 6))::int4, (count(*) FILTER (WHERE x.eff = 7))::int4, (count(*) FILTER (WHERE x.eff = 8))::int4, (count(*) FILTER (WHERE x.eff = 9))::int4, (count(*) FILTER (WHERE x.sup))::int4, (count(*) FILTER (WHERE x.dt))::int4, (count(*) FILTER (WHERE x.ack))::int4, (count(*) FILTER (WHERE x.enc))::int4
FROM groups g LEFT JOIN (
    SELECT cg.group_id, s.check_id, s.eff, s.suppressed AS sup, s.in_downtime AS dt,
           s.acknowledged <> 0 AS ack, s.encompassed AS enc
    FROM check_groups cg JOIN check_state s ON s.check_id = cg.check_id
) x ON x.group_id = g.id
GROUP BY g.id;
DELETE FROM group_extra_counts;
INSERT INTO group_extra_counts (anc, total, c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, sup, dt, ack, enc)
SELECT p.anc, sum(p.extra)::int4, coalesce(sum(p.extra) FILTER (WHERE x.eff = 0), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.eff = 1), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.eff = 2), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.eff = 3), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.eff = 4), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.eff = 5), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.eff = 6), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.eff = 7), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.eff = 8), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.eff = 9), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.sup), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.dt), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.ack), 0)::int4, coalesce(sum(p.extra) FILTER (WHERE x.enc), 0)::int4
FROM group_extra_paths p JOIN (
    SELECT s.check_id, s.eff, s.suppressed AS sup, s.in_downtime AS dt,
           s.acknowledged <> 0 AS ack, s.encompassed AS enc
    FROM check_state s
) x ON x.check_id = p.check_id
GROUP BY p.anc;
