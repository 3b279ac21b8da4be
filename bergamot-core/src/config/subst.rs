//! Parameter substitution: `#{host.address}`, `#{host.name}`,
//! `#{service.name}`, `#{listen.host}`, `#{listen.port}`, `#{listen.url}`
//! and `#{<param>}` in argv elements, engine parameters and `env`.
//!
//! Substitution works on one string at a time (one argv element, one
//! parameter value): nothing is ever passed through a shell, so a value with
//! spaces or quotes stays one argument.

use super::Origin;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A parameter value as configured, with where it was written.
#[derive(Debug)]
pub(super) struct Param {
    /// The value.
    pub value: toml::Value,
    /// Where.
    pub at: Origin,
    /// Its dotted field path, for errors.
    pub field: String,
}

/// Parameters by name.
pub(super) type Params = BTreeMap<String, Param>;

/// Parameter references may nest (a parameter's value may reference another)
/// this deep; deeper is taken as a reference cycle.
const MAX_DEPTH: u8 = 8;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Problem {
    Unknown,
    NotScalar,
    TooDeep,
    Unterminated,
}

/// A substitution failure: which reference, and the parameter whose value
/// contained it (`None`: the string being substituted itself).
#[derive(Debug)]
pub(super) struct SubstError<'a> {
    pub var: String,
    pub problem: Problem,
    pub inside: Option<&'a Param>,
}

impl SubstError<'_> {
    /// A message for users.
    pub(super) fn message(&self) -> String {
        match self.problem {
            Problem::Unknown => format!(
                "unknown parameter `#{{{}}}`: not host.name, host.address, service.name, \
                 listen.host, listen.port, listen.url, nor a param of the check, its host or its command",
                self.var
            ),
            Problem::NotScalar => format!(
                "parameter `#{{{}}}` is an array or table and cannot be put into a string",
                self.var
            ),
            Problem::TooDeep => format!(
                "parameter `#{{{}}}` references itself (directly or through other parameters)",
                self.var
            ),
            Problem::Unterminated => {
                "unterminated `#{`: expected `}` (write `##{` for a literal `#{`)".to_string()
            }
        }
    }
}

/// The web listen address as `#{listen.host}`, `#{listen.port}` and
/// `#{listen.url}` (the address the daemon serves on, `--listen` or `[web]
/// listen`): an unspecified address (`0.0.0.0`, `::`) becomes the loopback
/// one, so a check of the daemon itself can connect to it.
#[derive(Debug, Clone)]
pub(super) struct Listen {
    host: String,
    port: String,
    url: String,
}

impl Listen {
    /// The values for `addr`.
    pub(super) fn of(addr: std::net::SocketAddr) -> Self {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let ip = match addr.ip() {
            IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let url = match ip {
            IpAddr::V4(v) => format!("http://{v}:{}", addr.port()),
            IpAddr::V6(v) => format!("http://[{v}]:{}", addr.port()),
        };
        Listen {
            host: ip.to_string(),
            port: addr.port().to_string(),
            url,
        }
    }
}

impl Listen {
    /// `text` with `#{listen.host}`, `#{listen.port}` and `#{listen.url}` replaced.
    pub(super) fn expand(&self, text: &str) -> String {
        text.replace("#{listen.host}", &self.host)
            .replace("#{listen.port}", &self.port)
            .replace("#{listen.url}", &self.url)
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen::of(super::web::WebConfig::default().listen)
    }
}

/// What the references of one check resolve against.
pub(super) struct Scope<'a> {
    pub host_name: &'a str,
    pub host_address: &'a str,
    pub service_name: &'a str,
    /// The web listen address.
    pub listen: &'a Listen,
    /// Parameter tables, the first that has a name wins.
    pub layers: &'a [&'a Params],
}

impl<'a> Scope<'a> {
    fn builtin(&self, var: &str) -> Option<&'a str> {
        match var {
            "host.name" => Some(self.host_name),
            "host.address" => Some(self.host_address),
            "service.name" => Some(self.service_name),
            "listen.host" => Some(&self.listen.host),
            "listen.port" => Some(&self.listen.port),
            "listen.url" => Some(&self.listen.url),
            _ => None,
        }
    }

    fn param(&self, var: &str) -> Option<&'a Param> {
        self.layers.iter().find_map(|l| l.get(var))
    }

    /// Substitutes every reference in `s`.
    pub(super) fn string(&self, s: &str) -> Result<String, SubstError<'a>> {
        self.string_at(s, 0)
    }

    fn string_at(&self, s: &str, depth: u8) -> Result<String, SubstError<'a>> {
        if !s.contains("#{") {
            return Ok(s.to_owned());
        }
        let mut out = String::with_capacity(s.len() + 16);
        let mut rest = s;
        while let Some(i) = rest.find('#') {
            out.push_str(&rest[..i]);
            let after = &rest[i..];
            if let Some(tail) = after.strip_prefix("##{") {
                out.push_str("#{");
                rest = tail;
            } else if let Some(body) = after.strip_prefix("#{") {
                let end = body.find('}').ok_or_else(|| SubstError {
                    var: String::new(),
                    problem: Problem::Unterminated,
                    inside: None,
                })?;
                self.append_var(body[..end].trim(), &mut out, depth)?;
                rest = &body[end + 1..];
            } else {
                out.push('#');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, var: &str, depth: u8) -> Result<&'a Param, SubstError<'a>> {
        let err = |problem| SubstError {
            var: var.to_string(),
            problem,
            inside: None,
        };
        let p = self.param(var).ok_or_else(|| err(Problem::Unknown))?;
        if depth >= MAX_DEPTH {
            return Err(err(Problem::TooDeep));
        }
        Ok(p)
    }

    fn append_var(&self, var: &str, out: &mut String, depth: u8) -> Result<(), SubstError<'a>> {
        if let Some(b) = self.builtin(var) {
            out.push_str(b);
            return Ok(());
        }
        let p = self.lookup(var, depth)?;
        let nested = |e: SubstError<'a>| SubstError {
            inside: e.inside.or(Some(p)),
            ..e
        };
        // Writing to a String cannot fail.
        match &p.value {
            toml::Value::String(s) => out.push_str(&self.string_at(s, depth + 1).map_err(nested)?),
            toml::Value::Integer(i) => {
                write!(out, "{i}").ok();
            }
            toml::Value::Float(f) => {
                write!(out, "{f}").ok();
            }
            toml::Value::Boolean(b) => {
                write!(out, "{b}").ok();
            }
            toml::Value::Datetime(d) => {
                write!(out, "{d}").ok();
            }
            toml::Value::Array(_) | toml::Value::Table(_) => {
                return Err(SubstError {
                    var: var.to_string(),
                    problem: Problem::NotScalar,
                    inside: None,
                })
            }
        }
        Ok(())
    }

    /// Substitutes the strings inside a parameter value and converts it to
    /// JSON. A string that is exactly one parameter reference (`"#{port}"`)
    /// takes that parameter's type (`22`, not `"22"`).
    pub(super) fn value(&self, v: &toml::Value) -> Result<serde_json::Value, SubstError<'a>> {
        self.value_at(v, 0)
    }

    fn value_at(&self, v: &toml::Value, depth: u8) -> Result<serde_json::Value, SubstError<'a>> {
        use serde_json::Value as J;
        Ok(match v {
            toml::Value::String(s) => {
                if let Some(var) = whole_reference(s) {
                    if self.builtin(var).is_none() {
                        let p = self.lookup(var, depth)?;
                        return self.value_at(&p.value, depth + 1).map_err(|e| SubstError {
                            inside: e.inside.or(Some(p)),
                            ..e
                        });
                    }
                }
                J::String(self.string_at(s, depth)?)
            }
            toml::Value::Integer(i) => J::from(*i),
            toml::Value::Float(f) => J::from(*f),
            toml::Value::Boolean(b) => J::Bool(*b),
            toml::Value::Datetime(d) => J::String(d.to_string()),
            toml::Value::Array(a) => J::Array(
                a.iter()
                    .map(|x| self.value_at(x, depth))
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::Table(t) => J::Object(
                t.iter()
                    .map(|(k, x)| Ok((k.clone(), self.value_at(x, depth)?)))
                    .collect::<Result<_, SubstError<'a>>>()?,
            ),
        })
    }
}

/// `Some("x")` when `s` is exactly `#{x}`.
fn whole_reference(s: &str) -> Option<&str> {
    let body = s.strip_prefix("#{")?.strip_suffix('}')?;
    if body.contains('}') || body.contains("#{") {
        return None;
    }
    Some(body.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scope of service `service` on host `host` at `address`, with the
    /// default listen address.
    fn scope<'a>(
        host: &'a str,
        address: &'a str,
        service: &'a str,
        layers: &'a [&'a Params],
    ) -> Scope<'a> {
        static LISTEN: std::sync::LazyLock<Listen> = std::sync::LazyLock::new(Listen::default);
        Scope {
            host_name: host,
            host_address: address,
            service_name: service,
            listen: &LISTEN,
            layers,
        }
    }

    fn params(pairs: &[(&str, toml::Value)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_string(),
                    Param {
                        value: v.clone(),
                        at: Origin { file: 0, line: 1 },
                        field: format!("params.{k}"),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn substitutes_builtins_and_params() {
        let svc = params(&[("warn", "100,20%".into()), ("port", 22.into())]);
        let host = params(&[
            ("port", 2222.into()),
            ("url", "http://#{host.address}:#{port}/".into()),
        ]);
        let layers = [&svc, &host];
        let scope = scope("web1", "10.0.0.5", "ping", &layers);
        assert_eq!(
            scope.string("-H #{host.address}").expect("ok"),
            "-H 10.0.0.5"
        );
        assert_eq!(
            scope.string("#{host.name}/#{service.name}").expect("ok"),
            "web1/ping"
        );
        assert_eq!(scope.string("#{ warn }").expect("ok"), "100,20%");
        // The first layer wins; nested references expand.
        assert_eq!(scope.string("#{url}").expect("ok"), "http://10.0.0.5:22/");
        assert_eq!(scope.string("a##{b} #c").expect("ok"), "a#{b} #c");
        assert_eq!(
            scope.value(&"#{port}".into()).expect("ok"),
            serde_json::json!(22)
        );
        assert_eq!(
            scope.value(&"p#{port}".into()).expect("ok"),
            serde_json::json!("p22")
        );
        let e = scope.string("x #{nope} y").expect_err("unknown");
        assert_eq!((e.var.as_str(), e.problem), ("nope", Problem::Unknown));
        let e = scope.string("x #{nope").expect_err("unterminated");
        assert_eq!(e.problem, Problem::Unterminated);
    }

    #[test]
    fn errors_inside_params_name_the_param() {
        let p = params(&[
            ("a", "#{b}".into()),
            ("b", "#{a}".into()),
            ("c", "x#{zz}".into()),
        ]);
        let layers = [&p];
        let scope = scope("h", "h", "s", &layers);
        let e = scope.string("#{a}").expect_err("cycle");
        assert_eq!(e.problem, Problem::TooDeep);
        let e = scope.value(&"#{c}".into()).expect_err("unknown");
        assert_eq!(e.problem, Problem::Unknown);
        assert_eq!(e.inside.map(|p| p.field.as_str()), Some("params.c"));
    }
}
