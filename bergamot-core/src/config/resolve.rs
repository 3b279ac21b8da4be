//! From parsed files to the model: definitions with origins, reference
//! checks, cycle checks, template resolution, check generation and
//! dependency resolution.
//!
//! Cost: templates are resolved once each; a host is resolved by overlaying
//! its own definition on its (already resolved) templates, which copies
//! references, not data. Every name lookup is a hash lookup, so loading is
//! linear in the number of checks generated.

use super::duration::parse_duration;
use super::graph::find_cycles;
use super::notify::{check_contact_channels, NotifyBuild, NotifyDefs, NotifyPatch};
use super::raw::{
    RawCommand, RawFile, RawGroup, RawHostLike, RawLocation, RawParams, RawPolicy, RawService,
    RawTrap, RawWeb,
};
use super::subst::{Listen, Param, Params, Scope, SubstError};
use super::web::{WebConfig, WebToken, WebUser};
use super::{Origin, Problems, DEFAULT_POOL, DEFAULT_SITE};
use crate::exec::engine;
use crate::model::{
    Check, CheckId, CheckKind, Group, GroupId, Location, LocationId, Model, Policy,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// A name (or a reference to one) and where it was written.
#[derive(Debug)]
pub(super) struct Named {
    pub name: String,
    pub at: Origin,
}

/// A list of references with the field they were written in.
#[derive(Debug)]
pub(super) struct NamedList {
    pub items: Vec<Named>,
    pub field: String,
}

/// A flapping threshold and where it was set (they are checked against each
/// other only once resolved, as they may come from different places).
#[derive(Debug, Clone)]
struct Flap {
    value: f64,
    at: Origin,
    field: Arc<str>,
}

/// Policy fields set by one object; unset fields fall through to the next.
#[derive(Debug, Clone, Default)]
struct PolicyPatch {
    every: Option<Duration>,
    retry_every: Option<Duration>,
    changing_every: Option<Duration>,
    timeout: Option<Duration>,
    failed_after: Option<u32>,
    recovers_after: Option<u32>,
    flap_low: Option<Flap>,
    flap_high: Option<Flap>,
}

impl PolicyPatch {
    /// Fills the fields this patch leaves unset from `lo`.
    fn under(&mut self, lo: &PolicyPatch) {
        macro_rules! fill {
            ($($f:ident),*) => {$(
                if self.$f.is_none() {
                    self.$f = lo.$f.clone();
                }
            )*};
        }
        fill!(
            every,
            retry_every,
            changing_every,
            timeout,
            failed_after,
            recovers_after,
            flap_low,
            flap_high
        );
    }

    fn apply(&self, p: &mut Policy) {
        if let Some(v) = self.every {
            p.every = v;
        }
        if let Some(v) = self.retry_every {
            p.retry_every = v;
        }
        if let Some(v) = self.changing_every {
            p.changing_every = Some(v);
        }
        if let Some(v) = self.timeout {
            p.timeout = v;
        }
        if let Some(v) = self.failed_after {
            p.failed_after = v;
        }
        if let Some(v) = self.recovers_after {
            p.recovers_after = v;
        }
        if let Some(f) = &self.flap_low {
            p.flap_low = f.value;
        }
        if let Some(f) = &self.flap_high {
            p.flap_high = f.value;
        }
    }
}

/// `[[command]]`.
#[derive(Debug)]
struct CommandDef {
    name: Named,
    engine: String,
    argv: Vec<(String, Origin)>,
    argv_field: String,
    /// `env = { NAME = "value" }` (nagios only): name, value, where.
    env: Vec<(String, String, Origin)>,
    params: Params,
}

/// A service or trap of a host or template.
#[derive(Debug)]
struct ServiceDef {
    name: Named,
    path: String,
    trap: bool,
    command: Option<Named>,
    params: Params,
    policy: PolicyPatch,
    groups: Vec<Named>,
    depends_on: Option<NamedList>,
    pool: Option<String>,
    enabled: Option<bool>,
    notify: Option<NotifyPatch>,
}

/// A host or a template.
#[derive(Debug)]
struct HostDef {
    name: Named,
    path: String,
    address: Option<String>,
    extends: Vec<Named>,
    location: Option<Named>,
    groups: Vec<Named>,
    check_command: Option<Named>,
    check_params: Params,
    services: Vec<ServiceDef>,
    params: Params,
    depends_on: Option<NamedList>,
    pool: Option<String>,
    enabled: Option<bool>,
    policy: PolicyPatch,
    notify: Option<NotifyPatch>,
}

#[derive(Debug)]
struct GroupDef {
    name: Named,
    parents: Vec<Named>,
    notify: Option<NotifyPatch>,
}

#[derive(Debug)]
struct LocationDef {
    name: Named,
    parent: Option<Named>,
}

/// Everything defined by the files of a configuration, with origins.
#[derive(Debug, Default)]
pub(super) struct Defs {
    site: Option<Named>,
    defaults: PolicyPatch,
    default_pool: Option<String>,
    defaults_at: Option<Origin>,
    web: Option<(WebConfig, Origin)>,
    commands: Vec<CommandDef>,
    templates: Vec<HostDef>,
    hosts: Vec<HostDef>,
    groups: Vec<GroupDef>,
    locations: Vec<LocationDef>,
    notify: NotifyDefs,
}

/// Converts spanned raw values of one file, reporting bad values.
pub(super) struct Conv<'p> {
    pub(super) file: u32,
    pub(super) problems: &'p mut Problems,
}

impl Conv<'_> {
    pub(super) fn at<T>(&self, s: &Spanned<T>) -> Origin {
        self.problems.origin(self.file, s.span().start)
    }

    /// A name; `plain` names (hosts, services, traps) may not contain `/`,
    /// which separates host and service in references.
    pub(super) fn name(&mut self, s: Spanned<String>, field: &str, plain: bool) -> Named {
        let at = self.at(&s);
        let name = s.into_inner();
        if name.trim().is_empty() {
            self.problems.at(at, field, "name must not be empty");
        } else if name.chars().any(char::is_control) {
            self.problems.at(
                at,
                field,
                format!("name {name:?} contains a control character"),
            );
        } else if plain && name.contains('/') {
            self.problems
                .at(at, field, format!("name {name:?} must not contain '/'"));
        }
        Named { name, at }
    }

    pub(super) fn reference(&self, s: Spanned<String>) -> Named {
        Named {
            at: self.at(&s),
            name: s.into_inner(),
        }
    }

    pub(super) fn references(&self, v: Vec<Spanned<String>>) -> Vec<Named> {
        v.into_iter().map(|s| self.reference(s)).collect()
    }

    fn list(&self, v: Option<Vec<Spanned<String>>>, field: String) -> Option<NamedList> {
        v.map(|v| NamedList {
            items: self.references(v),
            field,
        })
    }

    fn params(&self, raw: RawParams, path: &str) -> Params {
        raw.into_iter()
            .map(|(k, v)| {
                let param = Param {
                    at: self.at(&v),
                    field: format!("{path}.params.{k}"),
                    value: v.into_inner(),
                };
                (k, param)
            })
            .collect()
    }

    pub(super) fn duration(
        &mut self,
        v: Option<Spanned<String>>,
        path: &str,
        key: &str,
    ) -> Option<Duration> {
        let v = v?;
        let at = self.at(&v);
        match parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.problems.at(
                    at,
                    format!("{path}.{key}"),
                    format!("{key} must be more than zero"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(msg) => {
                self.problems.at(at, format!("{path}.{key}"), msg);
                None
            }
        }
    }

    fn threshold(&mut self, v: Option<Spanned<i64>>, path: &str, key: &str) -> Option<u32> {
        let v = v?;
        let at = self.at(&v);
        match u32::try_from(*v.get_ref()) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                self.problems.at(
                    at,
                    format!("{path}.{key}"),
                    format!("{key} must be at least 1 (got {})", v.get_ref()),
                );
                None
            }
        }
    }

    fn flap(&mut self, v: Option<Spanned<f64>>, path: &str, key: &str) -> Option<Flap> {
        let v = v?;
        let at = self.at(&v);
        let value = *v.get_ref();
        let field: Arc<str> = format!("{path}.{key}").into();
        if !(0.0..=100.0).contains(&value) {
            self.problems.at(
                at,
                &*field,
                format!("{key} is a percentage from 0 to 100 (got {value})"),
            );
            return None;
        }
        Some(Flap { value, at, field })
    }

    fn policy(&mut self, raw: RawPolicy, path: &str) -> PolicyPatch {
        PolicyPatch {
            every: self.duration(raw.every, path, "every"),
            retry_every: self.duration(raw.retry_every, path, "retry_every"),
            changing_every: self.duration(raw.changing_every, path, "changing_every"),
            timeout: self.duration(raw.timeout, path, "timeout"),
            failed_after: self.threshold(raw.failed_after, path, "failed_after"),
            recovers_after: self.threshold(raw.recovers_after, path, "recovers_after"),
            flap_low: self.flap(raw.flap_low, path, "flap_low"),
            flap_high: self.flap(raw.flap_high, path, "flap_high"),
        }
    }

    fn command(&mut self, raw: RawCommand) -> CommandDef {
        let label = raw.name.get_ref().clone();
        let path = format!("command.{label}");
        let name = self.name(raw.name, &path, false);
        let engine = match raw.engine {
            Some(e) => {
                let at = self.at(&e);
                let e = e.into_inner();
                if e.trim().is_empty() {
                    self.problems
                        .at(at, format!("{path}.engine"), "engine must not be empty");
                }
                e
            }
            None => engine::NAGIOS.to_string(),
        };
        let argv_field = format!("{path}.argv");
        let argv: Vec<(String, Origin)> = match raw.argv {
            Some(a) => {
                let at = self.at(&a);
                let argv: Vec<_> = a
                    .into_inner()
                    .into_iter()
                    .map(|s| (self.at(&s), s.into_inner()))
                    .map(|(at, s)| (s, at))
                    .collect();
                if !engine::runs_command(&engine) {
                    self.problems.at(
                        at,
                        &argv_field,
                        format!("argv is only for engine \"nagios\" (this command's engine is {engine:?}); use params"),
                    );
                } else if argv.is_empty() {
                    self.problems.at(at, &argv_field, "argv must not be empty");
                }
                argv
            }
            None => {
                if engine::runs_command(&engine) {
                    self.problems.at(
                        name.at,
                        &argv_field,
                        "a command of engine \"nagios\" needs argv (the plugin and its arguments)",
                    );
                }
                Vec::new()
            }
        };
        let params = self.params(raw.params, &path);
        let mut env = Vec::with_capacity(raw.env.len());
        for (k, v) in raw.env {
            let at = self.at(&v);
            let field = format!("{path}.env.{k}");
            if !engine::runs_command(&engine) {
                self.problems.at(
                    at,
                    &field,
                    format!(
                        "env is only for engine \"nagios\" (this command's engine is {engine:?})"
                    ),
                );
            } else if k.is_empty()
                || k.contains('=')
                || k.chars().any(char::is_control)
                || v.get_ref().contains('\0')
            {
                self.problems.at(
                    at,
                    &field,
                    "an environment variable's name must be non-empty without '=' or control characters, its value without NUL",
                );
            }
            env.push((k, v.into_inner(), at));
        }
        CommandDef {
            name,
            engine,
            argv,
            argv_field,
            env,
            params,
        }
    }

    fn service(&mut self, mut raw: RawService, host_path: &str) -> ServiceDef {
        let path = format!("{host_path}.service.{}", raw.name.get_ref());
        let policy = raw.take_policy();
        ServiceDef {
            name: self.name(raw.name, &path, true),
            trap: false,
            command: raw.command.map(|c| self.reference(c)),
            params: self.params(raw.params, &path),
            policy: self.policy(policy, &path),
            groups: self.references(raw.groups),
            depends_on: self.list(raw.depends_on, format!("{path}.depends_on")),
            pool: raw.pool.map(Spanned::into_inner),
            enabled: raw.enabled,
            notify: self.notify(raw.notify, &path),
            path,
        }
    }

    fn trap(&mut self, mut raw: RawTrap, host_path: &str) -> ServiceDef {
        let path = format!("{host_path}.trap.{}", raw.name.get_ref());
        let policy = raw.take_policy();
        ServiceDef {
            name: self.name(raw.name, &path, true),
            trap: true,
            command: None,
            params: Params::new(),
            policy: self.policy(policy, &path),
            groups: self.references(raw.groups),
            depends_on: self.list(raw.depends_on, format!("{path}.depends_on")),
            pool: None,
            enabled: raw.enabled,
            notify: self.notify(raw.notify, &path),
            path,
        }
    }

    fn host_like(&mut self, mut raw: RawHostLike, kind: &str) -> HostDef {
        let path = format!("{kind}.{}", raw.name.get_ref());
        let is_host = kind == "host";
        let policy = raw.take_policy();
        let policy = self.policy(policy, &path);
        let name = self.name(raw.name, &path, is_host);
        let address = match raw.address {
            Some(a) if !is_host => {
                let at = self.at(&a);
                self.problems.at(
                    at,
                    format!("{path}.address"),
                    "address is set on hosts, not templates",
                );
                None
            }
            a => a.map(Spanned::into_inner),
        };
        let (check_command, check_params) = match raw.check {
            Some(c) => (
                c.command.map(|c| self.reference(c)),
                self.params(c.params, &format!("{path}.check")),
            ),
            None => (None, Params::new()),
        };
        let mut services = Vec::with_capacity(raw.service.len() + raw.trap.len());
        for s in raw.service {
            services.push(self.service(s, &path));
        }
        for t in raw.trap {
            services.push(self.trap(t, &path));
        }
        // Services and traps share one name space: `host/name` must be unambiguous.
        let mut seen: HashMap<&str, Origin> = HashMap::with_capacity(services.len());
        for s in &services {
            if let Some(first) = seen.get(s.name.name.as_str()) {
                let first = self.problems.describe(*first);
                self.problems.at(
                    s.name.at,
                    &s.path,
                    format!(
                        "duplicate service or trap `{}` on {kind} `{}`: first defined at {first}",
                        s.name.name, name.name
                    ),
                );
            } else {
                seen.insert(&s.name.name, s.name.at);
            }
        }
        HostDef {
            address,
            extends: self.references(raw.extends),
            location: raw.location.map(|l| self.reference(l)),
            groups: self.references(raw.groups),
            check_command,
            check_params,
            services,
            params: self.params(raw.params, &path),
            depends_on: self.list(raw.depends_on, format!("{path}.depends_on")),
            pool: raw.pool.map(Spanned::into_inner),
            enabled: raw.enabled,
            policy,
            notify: self.notify(raw.notify, &path),
            name,
            path,
        }
    }

    fn web(&mut self, raw: RawWeb) -> WebConfig {
        let mut web = WebConfig::default();
        self.web_limits(&raw, &mut web);
        if let Some(l) = raw.listen {
            let at = self.at(&l);
            match l.get_ref().parse() {
                Ok(addr) => web.listen = addr,
                Err(_) => self.problems.at(
                    at,
                    "web.listen",
                    format!(
                        "bad listen address {:?}: expected ip:port, e.g. \"127.0.0.1:8080\"",
                        l.get_ref()
                    ),
                ),
            }
        }
        web.anonymous_read = raw.anonymous_read.unwrap_or(false);
        let mut names: HashMap<String, Origin> = HashMap::new();
        for u in raw.users {
            let field = format!("web.users.{}", u.name.get_ref());
            let name = self.name(u.name, &field, false);
            self.unique(&mut names, &name, &field, "user");
            let hash_at = self.at(&u.password_hash);
            let password_hash = u.password_hash.into_inner();
            if !password_hash.starts_with('$') {
                self.problems.at(
                    hash_at,
                    format!("{field}.password_hash"),
                    "password_hash must be a PHC string ($argon2id$... or bcrypt $2b$...), never the password",
                );
            }
            web.users.push(WebUser {
                name: name.name,
                password_hash,
                role: u.role,
            });
        }
        let mut names: HashMap<String, Origin> = HashMap::new();
        for t in raw.tokens {
            let field = format!("web.tokens.{}", t.name.get_ref());
            let name = self.name(t.name, &field, false);
            self.unique(&mut names, &name, &field, "token");
            let hash_at = self.at(&t.token_hash);
            let token_hash = t.token_hash.into_inner();
            if token_hash.trim().is_empty() {
                self.problems.at(
                    hash_at,
                    format!("{field}.token_hash"),
                    "token_hash must not be empty",
                );
            }
            web.tokens.push(WebToken {
                name: name.name,
                token_hash,
                role: t.role,
            });
        }
        web
    }

    /// `public_urls` and the limits of `[web]`.
    fn web_limits(&mut self, raw: &RawWeb, web: &mut WebConfig) {
        for u in &raw.public_urls {
            let at = self.at(u);
            match super::web::origin_of(u.get_ref()) {
                Some(o) => web.public_urls.push(o),
                None => self.problems.at(
                    at,
                    "web.public_urls",
                    format!(
                        "bad public URL {:?}: expected http(s)://host[:port], e.g. \"https://mon.example.com\"",
                        u.get_ref()
                    ),
                ),
            }
        }
        let l = &mut web.limits;
        let d = |me: &mut Self, v: &Option<Spanned<String>>, key: &str| {
            me.duration(v.clone(), "web", key)
        };
        if let Some(v) = d(self, &raw.header_read_timeout, "header_read_timeout") {
            l.header_read_timeout = v;
        }
        if let Some(v) = d(self, &raw.request_timeout, "request_timeout") {
            l.request_timeout = v;
        }
        if let Some(v) = d(self, &raw.login_delay_max, "login_delay_max") {
            l.login_delay_max = v;
        }
        let counts = [
            (
                &raw.max_connections,
                "max_connections",
                &mut l.max_connections,
            ),
            (
                &raw.max_connections_per_address,
                "max_connections_per_address",
                &mut l.max_connections_per_address,
            ),
            (
                &raw.max_password_checks,
                "max_password_checks",
                &mut l.max_password_checks,
            ),
        ];
        for (v, key, slot) in counts {
            if let Some(v) = v {
                let at = self.at(v);
                match usize::try_from(*v.get_ref()) {
                    Ok(n) if n > 0 => *slot = n,
                    _ => self.problems.at(
                        at,
                        format!("web.{key}"),
                        format!("{key} must be a positive integer"),
                    ),
                }
            }
        }
        if let Some(v) = &raw.login_failures_allowed {
            l.login_failures_allowed = *v.get_ref();
        }
    }

    fn unique(&mut self, seen: &mut HashMap<String, Origin>, n: &Named, field: &str, what: &str) {
        if let Some(first) = seen.get(&n.name) {
            let first = self.problems.describe(*first);
            self.problems.at(
                n.at,
                field,
                format!("duplicate {what} `{}`: first defined at {first}", n.name),
            );
        } else {
            seen.insert(n.name.clone(), n.at);
        }
    }
}

impl Defs {
    /// Adds the definitions of one parsed file.
    pub(super) fn add_file(&mut self, file: u32, raw: RawFile, problems: &mut Problems) {
        let mut c = Conv { file, problems };
        if let Some(site) = raw.site {
            let site = c.name(site, "site", false);
            match &self.site {
                Some(first) if first.name != site.name => {
                    let first_at = c.problems.describe(first.at);
                    c.problems.at(
                        site.at,
                        "site",
                        format!(
                            "site {:?} differs from site {:?} set at {first_at}",
                            site.name, first.name
                        ),
                    );
                }
                Some(_) => {}
                None => self.site = Some(site),
            }
        }
        if let Some(d) = raw.defaults {
            let at = c.at(&d);
            let mut d = d.into_inner();
            if let Some(first) = self.defaults_at {
                let first = c.problems.describe(first);
                c.problems.at(
                    at,
                    "defaults",
                    format!("[defaults] is already given at {first}; give it once"),
                );
            } else {
                self.defaults_at = Some(at);
                let policy = d.take_policy();
                self.defaults = c.policy(policy, "defaults");
                self.default_pool = d.pool.map(Spanned::into_inner);
            }
        }
        if let Some(w) = raw.web {
            let at = c.at(&w);
            if let Some((_, first)) = &self.web {
                let first = c.problems.describe(*first);
                c.problems.at(
                    at,
                    "web",
                    format!("[web] is already given at {first}; give it once"),
                );
            } else {
                let web = c.web(w.into_inner());
                self.web = Some((web, at));
            }
        }
        for cmd in raw.command {
            let cmd = c.command(cmd);
            self.commands.push(cmd);
        }
        for t in raw.template {
            let t = c.host_like(t, "template");
            self.templates.push(t);
        }
        for h in raw.host {
            let h = c.host_like(h, "host");
            self.hosts.push(h);
        }
        for g in raw.group {
            self.groups.push(group(&mut c, g));
        }
        for l in raw.location {
            self.locations.push(location(&mut c, l));
        }
        self.notify.add(
            &mut c,
            raw.contact,
            raw.team,
            raw.timeperiod,
            raw.channel,
            raw.escalation,
        );
    }
}

fn group(c: &mut Conv<'_>, g: RawGroup) -> GroupDef {
    let field = format!("group.{}", g.name.get_ref());
    GroupDef {
        notify: c.notify(g.notify, &field),
        name: c.name(g.name, &field, false),
        parents: c.references(g.parents),
    }
}

fn location(c: &mut Conv<'_>, l: RawLocation) -> LocationDef {
    let field = format!("location.{}", l.name.get_ref());
    LocationDef {
        name: c.name(l.name, &field, false),
        parent: l.parent.map(|p| c.reference(p)),
    }
}

/// Maps names to indices, reporting duplicates (the first definition wins).
fn index<'a, T>(
    items: &'a [T],
    name: impl Fn(&T) -> &Named,
    kind: &str,
    problems: &mut Problems,
) -> HashMap<&'a str, usize> {
    let mut map: HashMap<&'a str, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let n = name(item);
        match map.get(n.name.as_str()) {
            Some(&first) => {
                let first = problems.describe(name(&items[first]).at);
                problems.at(
                    n.at,
                    format!("{kind}.{}", n.name),
                    format!("duplicate {kind} `{}`: first defined at {first}", n.name),
                );
            }
            None => {
                // Borrow the name from the slice, not from `n`, for 'a.
                map.insert(name(&items[i]).name.as_str(), i);
            }
        }
    }
    map
}

/// Resolves the links of a graph of named definitions: `node` gives each
/// one's name and the names it links to (written in `field(its name)`),
/// `index` maps names to nodes. An unknown name is a problem saying
/// `unknown(name)`, and so is each cycle (`cycle in {what}`). Returns each
/// node's known links.
pub(super) fn resolve_graph<'d, T, L>(
    nodes: &'d [T],
    node: impl Fn(&'d T) -> (&'d Named, L),
    index: &HashMap<&str, usize>,
    field: impl Fn(&str) -> String,
    unknown: impl Fn(&str) -> String,
    what: &str,
    problems: &mut Problems,
) -> Vec<Vec<usize>>
where
    L: IntoIterator<Item = &'d Named>,
{
    let adj: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            let (name, links) = node(n);
            let field = field(&name.name);
            let mut out = Vec::new();
            for l in links {
                match index.get(l.name.as_str()) {
                    Some(&i) => out.push(i),
                    None => problems.at(l.at, field.as_str(), unknown(&l.name)),
                }
            }
            out
        })
        .collect();
    report_cycles(&adj, |i| node(&nodes[i]).0, &field, what, problems);
    adj
}

/// Reports each cycle of the graph `adj` of nodes named by `name` once, at
/// its first node in the field `field(its name)`: `cycle in {what}: a -> b`.
/// Returns whether there was a cycle.
pub(super) fn report_cycles<'n>(
    adj: &[Vec<usize>],
    name: impl Fn(usize) -> &'n Named,
    field: impl Fn(&str) -> String,
    what: &str,
    problems: &mut Problems,
) -> bool {
    let cycles = find_cycles(adj.len(), |i| &adj[i]);
    for cycle in &cycles {
        let path: Vec<&str> = cycle.iter().map(|&i| name(i).name.as_str()).collect();
        let first = name(cycle[0]);
        problems.at(
            first.at,
            field(&first.name),
            format!("cycle in {what}: {}", path.join(" -> ")),
        );
    }
    !cycles.is_empty()
}

/// A service or trap as resolved for one host: its own fields over those of
/// the same-named services of its templates.
#[derive(Clone)]
struct SvcView<'a> {
    def: &'a ServiceDef,
    command: Option<&'a Named>,
    params: Vec<&'a Params>,
    policy: PolicyPatch,
    groups: Vec<&'a Named>,
    depends_on: Option<&'a NamedList>,
    pool: Option<&'a str>,
    enabled: Option<bool>,
    notify: Vec<&'a NotifyPatch>,
}

impl<'a> SvcView<'a> {
    fn of(def: &'a ServiceDef) -> Self {
        SvcView {
            def,
            command: def.command.as_ref(),
            params: if def.params.is_empty() {
                Vec::new()
            } else {
                vec![&def.params]
            },
            policy: def.policy.clone(),
            groups: def.groups.iter().collect(),
            depends_on: def.depends_on.as_ref(),
            pool: def.pool.as_deref(),
            enabled: def.enabled,
            notify: def.notify.iter().collect(),
        }
    }

    fn under(&mut self, lo: &SvcView<'a>) {
        if self.def.trap != lo.def.trap {
            // A trap replaces a service of the same name entirely, and back.
            return;
        }
        self.command = self.command.or(lo.command);
        self.params.extend(lo.params.iter().copied());
        self.policy.under(&lo.policy);
        union(&mut self.groups, &lo.groups);
        self.depends_on = self.depends_on.or(lo.depends_on);
        self.pool = self.pool.or(lo.pool);
        self.enabled = self.enabled.or(lo.enabled);
        self.notify.extend(lo.notify.iter().copied());
    }
}

fn union<'a>(hi: &mut Vec<&'a Named>, lo: &[&'a Named]) {
    for g in lo {
        if !hi.iter().any(|h| h.name == g.name) {
            hi.push(g);
        }
    }
}

/// A host or template with its templates applied.
#[derive(Clone, Default)]
struct HostView<'a> {
    policy: PolicyPatch,
    groups: Vec<&'a Named>,
    params: Vec<&'a Params>,
    pool: Option<&'a str>,
    check_command: Option<&'a Named>,
    check_params: Vec<&'a Params>,
    location: Option<&'a Named>,
    services: Vec<SvcView<'a>>,
    depends_on: Option<&'a NamedList>,
    enabled: Option<bool>,
    notify: Vec<&'a NotifyPatch>,
}

impl<'a> HostView<'a> {
    fn of(def: &'a HostDef) -> Self {
        let nonempty = |p: &'a Params| if p.is_empty() { Vec::new() } else { vec![p] };
        HostView {
            policy: def.policy.clone(),
            groups: def.groups.iter().collect(),
            params: nonempty(&def.params),
            pool: def.pool.as_deref(),
            check_command: def.check_command.as_ref(),
            check_params: nonempty(&def.check_params),
            location: def.location.as_ref(),
            services: def.services.iter().map(SvcView::of).collect(),
            depends_on: def.depends_on.as_ref(),
            enabled: def.enabled,
            notify: def.notify.iter().collect(),
        }
    }

    /// Applies `lo` (a template) under this view: fields set here win.
    /// Services are merged only when `services` is set.
    fn under(&mut self, lo: &HostView<'a>, services: bool) {
        self.policy.under(&lo.policy);
        union(&mut self.groups, &lo.groups);
        self.params.extend(lo.params.iter().copied());
        self.pool = self.pool.or(lo.pool);
        self.check_command = self.check_command.or(lo.check_command);
        self.check_params.extend(lo.check_params.iter().copied());
        self.location = self.location.or(lo.location);
        self.depends_on = self.depends_on.or(lo.depends_on);
        self.enabled = self.enabled.or(lo.enabled);
        self.notify.extend(lo.notify.iter().copied());
        if !services {
            return;
        }
        if self.services.is_empty() {
            self.services = lo.services.clone();
        } else {
            // The services of `lo` are distinct by name, so only the ones
            // that were here before can match.
            let own = self.services.len();
            for s in &lo.services {
                let name = s.def.name.name.as_str();
                match self.services[..own]
                    .iter()
                    .position(|x| x.def.name.name == name)
                {
                    Some(i) => self.services[i].under(s),
                    None => self.services.push(s.clone()),
                }
            }
        }
    }
}

/// Resolves template `i` (and first its parents) into `memo`.
fn resolve_template<'a>(
    i: usize,
    defs: &'a Defs,
    templates: &HashMap<&str, usize>,
    memo: &mut Vec<Option<HostView<'a>>>,
    visiting: &mut Vec<bool>,
) {
    if memo[i].is_some() || visiting[i] {
        // Resolved, or on a cycle (reported separately): stop.
        return;
    }
    visiting[i] = true;
    let def = &defs.templates[i];
    let parents: Vec<usize> = def
        .extends
        .iter()
        .filter_map(|e| templates.get(e.name.as_str()).copied())
        .collect();
    for &p in &parents {
        resolve_template(p, defs, templates, memo, visiting);
    }
    let mut view = HostView::of(def);
    for &p in &parents {
        if let Some(pv) = &memo[p] {
            view.under(pv, true);
        }
    }
    memo[i] = Some(view);
    visiting[i] = false;
}

/// A dependency waiting for every check to exist.
struct PendingDep<'a> {
    check: usize,
    target: String,
    at: Origin,
    field: &'a str,
    /// The index of the target check, once resolved.
    resolved: Option<usize>,
}

/// Generates the checks.
struct Gen<'a, 'p> {
    defs: &'a Defs,
    site: &'a str,
    problems: &'p mut Problems,
    commands: HashMap<&'a str, usize>,
    group_ids: HashMap<&'a str, GroupId>,
    location_ids: HashMap<&'a str, LocationId>,
    base: Policy,
    default_pool: &'a str,
    checks: Vec<Check>,
    pending: Vec<PendingDep<'a>>,
    /// Substitution errors already reported, by (where, field, reference):
    /// a bad reference in a template is reported once, not once per host.
    subst_seen: HashSet<(Origin, String, String)>,
    /// Reused for the parameter layers of each check (saves an allocation per check).
    scratch: Vec<&'a Params>,
    /// The notification model being built.
    notify: NotifyBuild,
    /// The `notify` of each group that has one.
    group_notify: HashMap<GroupId, &'a NotifyPatch>,
    /// Rules by the layers they were resolved from (checks share layers).
    rule_cache: HashMap<Vec<usize>, Option<crate::notify::NotifyRule>>,
    /// `#{listen.*}`: the web listen address.
    listen: &'a Listen,
}

/// The names a check's references resolve against.
struct Names<'s> {
    host: &'s str,
    address: &'s str,
    service: &'s str,
    is_host: bool,
}

impl Names<'_> {
    /// The check's display name, for messages (built only when needed).
    fn display(&self) -> String {
        if self.is_host {
            self.host.to_string()
        } else {
            format!("{}/{}", self.host, self.service)
        }
    }
}

impl<'a> Gen<'a, '_> {
    /// Resolves the notification rule of check `index` from its layers:
    /// its own `notify`, its host's (with templates), its groups'.
    fn notify_rule(&mut self, index: usize, own: &[&'a NotifyPatch], host: &[&'a NotifyPatch]) {
        let mut layers: Vec<&'a NotifyPatch> = Vec::with_capacity(own.len() + host.len());
        layers.extend_from_slice(own);
        layers.extend_from_slice(host);
        for g in &self.checks[index].groups {
            if let Some(p) = self.group_notify.get(g) {
                layers.push(p);
            }
        }
        if layers.is_empty() {
            return;
        }
        let key: Vec<usize> = layers
            .iter()
            .map(|l| *l as *const NotifyPatch as usize)
            .collect();
        let rule = match self.rule_cache.get(&key) {
            Some(r) => r.clone(),
            None => {
                let r = self.notify.rule(&layers, self.problems);
                self.rule_cache.insert(key, r.clone());
                r
            }
        };
        if let Some(rule) = rule {
            let c = &self.checks[index];
            let entry = crate::notify::CheckNotify {
                check: c.display_name(),
                host: c.host.clone(),
                rule,
            };
            self.notify.model.checks.insert(c.id, entry);
        }
    }

    fn subst_error(&mut self, e: SubstError<'_>, at: Origin, field: &str, names: &Names<'_>) {
        let (at, field) = match e.inside {
            Some(p) => (p.at, p.field.as_str()),
            None => (at, field),
        };
        if self
            .subst_seen
            .insert((at, field.to_string(), e.var.clone()))
        {
            self.problems.at(
                at,
                field,
                format!("{} (in check {})", e.message(), names.display()),
            );
        }
    }

    /// The engine and engine parameters of a check running `command`.
    fn engine_params(
        &mut self,
        command: Option<&'a Named>,
        own: &[&'a Params],
        host: &[&'a Params],
        names: &Names<'_>,
    ) -> (String, BTreeMap<String, serde_json::Value>) {
        let mut out = BTreeMap::new();
        let Some(cmd) = command.and_then(|c| self.commands.get(c.name.as_str())) else {
            // No command (or an unknown one, already reported): passive.
            return (engine::PASSIVE.to_string(), out);
        };
        let cmd: &'a CommandDef = &self.defs.commands[*cmd];
        let mut layers = std::mem::take(&mut self.scratch);
        layers.clear();
        layers.extend_from_slice(own);
        layers.extend_from_slice(host);
        layers.push(&cmd.params);
        let scope = Scope {
            host_name: names.host,
            host_address: names.address,
            service_name: names.service,
            listen: self.listen,
            layers: &layers,
        };
        if engine::runs_command(&cmd.engine) {
            let mut argv = Vec::with_capacity(cmd.argv.len());
            for (arg, at) in &cmd.argv {
                match scope.string(arg) {
                    Ok(s) => argv.push(serde_json::Value::String(s)),
                    Err(e) => self.subst_error(e, *at, &cmd.argv_field, names),
                }
            }
            out.insert("command".to_string(), serde_json::Value::Array(argv));
            // The plugin's environment: the Nagios-style macros, then the
            // command's own `env` (which may override them).
            let mut env = serde_json::Map::new();
            let mut put = |k: &str, v: &str| {
                env.insert(k.to_string(), serde_json::Value::String(v.to_string()));
            };
            put("NAGIOS_HOSTNAME", names.host);
            put("NAGIOS_HOSTADDRESS", names.address);
            if !names.is_host {
                put("NAGIOS_SERVICEDESC", names.service);
            }
            for (k, v, at) in &cmd.env {
                match scope.string(v) {
                    Ok(s) => {
                        env.insert(k.clone(), serde_json::Value::String(s));
                    }
                    Err(e) => {
                        let field = format!("command.{}.env.{k}", cmd.name.name);
                        self.subst_error(e, *at, &field, names);
                    }
                }
            }
            out.insert("env".to_string(), serde_json::Value::Object(env));
        } else {
            // Engine params: the check's own (service, then template
            // services) over the command's; host params are only variables.
            for layer in own.iter().chain(std::iter::once(&&cmd.params)) {
                for (k, p) in layer.iter() {
                    if out.contains_key(k) {
                        continue;
                    }
                    match scope.value(&p.value) {
                        Ok(v) => {
                            out.insert(k.clone(), v);
                        }
                        Err(e) => self.subst_error(e, p.at, &p.field, names),
                    }
                }
            }
        }
        self.scratch = layers;
        (cmd.engine.clone(), out)
    }

    fn check_flap(&mut self, hi: &PolicyPatch, host: &PolicyPatch, policy: &Policy) {
        if policy.flap_low <= policy.flap_high {
            return;
        }
        let pick = |f: fn(&PolicyPatch) -> &Option<Flap>| {
            f(hi)
                .as_ref()
                .or(f(host).as_ref())
                .or(f(&self.defs.defaults).as_ref())
                .cloned()
        };
        let low = pick(|p| &p.flap_low);
        let high = pick(|p| &p.flap_high);
        let Some(f) = low.or(high) else { return };
        self.problems.at(
            f.at,
            &*f.field,
            format!(
                "flap_low ({}) must not be above flap_high ({})",
                policy.flap_low, policy.flap_high
            ),
        );
    }

    fn dependencies(
        &mut self,
        check: usize,
        deps: &'a NamedList,
        scope: &Scope<'_>,
        names: &Names<'_>,
    ) {
        for d in &deps.items {
            match scope.string(&d.name) {
                Ok(target) => self.pending.push(PendingDep {
                    check,
                    target,
                    at: d.at,
                    field: &deps.field,
                    resolved: None,
                }),
                Err(e) => self.subst_error(e, d.at, &deps.field, names),
            }
        }
    }

    fn group_ids(&self, names: &[&'a Named], into: &mut Vec<GroupId>) {
        for g in names {
            // Unknown groups were reported already.
            if let Some(id) = self.group_ids.get(g.name.as_str()) {
                if !into.contains(id) {
                    into.push(*id);
                }
            }
        }
    }

    /// Generates the checks of one host: `view` is the host with its
    /// templates applied, `services` its resolved services and traps.
    fn host(&mut self, def: &'a HostDef, view: &HostView<'a>, services: &[SvcView<'a>]) {
        let site = self.site;
        let host = def.name.name.as_str();
        let address = def.address.as_deref().unwrap_or(host);
        let host_id = CheckId::host(site, host);
        let mut host_groups = Vec::with_capacity(view.groups.len());
        self.group_ids(&view.groups, &mut host_groups);
        let location = view
            .location
            .and_then(|l| self.location_ids.get(l.name.as_str()))
            .copied();
        let host_pool = view.pool.unwrap_or(self.default_pool);
        let host_enabled = view.enabled.unwrap_or(true);
        let mut host_policy = self.base.clone();
        view.policy.apply(&mut host_policy);
        self.check_flap(&PolicyPatch::default(), &view.policy, &host_policy);

        let names = Names {
            host,
            address,
            service: host,
            is_host: true,
        };
        let (engine, params) =
            self.engine_params(view.check_command, &view.check_params, &view.params, &names);
        let index = self.checks.len();
        self.checks.push(
            Check::builder(host_id, CheckKind::Host, host, host)
                .engine(engine)
                .pool(host_pool)
                .params(params)
                .policy(host_policy.clone())
                .groups(host_groups.clone())
                .location(location)
                .enabled(host_enabled)
                .build(),
        );
        self.notify_rule(index, &[], &view.notify);
        if let Some(deps) = view.depends_on {
            let scope = Scope {
                host_name: host,
                host_address: address,
                service_name: host,
                listen: self.listen,
                layers: &view.params,
            };
            self.dependencies(index, deps, &scope, &names);
        }

        for s in services {
            let name = s.def.name.name.as_str();
            let (kind, id) = if s.def.trap {
                (CheckKind::Trap, CheckId::trap(site, host, name))
            } else {
                (CheckKind::Service, CheckId::service(site, host, name))
            };
            let mut policy = host_policy.clone();
            s.policy.apply(&mut policy);
            self.check_flap(&s.policy, &view.policy, &policy);
            let mut groups = Vec::with_capacity(host_groups.len() + s.groups.len());
            groups.extend_from_slice(&host_groups);
            self.group_ids(&s.groups, &mut groups);
            let names = Names {
                host,
                address,
                service: name,
                is_host: false,
            };
            let (engine, params) = self.engine_params(s.command, &s.params, &view.params, &names);
            let index = self.checks.len();
            self.checks.push(
                Check::builder(id, kind, host, name)
                    .host_id(host_id)
                    .engine(engine)
                    .pool(s.pool.unwrap_or(host_pool))
                    .params(params)
                    .policy(policy)
                    .groups(groups)
                    .location(location)
                    .enabled(host_enabled && s.enabled.unwrap_or(true))
                    .build(),
            );
            self.notify_rule(index, &s.notify, &view.notify);
            if let Some(deps) = s.depends_on {
                let mut layers = s.params.clone();
                layers.extend_from_slice(&view.params);
                let scope = Scope {
                    host_name: host,
                    host_address: address,
                    service_name: name,
                    listen: self.listen,
                    layers: &layers,
                };
                self.dependencies(index, deps, &scope, &names);
            }
        }
    }

    /// Resolves the pending dependencies and rejects dependency cycles.
    fn resolve_dependencies(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // Each host's checks are contiguous: the host check, then its
        // services and traps (names unique per host). A short scan of one
        // host's checks beats hashing every check's id.
        let mut hosts: HashMap<&str, (usize, usize)> = HashMap::new();
        let mut start = 0;
        while start < self.checks.len() {
            let host = self.checks[start].host.as_str();
            let len = self.checks[start..]
                .iter()
                .take_while(|c| c.host == host)
                .count();
            hosts.insert(host, (start, len));
            start += len;
        }
        let mut adj: Vec<Vec<usize>> = vec![Vec::new(); self.checks.len()];
        let mut pending = std::mem::take(&mut self.pending);
        for dep in &mut pending {
            let target = match dep.target.split_once('/') {
                None => hosts.get(dep.target.as_str()).map(|&(start, _)| start),
                Some((h, name)) => hosts.get(h).and_then(|&(start, len)| {
                    (start + 1..start + len).find(|&i| self.checks[i].name == name)
                }),
            };
            let Some(target) = target else {
                self.problems.at(
                    dep.at,
                    dep.field,
                    format!(
                        "unknown check `{}` in depends_on of {} (write \"host\" or \"host/service\")",
                        dep.target,
                        self.checks[dep.check].display_name()
                    ),
                );
                continue;
            };
            dep.resolved = Some(target);
        }
        drop(hosts);
        for dep in &pending {
            let Some(target) = dep.resolved else { continue };
            if adj[dep.check].contains(&target) {
                continue;
            }
            adj[dep.check].push(target);
            let id = self.checks[target].id;
            self.checks[dep.check].dependencies.push(id);
        }
        let cycles = find_cycles(adj.len(), |i| &adj[i]);
        for cycle in cycles {
            let names: Vec<String> = cycle
                .iter()
                .map(|&i| self.checks[i].display_name())
                .collect();
            // Report at the first edge of the cycle (rare: a linear search is fine).
            let edge = (cycle[0], cycle.get(1).copied());
            let (at, field) = pending
                .iter()
                .find(|d| (d.check, d.resolved) == edge)
                .map(|d| (d.at, d.field))
                .unwrap_or_default();
            self.problems.at(
                at,
                field,
                format!("cycle in dependencies: {}", names.join(" -> ")),
            );
        }
    }
}

/// Checks the references of a host or template (reported once per definition,
/// not once per host a template is applied to).
fn check_references(
    def: &HostDef,
    templates: &HashMap<&str, usize>,
    commands: &HashMap<&str, usize>,
    groups: &HashMap<&str, usize>,
    locations: &HashMap<&str, usize>,
    problems: &mut Problems,
) {
    let path = &def.path;
    for t in &def.extends {
        if !templates.contains_key(t.name.as_str()) {
            problems.at(
                t.at,
                format!("{path}.extends"),
                format!("unknown template `{}`", t.name),
            );
        }
    }
    if let Some(l) = &def.location {
        if !locations.contains_key(l.name.as_str()) {
            problems.at(
                l.at,
                format!("{path}.location"),
                format!("unknown location `{}`", l.name),
            );
        }
    }
    let check_groups = |gs: &[Named], field: String, problems: &mut Problems| {
        for g in gs {
            if !groups.contains_key(g.name.as_str()) {
                problems.at(g.at, &field, format!("unknown group `{}`", g.name));
            }
        }
    };
    check_groups(&def.groups, format!("{path}.groups"), problems);
    if let Some(c) = &def.check_command {
        if !commands.contains_key(c.name.as_str()) {
            problems.at(
                c.at,
                format!("{path}.check.command"),
                format!("unknown command `{}`", c.name),
            );
        }
    }
    for s in &def.services {
        if let Some(c) = &s.command {
            if !commands.contains_key(c.name.as_str()) {
                problems.at(
                    c.at,
                    format!("{}.command", s.path),
                    format!("unknown command `{}`", c.name),
                );
            }
        }
        check_groups(&s.groups, format!("{}.groups", s.path), problems);
    }
}

/// Builds the model and the web config from all definitions.
pub(super) fn build(
    defs: &Defs,
    problems: &mut Problems,
    listen: Option<std::net::SocketAddr>,
) -> (Model, WebConfig, crate::notify::NotifyModel) {
    let mut web = defs
        .web
        .as_ref()
        .map(|(w, _)| w.clone())
        .unwrap_or_default();
    if let Some(addr) = listen {
        web.listen = addr;
    }
    let listen = Listen::of(web.listen);
    let site: &str = defs.site.as_ref().map_or(DEFAULT_SITE, |s| s.name.as_str());
    let commands = index(&defs.commands, |c| &c.name, "command", problems);
    let templates = index(&defs.templates, |t| &t.name, "template", problems);
    let hosts = index(&defs.hosts, |h| &h.name, "host", problems);
    let groups = index(&defs.groups, |g| &g.name, "group", problems);
    let locations = index(&defs.locations, |l| &l.name, "location", problems);

    // Groups: parents known, no cycles.
    let group_adj = resolve_graph(
        &defs.groups,
        |g| (&g.name, &g.parents),
        &groups,
        |n| format!("group.{n}.parents"),
        |p| format!("unknown group `{p}`"),
        "group parents",
        problems,
    );

    // Locations: parent known, no cycles.
    let loc_adj = resolve_graph(
        &defs.locations,
        |l| (&l.name, &l.parent),
        &locations,
        |n| format!("location.{n}.parent"),
        |p| format!("unknown location `{p}`"),
        "locations",
        problems,
    );

    // Templates and hosts: references known, template inheritance acyclic.
    for def in defs.templates.iter().chain(&defs.hosts) {
        check_references(def, &templates, &commands, &groups, &locations, problems);
    }
    let template_adj: Vec<Vec<usize>> = defs
        .templates
        .iter()
        .map(|t| {
            t.extends
                .iter()
                .filter_map(|e| templates.get(e.name.as_str()).copied())
                .collect()
        })
        .collect();
    report_cycles(
        &template_adj,
        |i| &defs.templates[i].name,
        |n| format!("template.{n}.extends"),
        "template extends",
        problems,
    );

    let mut memo: Vec<Option<HostView<'_>>> = vec![None; defs.templates.len()];
    let mut visiting = vec![false; defs.templates.len()];
    for i in 0..defs.templates.len() {
        resolve_template(i, defs, &templates, &mut memo, &mut visiting);
    }

    let group_ids: HashMap<&str, GroupId> = groups
        .keys()
        .map(|&n| (n, GroupId::named(site, n)))
        .collect();
    let location_ids: HashMap<&str, LocationId> = locations
        .keys()
        .map(|&n| (n, LocationId::named(site, n)))
        .collect();
    let mut base = Policy::default();
    defs.defaults.apply(&mut base);

    // Notifications: definitions and every `notify` checked once each.
    let notify = NotifyBuild::new(&defs.notify, problems);
    check_contact_channels(&notify, &defs.notify, problems);
    for def in defs.templates.iter().chain(&defs.hosts) {
        if let Some(p) = &def.notify {
            notify.check_patch(p, problems);
        }
        for s in &def.services {
            if let Some(p) = &s.notify {
                notify.check_patch(p, problems);
            }
        }
    }
    let mut group_notify = HashMap::new();
    for (i, g) in defs.groups.iter().enumerate() {
        if let Some(p) = &g.notify {
            notify.check_patch(p, problems);
            if groups.get(g.name.name.as_str()) == Some(&i) {
                group_notify.insert(GroupId::named(site, &g.name.name), p);
            }
        }
    }

    let mut gen = Gen {
        defs,
        site,
        problems,
        commands,
        group_ids,
        location_ids,
        base,
        default_pool: defs.default_pool.as_deref().unwrap_or(DEFAULT_POOL),
        checks: Vec::new(),
        pending: Vec::new(),
        subst_seen: HashSet::new(),
        scratch: Vec::new(),
        notify,
        group_notify,
        rule_cache: HashMap::new(),
        listen: &listen,
    };
    // Hosts usually share a few template lists: resolve each distinct list
    // once, and let a host without services of its own use that list's
    // services by reference instead of copying them.
    let mut combos: HashMap<Vec<usize>, HostView<'_>> = HashMap::new();
    let mut host_templates: Vec<Vec<usize>> = Vec::with_capacity(defs.hosts.len());
    let mut capacity = 0;
    for def in &defs.hosts {
        let list: Vec<usize> = def
            .extends
            .iter()
            .filter_map(|t| templates.get(t.name.as_str()).copied())
            .collect();
        let combo = combos.entry(list.clone()).or_insert_with(|| {
            let mut v = HostView::default();
            for &t in &list {
                if let Some(tv) = &memo[t] {
                    v.under(tv, true);
                }
            }
            v
        });
        capacity += 1 + def.services.len() + combo.services.len();
        host_templates.push(list);
    }
    gen.checks.reserve_exact(capacity);
    for (i, def) in defs.hosts.iter().enumerate() {
        if hosts.get(def.name.name.as_str()) != Some(&i) {
            // A duplicate (reported): its checks would clash with the first's.
            continue;
        }
        let Some(combo) = combos.get(&host_templates[i]) else {
            continue;
        };
        let mut view = HostView::of(def);
        if def.services.is_empty() {
            view.under(combo, false);
            gen.host(def, &view, &combo.services);
        } else {
            view.under(combo, true);
            let services = std::mem::take(&mut view.services);
            gen.host(def, &view, &services);
        }
    }
    gen.resolve_dependencies();
    let checks = std::mem::take(&mut gen.checks);
    let mut notify_model = std::mem::take(&mut gen.notify.model);
    drop(gen);
    // Channels may name the daemon's own address too (the demo's webhook
    // to its own test receiver): `#{listen.host|port|url}` in a string setting.
    for channel in notify_model.channels.values_mut() {
        for value in channel.settings.values_mut() {
            if let serde_json::Value::String(text) = value {
                if text.contains("#{listen.") {
                    *text = listen.expand(text);
                }
            }
        }
    }

    let model_groups = defs
        .groups
        .iter()
        .enumerate()
        .filter(|(i, g)| groups.get(g.name.name.as_str()) == Some(i))
        .map(|(i, g)| Group {
            id: GroupId::named(site, &g.name.name),
            name: g.name.name.clone(),
            parents: group_adj[i]
                .iter()
                .map(|&p| GroupId::named(site, &defs.groups[p].name.name))
                .collect(),
        })
        .collect();
    let model_locations = defs
        .locations
        .iter()
        .enumerate()
        .filter(|(i, l)| locations.get(l.name.name.as_str()) == Some(i))
        .map(|(i, l)| Location {
            id: LocationId::named(site, &l.name.name),
            name: l.name.name.clone(),
            parent: loc_adj[i]
                .first()
                .map(|&p| LocationId::named(site, &defs.locations[p].name.name)),
        })
        .collect();
    let model = Model {
        site: site.to_string(),
        checks,
        groups: model_groups,
        locations: model_locations,
    };
    (model, web, notify_model)
}
