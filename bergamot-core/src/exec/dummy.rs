//! The `dummy` engine: fixed or cycling statuses, for demos and load tests.

use super::{new_result, param_error, param_str, Executor};
use crate::model::{CheckId, CheckResult, Status};
use crate::queue::ExecuteCheck;
use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;
use std::collections::HashMap;

/// Answers without doing anything.
///
/// Parameters:
/// - `status`: the status of every result (e.g. `"OK"`), or
/// - `statuses`: a list of statuses cycled through: each execution of the
///   same check takes the next one (a counter per check);
/// - `output` (optional): the output, default `"dummy <STATUS>"`.
///
/// With neither `status` nor `statuses` the result is OK. Cheap enough for
/// load tests (no allocation beyond the result, one short lock for cycles).
#[derive(Debug, Default)]
pub(crate) struct DummyExecutor {
    /// Next position in `statuses`, per check.
    cycles: Mutex<HashMap<CheckId, usize>>,
}

impl DummyExecutor {
    /// A dummy executor.
    pub(crate) fn new() -> Self {
        DummyExecutor::default()
    }

    fn status_of(&self, execute: &ExecuteCheck) -> Result<Status, String> {
        if let Some(list) = execute.params.get("statuses") {
            let list = list.as_array().filter(|l| !l.is_empty()).ok_or_else(|| {
                format!("parameter \"statuses\" must be a non-empty list of statuses, got {list}")
            })?;
            let position = {
                let mut cycles = self.cycles.lock();
                let next = cycles.entry(execute.check_id).or_insert(0);
                let position = *next % list.len();
                *next = (position + 1) % list.len();
                position
            };
            let item = &list[position];
            let name = item.as_str().ok_or_else(|| {
                format!("parameter \"statuses\" item {position} must be a status name, got {item}")
            })?;
            return name
                .parse()
                .map_err(|e| format!("parameter \"statuses\" item {position}: {e}"));
        }
        match param_str(execute, "status")? {
            Some(s) => s.parse().map_err(|e| format!("parameter \"status\": {e}")),
            None => Ok(Status::Ok),
        }
    }
}

#[async_trait]
impl Executor for DummyExecutor {
    fn engine(&self) -> &str {
        "dummy"
    }

    async fn execute(&self, execute: &ExecuteCheck) -> CheckResult {
        let executed_at = Utc::now();
        let started = tokio::time::Instant::now();
        let status = match self.status_of(execute) {
            Ok(s) => s,
            Err(e) => return param_error(execute, "dummy", e),
        };
        let output = match param_str(execute, "output") {
            Ok(Some(o)) => o.to_string(),
            Ok(None) => format!("dummy {status}"),
            Err(e) => return param_error(execute, "dummy", e),
        };
        new_result(execute, status, output, executed_at, started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::tests::execute;
    use serde_json::json;

    #[tokio::test]
    async fn fixed_status_and_output() {
        let d = DummyExecutor::new();
        let e = execute("dummy", json!({"status": "warning", "output": "hi"}));
        let r = d.execute(&e).await;
        assert_eq!((r.status, &*r.output), (Status::Warning, "hi"));
        assert_eq!(r.check_id, e.check_id);
        let r2 = d.execute(&e).await;
        assert_ne!(r.id, r2.id, "each result gets a fresh id");
        let r = d.execute(&execute("dummy", json!({}))).await;
        assert_eq!((r.status, &*r.output), (Status::Ok, "dummy OK"));
    }

    #[tokio::test]
    async fn statuses_cycle_per_check() {
        let d = DummyExecutor::new();
        let a = execute("dummy", json!({"statuses": ["OK", "CRITICAL", "WARNING"]}));
        let b = execute("dummy", json!({"statuses": ["OK", "CRITICAL", "WARNING"]}));
        let mut seen_a = Vec::new();
        for _ in 0..4 {
            seen_a.push(d.execute(&a).await.status);
        }
        let first_b = d.execute(&b).await.status;
        assert_eq!(
            seen_a,
            vec![Status::Ok, Status::Critical, Status::Warning, Status::Ok]
        );
        assert_eq!(first_b, Status::Ok, "another check has its own counter");
    }

    #[tokio::test]
    async fn bad_params_are_errors_naming_them() {
        let d = DummyExecutor::new();
        for (params, needle) in [
            (json!({"status": "GREEN"}), "\"status\""),
            (json!({"status": 3}), "\"status\""),
            (json!({"statuses": []}), "\"statuses\""),
            (json!({"statuses": "OK"}), "\"statuses\""),
            (json!({"statuses": ["OK", 1]}), "\"statuses\""),
            (json!({"output": 1}), "\"output\""),
        ] {
            let e = execute("dummy", params.clone());
            // Cycle twice so the bad list item is reached.
            let r1 = d.execute(&e).await;
            let r2 = d.execute(&e).await;
            let r = if r1.status == Status::Error { r1 } else { r2 };
            assert_eq!(r.status, Status::Error, "{params}");
            assert!(
                r.output.starts_with("dummy: ") && r.output.contains(needle),
                "{params}: {}",
                r.output
            );
        }
    }
}
