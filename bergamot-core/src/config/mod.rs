//! TOML configuration: one file or a directory, templates, validation with
//! file:line errors.
//!
//! A configuration is one TOML file, or a directory whose `*.toml` files
//! (recursively, sorted by path) together form one configuration: a host in
//! one file may extend a template of another. Loading resolves templates,
//! substitutes parameters into argument vectors, derives stable ids and
//! validates everything, producing a [`Model`] (plus the daemon's `[web]`
//! section). The language is described in `docs/configuration.md`.
//!
//! Every problem found is reported, not just the first, each naming its file,
//! line and field ([`Error::Config`]). A TOML syntax error or an unknown field
//! stops the reading of that one file (the TOML parser cannot go on), but the
//! other files are still read and checked.
//!
//! ```
//! use bergamot_core::config::Config;
//! use bergamot_core::model::CheckId;
//!
//! let config = Config::from_str_named(
//!     "demo.toml",
//!     r##"
//!     [[command]]
//!     name = "ping"
//!     argv = ["/usr/lib/nagios/plugins/check_ping", "-H", "#{host.address}"]
//!
//!     [[host]]
//!     name = "web1"
//!     address = "10.0.0.5"
//!     check = { command = "ping" }
//!     "##,
//! )?;
//! let check = &config.model.checks[0];
//! assert_eq!(check.id, CheckId::host("default", "web1"));
//! assert_eq!(
//!     check.params["command"],
//!     serde_json::json!(["/usr/lib/nagios/plugins/check_ping", "-H", "10.0.0.5"])
//! );
//! # Ok::<(), bergamot_core::Error>(())
//! ```

pub(crate) mod duration;
mod graph;
mod notify;
mod raw;
mod resolve;
mod subst;
mod web;

pub use web::{origin_of, Role, WebConfig, WebLimits, WebToken, WebUser};

use crate::error::{ConfigErrors, ConfigProblem, Error, Result};
use crate::model::Model;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The site name used when the configuration sets none.
pub(crate) const DEFAULT_SITE: &str = "default";

/// The worker pool used when the configuration names none.
pub(crate) const DEFAULT_POOL: &str = "default";

/// How to load a configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// The address the web node listens on, overriding `[web] listen` (the
    /// daemon's `--listen`): `web.listen` and `#{listen.host}`,
    /// `#{listen.port}`, `#{listen.url}` in parameters take it.
    pub listen: Option<std::net::SocketAddr>,
}

impl LoadOptions {
    /// Options with this listen address (`None`: `[web] listen`).
    pub fn with_listen(listen: Option<std::net::SocketAddr>) -> Self {
        LoadOptions { listen }
    }
}

/// A loaded, validated configuration.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The resolved model: every check, group and location.
    pub model: Model,
    /// The `[web]` section (defaults when absent).
    pub web: WebConfig,
    /// Contacts, teams, channels, time periods and, per check, who is
    /// notified of what (see docs/notifications.md).
    pub notify: crate::notify::NotifyModel,
    /// The files the configuration was read from, in the order they were read.
    pub files: Vec<String>,
}

impl Config {
    /// Loads a configuration from a file, or from every `*.toml` file under a
    /// directory (recursively, sorted by path), which together form one
    /// configuration.
    ///
    /// Errors: [`Error::Io`] when a file cannot be read, [`Error::Config`]
    /// listing every problem found otherwise.
    pub fn load(path: &Path) -> Result<Config> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// [`Config::load`] with options (the daemon's `--listen`).
    pub fn load_with(path: &Path, options: &LoadOptions) -> Result<Config> {
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            context: format!("reading configuration {}", path.display()),
            source,
        })?;
        let problem = |file: &Path, message: String| {
            Error::Config(ConfigErrors(vec![ConfigProblem {
                file: file.display().to_string(),
                line: 0,
                field: String::new(),
                message,
            }]))
        };
        let files = if meta.is_dir() {
            let mut walk = Walk::default();
            walk.collect(path)?;
            if !walk.problems.is_empty() {
                return Err(Error::Config(ConfigErrors(walk.problems)));
            }
            let mut files = walk.files;
            files.sort();
            if files.is_empty() {
                return Err(problem(
                    path,
                    "the directory contains no *.toml file".to_string(),
                ));
            }
            files
        } else if meta.is_file() {
            vec![path.to_path_buf()]
        } else {
            return Err(problem(path, not_regular(&meta)));
        };
        let mut sources = Vec::with_capacity(files.len());
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
                context: format!("reading configuration {}", file.display()),
                source,
            })?;
            sources.push((file.display().to_string(), text));
        }
        Self::from_sources_with(&sources, options)
    }

    /// Loads a configuration from one TOML text; `file_name` is used in errors.
    pub fn from_str_named(file_name: &str, text: &str) -> Result<Config> {
        Self::from_sources(&[(file_name, text)])
    }

    /// Loads a configuration made of several TOML texts, `(file name, text)`,
    /// as if they were the files of one directory, in the order given.
    pub fn from_sources<N: AsRef<str>, T: AsRef<str> + Sync>(sources: &[(N, T)]) -> Result<Config> {
        Self::from_sources_with(sources, &LoadOptions::default())
    }

    /// [`Config::from_sources`] with options.
    pub fn from_sources_with<N: AsRef<str>, T: AsRef<str> + Sync>(
        sources: &[(N, T)],
        options: &LoadOptions,
    ) -> Result<Config> {
        let mut problems = Problems::default();
        let mut files = Vec::with_capacity(sources.len());
        for (name, text) in sources {
            problems.add_file(name.as_ref(), text.as_ref());
            files.push(name.as_ref().to_string());
        }
        let started = std::time::Instant::now();
        let mut defs = resolve::Defs::default();
        let mut parse_failed = false;
        let texts: Vec<&str> = sources.iter().map(|(_, t)| t.as_ref()).collect();
        for (i, (text, parsed)) in texts.iter().zip(parse_all(&texts)).enumerate() {
            let file = u32::try_from(i).unwrap_or(u32::MAX);
            match parsed {
                Ok(raw) => defs.add_file(file, raw, &mut problems),
                Err(e) => {
                    parse_failed = true;
                    problems.toml_error(file, text, &e);
                }
            }
        }
        if parse_failed {
            // References into an unreadable file would be reported as unknown:
            // stop at what was read.
            return Err(problems.into_error());
        }
        let parsed = started.elapsed();
        let (model, web, notify) = resolve::build(&defs, &mut problems, options.listen);
        tracing::debug!(
            files = files.len(),
            checks = model.checks.len(),
            parse_ms = parsed.as_millis() as u64,
            build_ms = (started.elapsed() - parsed).as_millis() as u64,
            "configuration loaded"
        );
        if problems.is_empty() {
            Ok(Config {
                model,
                web,
                notify,
                files,
            })
        } else {
            Err(problems.into_error())
        }
    }
}

type Parsed = std::result::Result<raw::RawFile, toml::de::Error>;

/// Parses every file, on several threads when there is enough to parse.
fn parse_all(texts: &[&str]) -> Vec<Parsed> {
    let total: usize = texts.iter().map(|t| t.len()).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(texts.len())
        .min(8);
    if threads <= 1 || total < (1 << 20) {
        return texts.iter().map(|t| toml::from_str(t)).collect();
    }
    // Files go round-robin to threads; results are put back in file order.
    let mut out: Vec<Option<Parsed>> = texts.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                scope.spawn(move || {
                    texts
                        .iter()
                        .enumerate()
                        .skip(k)
                        .step_by(threads)
                        .map(|(i, t)| (i, toml::from_str(t)))
                        .collect::<Vec<(usize, Parsed)>>()
                })
            })
            .collect();
        for handle in handles {
            if let Ok(results) = handle.join() {
                for (i, r) in results {
                    out[i] = Some(r);
                }
            }
        }
    });
    // A file whose thread failed (it cannot: parsing does not panic) is parsed here.
    out.into_iter()
        .zip(texts)
        .map(|(r, t)| r.unwrap_or_else(|| toml::from_str(t)))
        .collect()
}

/// What a non-regular file is, for the problem that names it.
fn not_regular(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    };
    format!("{kind}, not a regular file (a configuration file must be one; it was not opened)")
}

/// The walk of a configuration directory: the `*.toml` files found, and the
/// problems (non-regular `*.toml` entries, symlink loops), which are never
/// opened, so a FIFO cannot hang the loader and a loop cannot recurse.
#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    problems: Vec<ConfigProblem>,
    /// (device, inode) of the directories on the current path.
    stack: Vec<(u64, u64)>,
}

impl Walk {
    fn problem(&mut self, path: &Path, message: String) {
        self.problems.push(ConfigProblem {
            file: path.display().to_string(),
            line: 0,
            field: String::new(),
            message,
        });
    }

    fn collect(&mut self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let io = |source| Error::Io {
            context: format!("reading configuration directory {}", dir.display()),
            source,
        };
        let meta = std::fs::metadata(dir).map_err(io)?;
        let key = (meta.dev(), meta.ino());
        if self.stack.contains(&key) {
            self.problem(
                dir,
                "symlink loop: this directory leads back to one above it (not read again)"
                    .to_string(),
            );
            return Ok(());
        }
        self.stack.push(key);
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<std::io::Result<_>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let path = entry.path();
            let kind = entry.file_type().map_err(io)?;
            let toml = path.extension().is_some_and(|e| e == "toml");
            // Follow symlinks: a config directory made of links is common.
            let meta = if kind.is_symlink() {
                match std::fs::metadata(&path) {
                    Ok(m) => m,
                    Err(e) => {
                        if toml || e.raw_os_error() == Some(libc::ELOOP) {
                            self.problem(&path, format!("cannot follow symlink: {e}"));
                        }
                        continue;
                    }
                }
            } else {
                match entry.metadata() {
                    Ok(m) => m,
                    Err(e) => return Err(io(e)),
                }
            };
            if meta.is_dir() {
                self.collect(&path)?;
            } else if toml {
                if meta.is_file() {
                    self.files.push(path);
                } else {
                    let message = not_regular(&meta);
                    self.problem(&path, message);
                }
            }
        }
        self.stack.pop();
        Ok(())
    }
}

/// Where something was written: file index and 1-based line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Origin {
    /// Index into the files of the configuration.
    pub file: u32,
    /// 1-based line.
    pub line: u32,
}

/// The problems found so far, and what is needed to place them.
#[derive(Default)]
pub(crate) struct Problems {
    files: Vec<String>,
    /// Per file, the byte offset where each line starts.
    line_starts: Vec<Vec<usize>>,
    list: Vec<(u32, ConfigProblem)>,
    seen: HashSet<(u32, usize, String, String)>,
}

impl Problems {
    fn add_file(&mut self, name: &str, text: &str) {
        self.files.push(name.to_string());
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        self.line_starts.push(starts);
    }

    /// The origin of a byte offset in a file.
    pub(crate) fn origin(&self, file: u32, offset: usize) -> Origin {
        let line = self
            .line_starts
            .get(file as usize)
            .map(|s| s.partition_point(|&start| start <= offset))
            .unwrap_or(0);
        Origin {
            file,
            line: u32::try_from(line).unwrap_or(u32::MAX),
        }
    }

    /// Records a problem (once: an identical problem is not repeated).
    pub(crate) fn at(&mut self, at: Origin, field: impl Into<String>, message: impl Into<String>) {
        let field = field.into();
        let message = message.into();
        let key = (at.file, at.line as usize, field, message);
        if self.seen.contains(&key) {
            return;
        }
        self.seen.insert(key.clone());
        let (_, line, field, message) = key;
        self.list.push((
            at.file,
            ConfigProblem {
                file: self
                    .files
                    .get(at.file as usize)
                    .cloned()
                    .unwrap_or_default(),
                line,
                field,
                message,
            },
        ));
    }

    /// The name of file `file`.
    pub(crate) fn file_name(&self, file: u32) -> String {
        self.files.get(file as usize).cloned().unwrap_or_default()
    }

    /// `file:line` of an origin, for messages that point elsewhere.
    pub(crate) fn describe(&self, at: Origin) -> String {
        format!(
            "{}:{}",
            self.files
                .get(at.file as usize)
                .map(String::as_str)
                .unwrap_or("?"),
            at.line
        )
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn toml_error(&mut self, file: u32, text: &str, e: &toml::de::Error) {
        let at = match e.span() {
            Some(span) => self.origin(file, span.start),
            None => Origin { file, line: 0 },
        };
        let field = toml_error_field(text, at.line, e.message());
        self.at(at, field, e.message().trim().to_string());
    }

    fn into_error(mut self) -> Error {
        self.list.sort_by_key(|(file, p)| (*file, p.line));
        Error::Config(ConfigErrors(
            self.list.into_iter().map(|(_, p)| p).collect(),
        ))
    }
}

/// The dotted field a TOML deserialization error is about: the table header
/// above the error line plus the key named in the message
/// (`host.service.evry` for an unknown `evry` in a `[[host.service]]`).
fn toml_error_field(text: &str, line: u32, message: &str) -> String {
    let key = ["unknown field `", "missing field `", "duplicate key `"]
        .iter()
        .find_map(|prefix| {
            let rest = &message[message.find(prefix)? + prefix.len()..];
            Some(&rest[..rest.find('`')?])
        });
    // A syntax or type error names no key: take the key written on the
    // error line (`address = "10.0.0.5` gives `address`), if any.
    let line_text = text
        .lines()
        .nth((line as usize).saturating_sub(1))
        .unwrap_or("")
        .trim();
    let key = key.or_else(|| {
        if line_text.starts_with('[') || line_text.starts_with('#') {
            return None;
        }
        let k = line_text
            .split_once('=')?
            .0
            .trim()
            .trim_matches(|c| c == '"' || c == '\'');
        (!k.is_empty() && !k.contains(char::is_whitespace)).then_some(k)
    });
    let Some(key) = key else {
        // On a table header, or no key at all: the header, else "toml".
        let header = line_text
            .strip_prefix('[')
            .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_string());
        return header
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "toml".to_string());
    };
    // A missing field is reported at the table's header; an unknown or
    // duplicate key at the key itself, which may be a header (`[[host.x]]`).
    let upto = if message.contains("missing field `") {
        line as usize
    } else {
        (line as usize).saturating_sub(1)
    };
    let header = text
        .lines()
        .take(upto)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            let inner = l.strip_prefix("[[").and_then(|l| l.split("]]").next());
            let inner = inner.or_else(|| l.strip_prefix('[').and_then(|l| l.split(']').next()));
            inner.map(|h| h.trim().to_string())
        });
    match header {
        Some(h) if !h.is_empty() => format!("{h}.{key}"),
        _ => key.to_string(),
    }
}
