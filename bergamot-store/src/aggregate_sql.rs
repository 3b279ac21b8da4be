//! The aggregate queries (DESIGN.md "Group state").
//!
//! The group graph changes only at config sync, so [`REBUILD_CLOSURE`] (run
//! by `sync_config`, one recursive query) stores there:
//!
//! - `group_closure(anc, des)`: every group with each group at or below it,
//!   itself included, each pair once however many paths lead to it (UNION,
//!   not UNION ALL, which also ends a cycle);
//! - `group_extra_paths(anc, check_id, extra)`: the checks that reach `anc`
//!   through `extra + 1` of their direct groups (only checks in several
//!   groups, and only where two of them share that ancestor).
//!
//! The contributions are kept per group in `group_counts` (per direct group:
//! how many members have each effective status and flag) and
//! `group_extra_counts` (per ancestor: the same over `group_extra_paths`
//! weighted by `extra`), rebuilt there too and kept up to date by a
//! statement trigger on `check_state` (migration 0002).
//!
//! One statement then computes the aggregates of a set of target groups:
//! the `group_counts` of the groups at or below each target (closure pairs)
//! summed, minus its `group_extra_counts`: a check in k of those groups was
//! summed k times, and `extra = k - 1`. The worst status is the worst-ranked
//! one with a nonzero count ([`worst_case`]: by `Status::rank`, not by the
//! stored code).
//!
//! Ignored checks (suppressed, in downtime, acknowledged, encompassed) count
//! as PENDING (0), which is ok. Locations form a tree and a host is in one
//! location, so per-location partial aggregates summed over the location
//! closure (computed in the query) are exact there.

/// A SQL expression: the code of the worst-ranked status whose count column
/// `{prefix}c{code}` is nonzero, 0 (PENDING) when none is (or all are NULL).
pub(crate) fn worst_case(prefix: &str) -> String {
    use bergamot_core::model::Status;
    let whens: String = Status::BY_RANK
        .iter()
        .rev()
        .filter(|s| **s != Status::Pending)
        .map(|s| format!("WHEN {prefix}c{k} > 0 THEN {k} ", k = s.severity()))
        .collect();
    format!("(CASE {whens}ELSE 0 END)::int4")
}

/// A SQL expression: the rank of the status code `expr` (see `Status::rank`).
pub(crate) fn rank_of(expr: &str) -> String {
    use bergamot_core::model::Status;
    let codes: Vec<String> = Status::BY_RANK
        .iter()
        .map(|s| s.severity().to_string())
        .collect();
    format!(
        "array_position('{{{}}}'::int2[], ({expr})::int2)",
        codes.join(",")
    )
}

/// Which groups or locations to aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Targets {
    /// Every one (no parameter).
    All,
    /// `$1` and everything below it.
    Subtree,
    /// Exactly the ids in `$1::uuid[]`.
    Of,
}

/// Per-check values from `check_state` (`eff` is a generated column): the
/// relation `e` that [`partial_columns`] aggregates.
const EFFECTIVE: &str = "SELECT s.check_id, s.eff, s.suppressed, s.in_downtime, \
     s.acknowledged <> 0 AS acked, s.encompassed FROM check_state s";

/// Partial aggregate columns over rows of `e` ([`EFFECTIVE`]). The counts
/// are `int4` so that summing them over the closure uses `sum(int4)` (an
/// `int8` accumulator), not `sum(int8)` (a numeric one, ~15% slower here).
fn partial_columns() -> String {
    let mut cols = vec!["count(*)::int4 AS total".to_string()];
    for k in 0..10 {
        cols.push(format!("count(*) FILTER (WHERE e.eff = {k})::int4 AS c{k}"));
    }
    cols.push("count(*) FILTER (WHERE e.suppressed)::int4 AS sup".into());
    cols.push("count(*) FILTER (WHERE e.in_downtime)::int4 AS dt".into());
    cols.push("count(*) FILTER (WHERE e.acked)::int4 AS ack".into());
    cols.push("count(*) FILTER (WHERE e.encompassed)::int4 AS enc".into());
    cols.join(", ")
}

/// Combines partials per `anc` (sums of counts), `p.*` columns.
fn combine_columns() -> String {
    let mut cols = vec!["sum(p.total)::int8 AS total".to_string()];
    for k in 0..10 {
        cols.push(format!("sum(p.c{k})::int8 AS c{k}"));
    }
    for f in ["sup", "dt", "ack", "enc"] {
        cols.push(format!("sum(p.{f})::int8 AS {f}"));
    }
    cols.join(", ")
}

/// The output columns after `id`, from `a` (an aggregate row, possibly NULL).
fn out_columns() -> String {
    let mut cols = vec![worst_case("a."), "coalesce(a.total, 0)".to_string()];
    for k in 0..10 {
        cols.push(format!("coalesce(a.c{k}, 0)"));
    }
    for f in ["sup", "dt", "ack", "enc"] {
        cols.push(format!("coalesce(a.{f}, 0)"));
    }
    cols.join(", ")
}

/// The query for groups: rows of `id` then the aggregate columns, sorted by id.
pub(crate) fn group_query(targets: Targets) -> String {
    // `clo`: the (target, group at or below it) pairs.
    // The whole graph joins group_closure directly; a restricted one
    // materialises its few pairs once.
    let materialized = if targets == Targets::All {
        ""
    } else {
        "MATERIALIZED "
    };
    let (targets, clo) = match targets {
        Targets::All => (
            "targets(id) AS (SELECT id FROM groups)",
            "SELECT c.anc, c.des FROM group_closure c",
        ),
        Targets::Subtree => (
            "targets(id) AS (SELECT c.des FROM group_closure c WHERE c.anc = $1::uuid)",
            "SELECT c.anc, c.des FROM group_closure c WHERE c.anc IN (SELECT id FROM targets)",
        ),
        Targets::Of => (
            "targets(id) AS (SELECT id FROM groups WHERE id = ANY($1::uuid[]))",
            "SELECT c.anc, c.des FROM group_closure c WHERE c.anc = ANY($1::uuid[])",
        ),
    };
    let names: Vec<String> = ["total".to_string()]
        .into_iter()
        .chain((0..10).map(|k| format!("c{k}")))
        .chain(["sup", "dt", "ack", "enc"].map(String::from))
        .collect();
    let rollup: Vec<String> = names
        .iter()
        .map(|n| format!("sum(d.{n})::int8 AS {n}"))
        .collect();
    let corrected: Vec<String> = names
        .iter()
        .map(|n| format!("coalesce(a.{n}, 0) - coalesce(x.{n}, 0) AS {n}"))
        .collect();
    // The worst effective status: the worst-ranked one with a nonzero count.
    let worst = worst_case("r.");
    let out: Vec<String> = names.iter().map(|n| format!("r.{n}")).collect();
    let (rollup, corrected, out) = (rollup.join(", "), corrected.join(", "), out.join(", "));
    format!(
        "WITH {targets},
         clo AS {materialized}({clo}),
         agg AS (
             SELECT c.anc, {rollup}
             FROM clo c JOIN group_counts d ON d.group_id = c.des
             GROUP BY c.anc
         ),
         res AS (
             SELECT g.id, {corrected}
             FROM targets t JOIN groups g ON g.id = t.id
             LEFT JOIN agg a ON a.anc = t.id
             LEFT JOIN group_extra_counts x ON x.anc = t.id
         )
         SELECT r.id, {worst}, {out}
         FROM res r
         ORDER BY r.id"
    )
}

/// Rebuilds `group_closure`, `group_extra_paths` and `group_counts` from
/// `group_parents`, `check_groups` and `check_state` (run by `sync_config`,
/// in its transaction, after the initial states are written).
pub(crate) const REBUILD_CLOSURE: &str = "
    DELETE FROM group_closure;
    INSERT INTO group_closure (anc, des)
    WITH RECURSIVE closure(anc, des) AS (
        SELECT id, id FROM groups
        UNION
        SELECT c.anc, gp.group_id FROM closure c JOIN group_parents gp ON gp.parent_id = c.des
    )
    SELECT anc, des FROM closure;
    DELETE FROM group_extra_paths;
    INSERT INTO group_extra_paths (anc, check_id, extra)
    SELECT c.anc, cg.check_id, count(*) - 1
    FROM check_groups cg JOIN group_closure c ON c.des = cg.group_id
    WHERE NOT cg.sole
    GROUP BY c.anc, cg.check_id
    HAVING count(*) > 1;
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
    ANALYZE group_closure, group_extra_paths, group_counts, group_extra_counts;";

/// The query for locations: host checks only, over the location tree.
pub(crate) fn location_query(targets: Targets) -> String {
    let targets = match targets {
        Targets::All => "targets(id) AS (SELECT id FROM locations),".to_string(),
        Targets::Subtree => "sub(id) AS (
              SELECT id FROM locations WHERE id = $1::uuid
              UNION
              SELECT l.id FROM locations l JOIN sub ON l.parent_id = sub.id
            ),
            targets(id) AS (SELECT id FROM sub),"
            .to_string(),
        Targets::Of => {
            "targets(id) AS (SELECT id FROM locations WHERE id = ANY($1::uuid[])),".to_string()
        }
    };
    let (partial, combine, out) = (partial_columns(), combine_columns(), out_columns());
    format!(
        "WITH RECURSIVE {targets}
         closure(anc, des) AS (
             SELECT id, id FROM targets
             UNION
             SELECT c.anc, l.id FROM closure c JOIN locations l ON l.parent_id = c.des
         ),
         direct AS (
             SELECT k.location_id, {partial}
             FROM checks k
             JOIN ({EFFECTIVE}) e ON e.check_id = k.id
             WHERE k.is_host AND k.location_id IN (SELECT des FROM closure)
             GROUP BY k.location_id
         ),
         agg AS (
             SELECT c.anc AS anc, {combine}
             FROM closure c JOIN direct p ON p.location_id = c.des
             GROUP BY c.anc
         )
         SELECT l.id, {out}
         FROM targets t JOIN locations l ON l.id = t.id LEFT JOIN agg a ON a.anc = t.id
         ORDER BY l.id"
    )
}

/// Every group a check is in, directly or through descendants, each once.
pub(crate) const ANCESTOR_GROUPS: &str = "SELECT DISTINCT c.anc
     FROM check_groups cg JOIN group_closure c ON c.des = cg.group_id
     WHERE cg.check_id = $1::uuid ORDER BY c.anc";

/// The location of a check's host and its ancestors, sorted by id (as the
/// in-memory store). The depth bound stops a (misconfigured) cycle.
pub(crate) const ANCESTOR_LOCATIONS: &str = "WITH RECURSIVE up(id, depth) AS (
         SELECT location_id, 0 FROM checks WHERE id = $1::uuid AND location_id IS NOT NULL
         UNION
         SELECT l.parent_id, up.depth + 1 FROM locations l JOIN up ON l.id = up.id
         WHERE l.parent_id IS NOT NULL AND up.depth < 10000
     )
     SELECT up.id FROM up JOIN locations l ON l.id = up.id
     GROUP BY up.id ORDER BY up.id";
