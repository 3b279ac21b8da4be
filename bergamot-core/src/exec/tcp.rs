//! The `tcp` engine: can a TCP connection be opened, and how fast.

use super::{
    effective_timeout, new_result, param_error, param_str, param_u64, time_perfdata, time_status,
    Executor, DEFAULT_TIMEOUT,
};
use crate::model::{CheckResult, Status};
use crate::queue::ExecuteCheck;
use async_trait::async_trait;
use chrono::Utc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Opens a TCP connection and closes it again.
///
/// Parameters: `host`, `port` (required), `warn_ms` / `crit_ms` (optional
/// connect-time thresholds). Perfdata `time=<connect time>ms`. A refused or
/// failed connection is CRITICAL, naming the error; no connection within the
/// timeout is TIMEOUT.
#[derive(Debug, Clone)]
pub struct TcpExecutor {
    default_timeout: Duration,
}

impl Default for TcpExecutor {
    fn default() -> Self {
        TcpExecutor::new()
    }
}

struct Params<'a> {
    host: &'a str,
    port: u16,
    warn_ms: Option<u64>,
    crit_ms: Option<u64>,
}

impl TcpExecutor {
    /// An executor with a 30 s default timeout.
    pub fn new() -> Self {
        TcpExecutor {
            default_timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the timeout used for executes that carry none (zero).
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    fn params(execute: &ExecuteCheck) -> Result<Params<'_>, String> {
        let host = param_str(execute, "host")?
            .filter(|h| !h.is_empty())
            .ok_or("parameter \"host\" is missing")?;
        let port = param_u64(execute, "port")?.ok_or("parameter \"port\" is missing")?;
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("parameter \"port\" must be 1-65535, got {port}"))?;
        Ok(Params {
            host,
            port,
            warn_ms: param_u64(execute, "warn_ms")?,
            crit_ms: param_u64(execute, "crit_ms")?,
        })
    }
}

#[async_trait]
impl Executor for TcpExecutor {
    fn engine(&self) -> &str {
        "tcp"
    }

    async fn execute(&self, execute: &ExecuteCheck) -> CheckResult {
        let executed_at = Utc::now();
        let started = tokio::time::Instant::now();
        let p = match Self::params(execute) {
            Ok(p) => p,
            Err(e) => return param_error(execute, "tcp", e),
        };
        let timeout = effective_timeout(execute, self.default_timeout);
        let target = format!("{}:{}", p.host, p.port);
        match tokio::time::timeout(timeout, TcpStream::connect((p.host, p.port))).await {
            Err(_) => new_result(
                execute,
                Status::Timeout,
                format!(
                    "TCP {target}: no connection after {}s",
                    timeout.as_secs_f64()
                ),
                executed_at,
                started,
            ),
            Ok(Err(e)) => new_result(
                execute,
                Status::Critical,
                format!("TCP {target}: cannot connect: {e}"),
                executed_at,
                started,
            ),
            Ok(Ok(stream)) => {
                let elapsed = started.elapsed();
                drop(stream);
                let status = time_status(elapsed, p.warn_ms, p.crit_ms);
                let mut r = new_result(
                    execute,
                    status,
                    format!(
                        "TCP {status} - {target} connected in {:.3} ms",
                        elapsed.as_secs_f64() * 1000.0
                    ),
                    executed_at,
                    started,
                );
                r.perfdata = vec![time_perfdata("time", elapsed, p.warn_ms, p.crit_ms)].into();
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::tests::assert_bad_params;
    use serde_json::json;

    #[tokio::test]
    async fn bad_params_are_errors_naming_them() {
        let cases = [
            (json!({"port": 80}), "\"host\""),
            (json!({"host": "", "port": 80}), "\"host\""),
            (json!({"host": "h"}), "\"port\""),
            (json!({"host": "h", "port": 70000}), "\"port\""),
            (json!({"host": "h", "port": 0}), "\"port\""),
            (json!({"host": "h", "port": "x"}), "\"port\""),
            (
                json!({"host": "h", "port": 1, "warn_ms": "soon"}),
                "\"warn_ms\"",
            ),
        ];
        assert_bad_params(&TcpExecutor::new(), "tcp", &cases).await;
    }
}
