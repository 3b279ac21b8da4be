//! The group query of schema version 1 (before `group_closure`), kept to
//! measure it side by side with the current one in the same run. It
//! computes the closure in the query and joins `check_state` per row.
#![allow(dead_code)]

#[derive(Clone, Copy)]
enum Targets {
    All,
    Subtree,
    Of,
}

/// Per-check values over `check_state s`: `eff` and the flags.
const EFFECTIVE: &str = "CASE WHEN s.suppressed OR s.in_downtime OR s.acknowledged <> 0 \
     OR s.encompassed THEN 0::int2 ELSE s.status END AS eff, s.suppressed, s.in_downtime, \
     s.acknowledged <> 0 AS acked, s.encompassed";

/// Partial aggregate columns over rows of `e` (an [`EFFECTIVE`] relation).
fn partial_columns() -> String {
    let mut cols = vec![
        "max(e.eff)::int4 AS worst".to_string(),
        "count(*) AS total".to_string(),
    ];
    for k in 0..10 {
        cols.push(format!("count(*) FILTER (WHERE e.eff = {k}) AS c{k}"));
    }
    cols.push("count(*) FILTER (WHERE e.suppressed) AS sup".into());
    cols.push("count(*) FILTER (WHERE e.in_downtime) AS dt".into());
    cols.push("count(*) FILTER (WHERE e.acked) AS ack".into());
    cols.push("count(*) FILTER (WHERE e.encompassed) AS enc".into());
    cols.join(", ")
}

/// The same columns for one check row `e` (to union with partials).
fn single_columns() -> String {
    let mut cols = vec!["e.eff::int4".to_string(), "1::int8".to_string()];
    for k in 0..10 {
        cols.push(format!("(e.eff = {k})::int::int8"));
    }
    for f in ["suppressed", "in_downtime", "acked", "encompassed"] {
        cols.push(format!("e.{f}::int::int8"));
    }
    cols.join(", ")
}

/// Combines partials per `anc` (max of worst, sums of counts), `p.*` columns.
fn combine_columns() -> String {
    let mut cols = vec![
        "max(p.worst) AS worst".to_string(),
        "sum(p.total)::int8 AS total".to_string(),
    ];
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
    let mut cols = vec![
        "coalesce(a.worst, 0)".to_string(),
        "coalesce(a.total, 0)".to_string(),
    ];
    for k in 0..10 {
        cols.push(format!("coalesce(a.c{k}, 0)"));
    }
    for f in ["sup", "dt", "ack", "enc"] {
        cols.push(format!("coalesce(a.{f}, 0)"));
    }
    cols.join(", ")
}

fn part_names() -> String {
    let mut cols = vec!["anc".to_string(), "worst".to_string(), "total".to_string()];
    for k in 0..10 {
        cols.push(format!("c{k}"));
    }
    for f in ["sup", "dt", "ack", "enc"] {
        cols.push(f.to_string());
    }
    cols.join(", ")
}

/// The query for groups: rows of `id` then the aggregate columns, sorted by id.
pub fn group_query_all() -> String {
    let targets = Targets::All;
    let targets = match targets {
        Targets::All => "targets(id) AS (SELECT id FROM groups),".to_string(),
        Targets::Subtree => "sub(id) AS (
              SELECT id FROM groups WHERE id = $1::uuid
              UNION
              SELECT gp.group_id FROM group_parents gp JOIN sub ON gp.parent_id = sub.id
            ),
            targets(id) AS (SELECT id FROM sub),"
            .to_string(),
        Targets::Of => {
            "targets(id) AS (SELECT id FROM groups WHERE id = ANY($1::uuid[])),".to_string()
        }
    };
    let (partial, single, combine, out, parts) = (
        partial_columns(),
        single_columns(),
        combine_columns(),
        out_columns(),
        part_names(),
    );
    format!(
        "WITH RECURSIVE {targets}
         closure(anc, des) AS (
             SELECT id, id FROM targets
             UNION
             SELECT c.anc, gp.group_id FROM closure c JOIN group_parents gp ON gp.parent_id = c.des
         ),
         direct AS (
             SELECT cg.group_id, {partial}
             FROM check_groups cg
             JOIN LATERAL (SELECT {EFFECTIVE} FROM check_state s WHERE s.check_id = cg.check_id) e ON true
             WHERE cg.sole AND cg.group_id IN (SELECT des FROM closure)
             GROUP BY cg.group_id
         ),
         multi AS (
             SELECT DISTINCT c.anc, cg.check_id
             FROM closure c JOIN check_groups cg ON cg.group_id = c.des AND NOT cg.sole
         ),
         parts({parts}) AS (
             SELECT c.anc, d.worst, d.total, d.c0, d.c1, d.c2, d.c3, d.c4, d.c5, d.c6, d.c7,
                    d.c8, d.c9, d.sup, d.dt, d.ack, d.enc
             FROM closure c JOIN direct d ON d.group_id = c.des
             UNION ALL
             SELECT m.anc, {single}
             FROM multi m
             JOIN LATERAL (SELECT {EFFECTIVE} FROM check_state s WHERE s.check_id = m.check_id) e ON true
         ),
         agg AS (SELECT p.anc, {combine} FROM parts p GROUP BY p.anc)
         SELECT g.id, {out}
         FROM targets t JOIN groups g ON g.id = t.id LEFT JOIN agg a ON a.anc = t.id
         ORDER BY g.id"
    )
}
