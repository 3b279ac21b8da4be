//! What a configuration needs at run time beyond what the loader checks:
//! every engine served by an executor of this binary, every Nagios plugin
//! present and executable. `check-config` fails on these problems; the
//! daemon logs them at start and at every reload (a split deployment's
//! scheduler may well name engines only its workers serve).

use bergamot_core::config::Config;
use bergamot_core::exec::Executors;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One run-time problem: what is wrong, and the checks it hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuntimeProblem {
    /// What is wrong (names the engine or plugin).
    pub message: String,
    /// Display names of the checks affected (the first few).
    pub checks: Vec<String>,
    /// How many checks are affected in all.
    pub count: usize,
}

impl std::fmt::Display for RuntimeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (check {}", self.message, self.checks.join(", "))?;
        if self.count > self.checks.len() {
            write!(f, " and {} more", self.count - self.checks.len())?;
        }
        f.write_str(")")
    }
}

/// How many check names a problem lists.
const NAMED: usize = 3;

/// The run-time problems of `config` for a daemon with `executors`, one per
/// distinct cause, in a stable order.
pub(crate) fn runtime_problems(config: &Config, executors: &Executors) -> Vec<RuntimeProblem> {
    let mut by_cause: BTreeMap<String, RuntimeProblem> = BTreeMap::new();
    let mut plugins: BTreeMap<String, Result<(), String>> = BTreeMap::new();
    let path_var = std::env::var_os("PATH");
    for check in config.model.checks.iter().filter(|c| c.is_scheduled()) {
        let cause = if executors.get(&check.engine).is_none() {
            Some(format!(
                "unknown engine {:?}: no executor serves it (engines: {})",
                check.engine,
                executors.engines().join(", ")
            ))
        } else if bergamot_core::exec::engine::runs_command(&check.engine) {
            let plugin = check
                .params
                .get("command")
                .and_then(|v| v.as_array())
                .and_then(|a| a.first())
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            plugins
                .entry(plugin.to_string())
                .or_insert_with(|| plugin_problem(plugin, path_var.as_deref()))
                .clone()
                .err()
        } else {
            None
        };
        if let Some(message) = cause {
            let p = by_cause
                .entry(message.clone())
                .or_insert_with(|| RuntimeProblem {
                    message,
                    checks: Vec::new(),
                    count: 0,
                });
            p.count += 1;
            if p.checks.len() < NAMED {
                p.checks.push(check.display_name());
            }
        }
    }
    by_cause.into_values().collect()
}

/// Why `plugin` cannot be run, if it cannot: missing, not a file, not
/// executable. A bare name is looked up in `PATH` as the executor does.
fn plugin_problem(plugin: &str, path_var: Option<&std::ffi::OsStr>) -> Result<(), String> {
    if plugin.is_empty() {
        return Err("a nagios command has an empty plugin name".to_string());
    }
    if !plugin.contains('/') {
        let dirs: Vec<PathBuf> = path_var.map_or_else(
            || std::env::split_paths("/usr/local/bin:/usr/bin:/bin").collect(),
            |p| std::env::split_paths(p).collect(),
        );
        return if dirs.iter().any(|d| executable(&d.join(plugin)).is_ok()) {
            Ok(())
        } else {
            Err(format!("plugin {plugin:?} is not found in PATH"))
        };
    }
    executable(Path::new(plugin)).map_err(|why| format!("plugin {plugin} {why}"))
}

fn executable(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_string(),
        _ => format!("cannot be read: {e}"),
    })?;
    if !meta.is_file() {
        return Err("is not a regular file".to_string());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("is not executable (no x permission)".to_string());
    }
    Ok(())
}
