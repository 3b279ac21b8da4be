//! `GET /api/checks`: search, filters and cursor pagination over every check.
//!
//! Model filters (`q`, `host`, `group`) run over the web node's model index;
//! state filters (`status`, `acknowledged`, `downtime`) are one
//! [`Store::matching_checks`](bergamot_core::store::Store::matching_checks)
//! call (PostgreSQL answers it from hot columns); only the page's states are
//! read in full. Results come by display name, then id; the cursor is the
//! last item's (display name, id), so pages stay right when checks change or
//! the model reloads between requests.

use super::{ok_json, query_usize, view, ApiError, Creds, Query, Resp, Role, WebContext};
use base64::Engine as _;
use bergamot_core::model::{CheckId, Status};
use bergamot_core::state::CheckState;
use bergamot_core::store::StateFilter;
use std::collections::HashMap;
use std::sync::Arc;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn query_bool(q: &Query, name: &str) -> Result<Option<bool>, ApiError> {
    match q.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" => Ok(Some(true)),
            "false" | "0" | "no" => Ok(Some(false)),
            _ => Err(ApiError::bad_request(
                name,
                format!("{v:?} is not true or false"),
            )),
        },
    }
}

fn encode_cursor(display_name: &str, id: CheckId) -> String {
    B64.encode(format!("{id} {display_name}"))
}

fn decode_cursor(raw: &str) -> Result<(String, CheckId), ApiError> {
    let bad = || ApiError::bad_request("cursor", format!("{raw:?} is not a cursor of this API"));
    let text = String::from_utf8(B64.decode(raw).map_err(|_| bad())?).map_err(|_| bad())?;
    let (id, name) = text.split_once(' ').ok_or_else(bad)?;
    Ok((name.to_string(), id.parse().map_err(|_| bad())?))
}

/// The state filter of the request (`status`, `acknowledged`, `downtime`).
fn state_filter(q: &Query) -> Result<StateFilter, ApiError> {
    let statuses = match q.get("status").map(|s| s.trim()) {
        Some(s) if !s.is_empty() => Some(
            s.split(',')
                .map(|x| x.trim().to_ascii_uppercase().parse::<Status>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::bad_request("status", e.to_string()))?,
        ),
        _ => None,
    };
    Ok(StateFilter {
        statuses,
        acknowledged: query_bool(q, "acknowledged")?,
        in_downtime: query_bool(q, "downtime")?,
    })
}

pub(super) async fn list_checks(ctx: Arc<WebContext>, c: Creds) -> Result<Resp, ApiError> {
    c.principal(&ctx, Role::Viewer).await?;
    let q = &c.query;
    let limit = query_usize(q, "limit", 100, 10_000)?;
    let offset = query_usize(q, "offset", 0, usize::MAX)?;
    let cursor = match q.get("cursor").filter(|s| !s.is_empty()) {
        Some(_) if offset > 0 => {
            return Err(ApiError::bad_request(
                "cursor",
                "give cursor or offset, not both",
            ))
        }
        Some(raw) => Some(decode_cursor(raw)?),
        None => None,
    };
    let filter = state_filter(q)?;
    let idx = ctx.index();
    let group =
        match q.get("group").filter(|s| !s.is_empty()) {
            Some(g) => Some(idx.find_group(g).map(|g| g.id).ok_or_else(|| {
                ApiError::not_found(format!("group {g:?} not found"), Some("group"))
            })?),
            None => None,
        };
    let host = q
        .get("host")
        .filter(|s| !s.is_empty())
        .map(|h| h.trim().to_string());
    // `name` is the older spelling of `q`.
    let text = q
        .get("q")
        .or_else(|| q.get("name"))
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty());
    let checks = &idx.model.checks;
    // Per model position: whether the state filter passed / the check is in
    // the group. Built from the (usually short) lists of matches, so the
    // scan below does no hashing.
    let mark = |positions: &mut dyn Iterator<Item = usize>| {
        let mut v = vec![false; checks.len()];
        for p in positions {
            v[p] = true;
        }
        v
    };
    let by_state: Option<Vec<bool>> = if filter.is_empty() {
        None
    } else {
        let ids = ctx.store.matching_checks(&filter).await?;
        Some(mark(
            &mut ids.iter().filter_map(|id| idx.check_position(*id)),
        ))
    };
    let by_group: Option<Vec<bool>> = group.map(|g| mark(&mut idx.positions_under(g).into_iter()));

    let order = idx.search_order();
    let start = match &cursor {
        None => 0,
        Some((name, id)) => order.partition_point(|&p| {
            (idx.display_name_at(p), idx.model.checks[p].id) <= (name.as_str(), *id)
        }),
    };
    let mut total = 0usize;
    let mut page: Vec<usize> = Vec::with_capacity(limit.min(1024));
    let mut skipped = 0usize;
    let mut more = false;
    // `total` counts every match; the page starts at the cursor.
    for (i, &p) in order.iter().enumerate() {
        let ch = &checks[p];
        if by_state.as_ref().is_some_and(|v| !v[p])
            || by_group.as_ref().is_some_and(|v| !v[p])
            || host
                .as_ref()
                .is_some_and(|h| !ch.host.eq_ignore_ascii_case(h))
            || text
                .as_ref()
                .is_some_and(|t| !idx.search_text_at(p).contains(t.as_str()))
        {
            continue;
        }
        total += 1;
        if i < start {
            continue;
        }
        if skipped < offset {
            skipped += 1;
            continue;
        }
        if page.len() < limit {
            page.push(p);
        } else {
            more = true;
        }
    }
    let ids: Vec<CheckId> = page.iter().map(|&p| checks[p].id).collect();
    let states: HashMap<CheckId, CheckState> =
        ctx.store.states_of(&ids).await?.into_iter().collect();
    let items: Vec<_> = page
        .iter()
        .filter_map(|&p| states.get(&checks[p].id).map(|s| view(&checks[p], s)))
        .collect();
    let next_cursor = match page.last() {
        Some(&p) if more => Some(encode_cursor(idx.display_name_at(p), checks[p].id)),
        _ => None,
    };
    ok_json(serde_json::json!({
        "total": total, "offset": offset, "limit": limit,
        "items": items, "next_cursor": next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let id = CheckId::service("s", "web 1", "http /x");
        let c = encode_cursor("web 1/http /x", id);
        assert_eq!(
            decode_cursor(&c).map_err(|e| e.error),
            Ok(("web 1/http /x".to_string(), id))
        );
        for bad in ["", "!!", &B64.encode("no-space"), &B64.encode("nope name")] {
            let e = decode_cursor(bad).expect_err(bad);
            assert_eq!(e.field.as_deref(), Some("cursor"), "{bad}");
        }
    }
}
