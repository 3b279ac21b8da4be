//! Configuration loading: a directory config with templates resolves to the
//! expected model; every kind of bad input is reported with file, line and field.

use bergamot_core::config::{Config, Role, WebConfig};
use bergamot_core::model::{Check, CheckId, CheckKind, GroupId, LocationId, Model, Policy};
use bergamot_core::{ConfigProblem, Error};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config")
        .join(p)
}

fn problems_of(result: Result<Config, Error>) -> Vec<ConfigProblem> {
    match result {
        Err(Error::Config(e)) => e.0,
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("expected a config error, the config loaded"),
    }
}

fn problems(p: &str) -> Vec<ConfigProblem> {
    problems_of(Config::load(&data(p)))
}

/// Asserts one problem: its file ends with `file`, and line and field match;
/// its message contains `message`.
fn assert_problem(p: &ConfigProblem, file: &str, line: usize, field: &str, message: &str) {
    assert!(
        p.file.ends_with(file),
        "file {:?} should end with {file:?} ({p})",
        p.file
    );
    assert_eq!((p.line, p.field.as_str()), (line, field), "{p}");
    assert!(
        p.message.contains(message),
        "message {:?} should contain {message:?}",
        p.message
    );
}

fn only(p: &str) -> ConfigProblem {
    let ps = problems(p);
    assert_eq!(ps.len(), 1, "exactly one problem expected in {p}: {ps:#?}");
    ps.into_iter().next().expect("one")
}

fn check(model: &Model, id: CheckId) -> &Check {
    model
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id}"))
}

fn argv(c: &Check) -> Vec<String> {
    serde_json::from_value(c.params["command"].clone()).expect("command is an array of strings")
}

/// Asserts the check's command, its arguments given space-separated.
fn assert_argv(c: &Check, words: &str) {
    assert_eq!(
        argv(c),
        words.split(' ').collect::<Vec<_>>(),
        "{}",
        c.display_name()
    );
}

#[test]
fn directory_with_templates_loads_to_the_expected_model() {
    let config = Config::load(&data("good")).expect("the good config loads");
    let m = &config.model;
    let site = "demo";
    assert_eq!(m.site, site);

    // Files: recursive, sorted by path.
    let files: Vec<String> = config
        .files
        .iter()
        .map(|f| {
            Path::new(f)
                .strip_prefix(data("good"))
                .expect("under good/")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        files,
        [
            "00-base.toml",
            "hosts/web1.toml",
            "hosts/web2.toml",
            "shared/groups.toml",
            "templates.toml"
        ]
    );

    // web1: its own checks, then those of linux = base (wins) over monitored.
    let web1 = CheckId::host(site, "web1");
    let names: Vec<(&str, CheckKind)> = m
        .checks
        .iter()
        .filter(|c| c.host == "web1")
        .map(|c| (c.name.as_str(), c.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("web1", CheckKind::Host),
            ("http", CheckKind::Service),
            ("ssh", CheckKind::Service),
            ("disk", CheckKind::Service),
            ("backup", CheckKind::Trap),
        ]
    );
    let g = |n: &str| GroupId::named(site, n);
    let host = check(m, web1);
    assert_eq!(host.kind, CheckKind::Host);
    assert_eq!(host.host_id, None);
    assert_eq!(host.engine, "nagios");
    // warn from the host check's params, crit from monitored's params over
    // the command's default.
    assert_argv(
        host,
        "/usr/lib/nagios/plugins/check_ping -H 10.0.0.5 -w 50,10% -c 900,90%",
    );
    assert_eq!(
        host.policy,
        Policy::builder()
            .failed_after(4) // host's own
            .recovers_after(2) // monitored
            .every(Duration::from_secs(60)) // base beats monitored (10m)
            .retry_every(Duration::from_secs(30)) // [defaults]
            .changing_every(Duration::from_secs(30)) // linux
            .build()
    );
    assert_eq!(host.pool, "base-pool");
    assert_eq!(
        host.groups,
        [g("web"), g("linux-servers"), g("all"), g("production")]
    );
    assert_eq!(host.location, Some(LocationId::named(site, "dc1-rack3")));
    assert!(host.enabled);
    assert!(host.dependencies.is_empty());

    let ssh = check(m, CheckId::service(site, "web1", "ssh"));
    assert_eq!(ssh.host_id, Some(web1));
    // base's ssh wins the command and port; monitored's ssh still sets every.
    assert_argv(ssh, "/usr/lib/nagios/plugins/check_tcp -H 10.0.0.5 -p 22");
    assert_eq!(ssh.policy.every, Duration::from_secs(45));
    assert_eq!(ssh.policy.timeout, Duration::from_secs(10));
    assert_eq!(ssh.policy.failed_after, 4);
    assert_eq!(
        ssh.groups,
        [
            g("web"),
            g("linux-servers"),
            g("all"),
            g("production"),
            g("ssh")
        ]
    );
    assert_eq!(ssh.location, Some(LocationId::named(site, "dc1-rack3")));

    let http = check(m, CheckId::service(site, "web1", "http"));
    assert_eq!(http.engine, "http");
    // "#{hport}" alone keeps the parameter's type; the url gets the
    // service's port (over the command's default 80 and base's 8080).
    let expected: std::collections::BTreeMap<String, serde_json::Value> = [
        ("port".to_string(), json!(8443)),
        ("expect_status".to_string(), json!([200, 301])),
        ("url".to_string(), json!("http://10.0.0.5:8443/")),
    ]
    .into_iter()
    .collect();
    assert_eq!(http.params, expected);
    assert_eq!(http.dependencies, [ssh.id]);
    assert_eq!((http.policy.flap_low, http.policy.flap_high), (10.0, 40.0));
    assert_eq!(http.pool, "base-pool");

    let disk = check(m, CheckId::service(site, "web1", "disk"));
    assert_argv(
        disk,
        "/usr/lib/nagios/plugins/check_tcp -H 10.0.0.5 -p 5666",
    );
    assert_eq!(disk.policy.every, Duration::from_secs(60));

    let backup = check(m, CheckId::trap(site, "web1", "backup"));
    assert_eq!(backup.kind, CheckKind::Trap);
    assert_eq!(backup.engine, "passive");
    assert!(backup.params.is_empty());
    assert!(!backup.is_scheduled());

    // web2 extends monitored first: monitored wins where both set a field.
    let web2 = check(m, CheckId::host(site, "web2"));
    assert_eq!(web2.policy.every, Duration::from_secs(600));
    assert_eq!(web2.policy.failed_after, 5); // only base sets it
    assert_eq!(web2.pool, "mon-pool");
    // No address: -H is the name.
    assert_argv(
        web2,
        "/usr/lib/nagios/plugins/check_ping -H web2 -w 100,20% -c 900,90%",
    );
    assert_eq!(web2.dependencies, [CheckId::host(site, "web2-peer"), web1]);
    let web2_ssh = check(m, CheckId::service(site, "web2", "ssh"));
    // monitored's ssh wins the command; base's ssh params still apply.
    assert_argv(
        web2_ssh,
        "/usr/lib/nagios/plugins/check_ping -H web2 -w 100,20% -c 900,90%",
    );
    assert_eq!(web2_ssh.groups, [g("production"), g("all"), g("ssh")]);
    // A disabled host disables its checks.
    assert!(m
        .checks
        .iter()
        .filter(|c| c.host == "web2")
        .all(|c| !c.enabled));
    assert_eq!(m.checks.iter().filter(|c| c.host == "web2").count(), 4);

    // A host without templates or check: passive, default pool and policy
    // with [defaults] applied.
    let peer = check(m, CheckId::host(site, "web2-peer"));
    assert_eq!(peer.engine, "passive");
    assert_eq!(peer.pool, "default");
    assert_eq!(
        peer.policy,
        Policy::builder()
            .every(Duration::from_secs(120))
            .retry_every(Duration::from_secs(30))
            .build()
    );
    assert!(peer.groups.is_empty());
    assert_eq!(m.checks.len(), 5 + 4 + 1);

    // Groups: a graph with several parents; locations: a tree.
    let web_group = m
        .groups
        .iter()
        .find(|x| x.name == "web")
        .expect("group web");
    assert_eq!(web_group.id, g("web"));
    assert_eq!(web_group.parents, [g("production"), g("frontend")]);
    assert_eq!(m.groups.len(), 6);
    let rack = m
        .locations
        .iter()
        .find(|l| l.name == "dc1-rack3")
        .expect("rack");
    assert_eq!(rack.parent, Some(LocationId::named(site, "dc1")));
    assert_eq!(m.locations.len(), 2);

    // The web section.
    assert_eq!(config.web.listen, "0.0.0.0:9090".parse().expect("addr"));
    assert!(config.web.anonymous_read);
    assert_eq!(config.web.users.len(), 1);
    assert_eq!(config.web.users[0].name, "alice");
    assert_eq!(config.web.users[0].role, Role::Admin);
    assert!(config.web.users[0].password_hash.starts_with("$argon2id$"));
    assert_eq!(config.web.tokens[0].name, "ci");
    assert_eq!(config.web.tokens[0].role, Role::Operator);

    // Loading again gives the same model: ids are stable.
    let again = Config::load(&data("good")).expect("loads again");
    assert_eq!(&again.model, m);
}

#[test]
fn minimal_config_uses_defaults() {
    let c = Config::from_str_named("mini.toml", "[[host]]\nname = \"h\"\n").expect("loads");
    assert_eq!(c.model.site, "default");
    assert_eq!(c.web, WebConfig::default());
    assert_eq!(c.web.listen.to_string(), "127.0.0.1:8080");
    assert!(!c.web.anonymous_read);
    assert_eq!(c.model.checks.len(), 1);
    assert_eq!(c.model.checks[0].id, CheckId::host("default", "h"));
    assert_eq!(c.model.checks[0].policy, Policy::default());
    assert!(Role::Admin.allows(Role::Operator) && !Role::Viewer.allows(Role::Operator));
}

#[test]
fn arguments_are_substituted_one_by_one_never_through_a_shell() {
    let c = Config::from_str_named(
        "a.toml",
        r###"
        [[command]]
        name = "c"
        argv = ["/bin/echo", "#{msg}", "##{literal}", "#{service.name}@#{host.name}"]
        params = { msg = "two words; rm -rf /" }

        [[host]]
        name = "h"
        [[host.service]]
        name = "s"
        command = "c"
        "###,
    )
    .expect("loads");
    let s = check(&c.model, CheckId::service("default", "h", "s"));
    assert_eq!(
        argv(s),
        ["/bin/echo", "two words; rm -rf /", "#{literal}", "s@h"]
    );
}

/// Asserts the problems, in order: each as [`assert_problem`] with its file,
/// line, field and part of its message.
fn assert_problems(ps: &[ConfigProblem], want: &[(&str, usize, &str, &str)]) {
    assert_eq!(ps.len(), want.len(), "{ps:#?}");
    for (p, (file, line, field, message)) in ps.iter().zip(want) {
        assert_problem(p, file, *line, field, message);
    }
}

/// The problems each file under `tests/data/config/bad` must give, in order:
/// the file, line, field and part of the message.
const BAD_FILES: &[(&str, usize, &str, &str)] = &[
    (
        "unknown_template.toml",
        4,
        "host.web1.extends",
        "unknown template `nope`",
    ),
    (
        "unknown_group.toml",
        3,
        "group.web.parents",
        "unknown group `nowhere`",
    ),
    (
        "unknown_group.toml",
        7,
        "host.web1.groups",
        "unknown group `nope`",
    ),
    (
        "unknown_host.toml",
        6,
        "host.web1.service.http.depends_on",
        "unknown check `web9/http`",
    ),
    (
        "unknown_host.toml",
        10,
        "host.web2.depends_on",
        "unknown check `web9`",
    ),
    (
        "unknown_command.toml",
        6,
        "host.web1.service.http.command",
        "unknown command `check_nope`",
    ),
    (
        "unknown_location.toml",
        3,
        "location.dc1.parent",
        "unknown location `earth`",
    ),
    (
        "unknown_location.toml",
        7,
        "host.web1.location",
        "unknown location `mars`",
    ),
    (
        "group_cycle.toml",
        2,
        "group.a.parents",
        "cycle in group parents: a -> b -> c -> a",
    ),
    (
        "template_cycle.toml",
        2,
        "template.t1.extends",
        "cycle in template extends: t1 -> t2 -> t1",
    ),
    (
        "dependency_cycle.toml",
        6,
        "host.web1.service.http.depends_on",
        "cycle in dependencies: web1/http -> web2 -> web1/http",
    ),
    (
        "location_cycle.toml",
        2,
        "location.dc1.parent",
        "cycle in locations: dc1 -> dc2 -> dc1",
    ),
    (
        "bad_duration.toml",
        6,
        "host.web1.every",
        "bad duration \"5x\"",
    ),
    (
        "bad_duration.toml",
        10,
        "host.web1.service.http.changing_every",
        "bad duration \"30m1h\"",
    ),
    ("dup_group.toml", 8, "group.web", "duplicate group `web`"),
    (
        "unknown_field.toml",
        6,
        "host.service.evry",
        "unknown field `evry`",
    ),
    (
        "threshold.toml",
        3,
        "template.t.recovers_after",
        "at least 1",
    ),
    ("threshold.toml", 7, "host.web1.failed_after", "at least 1"),
    (
        "flap.toml",
        3,
        "host.web1.flap_low",
        "flap_low (50) must not be above flap_high (40)",
    ),
];

/// Every kind of bad input (unknown names, cycles, bad values, typos) is
/// reported with its file, line and field, and nothing else is.
#[test]
fn bad_files_name_file_line_and_field() {
    let mut files: Vec<&str> = BAD_FILES.iter().map(|(file, ..)| *file).collect();
    files.dedup();
    for file in files {
        let want: Vec<_> = BAD_FILES.iter().copied().filter(|w| w.0 == file).collect();
        assert_problems(&problems(&format!("bad/{file}")), &want);
    }
}

#[test]
fn syntax_error_names_the_line() {
    let p = only("bad/syntax.toml");
    assert_problem(&p, "syntax.toml", 3, "host.address", "");
    assert!(!p.message.is_empty());
}

#[test]
fn duplicate_host_across_files_of_a_directory() {
    assert_problem(
        &only("bad/dup_host"),
        "dup_host/b.toml",
        4,
        "host.web1",
        "duplicate host `web1`: first defined at ",
    );
    assert!(only("bad/dup_host").message.contains("a.toml:2"));
}

#[test]
fn duplicate_service_on_a_host() {
    let p = only("bad/dup_service.toml");
    assert_problem(
        &p,
        "dup_service.toml",
        8,
        "host.web1.service.http",
        "duplicate service or trap `http`",
    );
    assert!(p.message.ends_with("dup_service.toml:5"), "{p}");
}

#[test]
fn flap_low_above_default_flap_high_via_template() {
    // Each value is fine on its own; the resolved policy is not.
    let ps = problems_of(Config::from_str_named(
        "f.toml",
        "[[template]]\nname = \"t\"\nflap_low = 35\n\n[[host]]\nname = \"h\"\nextends = [\"t\"]\n",
    ));
    assert_problems(
        &ps,
        &[(
            "f.toml",
            3,
            "template.t.flap_low",
            "flap_low (35) must not be above flap_high (30)",
        )],
    );
}

#[test]
fn unknown_parameter_names_the_argv_line() {
    let p = only("bad/unknown_param.toml");
    assert_problem(
        &p,
        "unknown_param.toml",
        5,
        "command.check_x.argv",
        "unknown parameter `#{levl}`",
    );
    assert!(p.message.contains("web1"), "{p}");
}

#[test]
fn unknown_parameter_in_a_template_is_reported_once() {
    let mut text = String::from(
        "[[command]]\nname = \"c\"\nengine = \"tcp\"\n\n[[template]]\nname = \"t\"\n[[template.service]]\nname = \"s\"\ncommand = \"c\"\nparams = { port = \"#{nope}\" }\n",
    );
    for i in 0..50 {
        text.push_str(&format!("\n[[host]]\nname = \"h{i}\"\nextends = [\"t\"]\n"));
    }
    let ps = problems_of(Config::from_str_named("t.toml", &text));
    assert_problems(
        &ps,
        &[(
            "t.toml",
            10,
            "template.t.service.s.params.port",
            "unknown parameter `#{nope}`",
        )],
    );
}

#[test]
fn every_problem_is_listed_in_line_order() {
    assert_problems(
        &problems("bad/many.toml"),
        &[
            ("many.toml", 3, "host.web1.groups", "unknown group `nope`"),
            ("many.toml", 4, "host.web1.every", "bad duration \"soon\""),
            (
                "many.toml",
                8,
                "host.web1.service.http.command",
                "unknown command `missing`",
            ),
        ],
    );
    // The error's Display names file:line for each.
    let e = Config::load(&data("bad/many.toml")).expect_err("bad");
    let text = e.to_string();
    assert!(
        text.contains("many.toml:3: host.web1.groups: unknown group `nope`"),
        "{text}"
    );
}

#[test]
fn problems_of_several_files_are_all_reported() {
    let ps = problems_of(Config::from_sources(&[
        ("a.toml", "[[host]]\nname = \"h1\"\nevery = \"1x\"\n"),
        (
            "b.toml",
            "[[host]]\nname = \"h2\"\nlocation = \"nowhere\"\n",
        ),
        ("c.toml", "[[host]]\nname = \"h1\"\n"),
    ]));
    assert_problems(
        &ps,
        &[
            ("a.toml", 3, "host.h1.every", "bad duration"),
            ("b.toml", 3, "host.h2.location", "unknown location"),
            (
                "c.toml",
                2,
                "host.h1",
                "duplicate host `h1`: first defined at a.toml:2",
            ),
        ],
    );
}

#[test]
fn bad_web_section() {
    let ps = problems_of(Config::from_str_named(
        "w.toml",
        r#"
[web]
listen = "localhost"

[[web.users]]
name = "bob"
password_hash = "hunter2"
role = "viewer"

[[web.users]]
name = "bob"
password_hash = "$2b$12$abcdefghijklmnopqrstuv"
role = "operator"
"#,
    ));
    assert_problems(
        &ps,
        &[
            ("w.toml", 3, "web.listen", "bad listen address"),
            ("w.toml", 7, "web.users.bob.password_hash", "PHC"),
            ("w.toml", 11, "web.users.bob", "duplicate user `bob`"),
        ],
    );

    let ps = problems_of(Config::from_str_named(
        "r.toml",
        "[web]\n[[web.tokens]]\nname = \"t\"\ntoken_hash = \"x\"\nrole = \"root\"\n",
    ));
    assert_problems(
        &ps,
        &[("r.toml", 5, "web.tokens.role", "unknown variant `root`")],
    );
}

#[test]
fn missing_file_is_an_io_error() {
    match Config::load(&data("does-not-exist.toml")) {
        Err(Error::Io { context, .. }) => assert!(context.contains("does-not-exist.toml")),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn documented_example_loads_as_described() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let after = &doc[doc.find("## Full example").expect("section")..];
    let start = after.find("```toml\n").expect("toml block") + "```toml\n".len();
    let text = &after[start..start + after[start..].find("```").expect("block end")];
    let c = Config::from_str_named("configuration.md", text).expect("the documented example loads");
    let m = &c.model;
    let site = "demo";
    assert_eq!(m.checks.len(), 4);
    let host = check(m, CheckId::host(site, "web1"));
    assert_argv(
        host,
        "/usr/lib/nagios/plugins/check_ping -H 10.0.0.5 -w 100,20% -c 500,60%",
    );
    assert_eq!(host.policy.every, Duration::from_secs(60));
    let http = check(m, CheckId::service(site, "web1", "http"));
    assert_eq!(http.engine, "http");
    assert_eq!(http.params["url"], json!("http://10.0.0.5:8080/"));
    assert_eq!(http.params["expect_status"], json!([200, 301]));
    let ssh = check(m, CheckId::service(site, "web1", "ssh"));
    assert_eq!(http.dependencies, [ssh.id]);
    assert_argv(ssh, "/usr/lib/nagios/plugins/check_tcp -H 10.0.0.5 -p 22");
    let trap = check(m, CheckId::trap(site, "web1", "backup"));
    let g = |n: &str| GroupId::named(site, n);
    for c in [host, http, ssh, trap] {
        assert_eq!(
            c.groups,
            [g("web"), g("linux-servers"), g("production")],
            "{}",
            c.display_name()
        );
        assert_eq!(c.location, Some(LocationId::named(site, "dc1-rack3")));
    }
    assert_eq!(c.web.users[0].role, Role::Admin);
}

#[test]
fn type_errors_and_broken_headers_name_line_and_field() {
    let p = problems_of(Config::from_str_named(
        "t.toml",
        "[[host]]\nname = \"h\"\nfailed_after = \"three\"\n",
    ));
    assert_problems(&p, &[("t.toml", 3, "host.failed_after", "invalid type")]);

    let p = problems_of(Config::from_str_named(
        "h.toml",
        "site = \"x\"\n\n[[host]\nname = \"h\"\n",
    ));
    assert_problems(&p, &[("h.toml", 3, "host", "")]);

    // A host without a name: reported at its header.
    let p = problems_of(Config::from_str_named(
        "n.toml",
        "[[host]]\naddress = \"a\"\n",
    ));
    assert_problems(&p, &[("n.toml", 1, "host.name", "missing field `name`")]);
}

#[test]
fn large_configs_parse_in_parallel_and_report_in_file_order() {
    // Over 1 MiB in total, so the files are parsed on several threads.
    let hosts = |prefix: &str, n: usize| {
        let mut s = String::new();
        for i in 0..n {
            s.push_str(&format!(
                "[[host]]\nname = \"{prefix}{i:06}\"\naddress = \"10.0.0.1\"\n\n"
            ));
        }
        s
    };
    let a = hosts("a", 9000);
    let b = hosts("b", 9000) + "[[host]]\nname = \"bad\"\nevery = 5\n";
    let c = hosts("c", 9000) + "[[group]]\nname = \"g\"\nparent = \"x\"\n";
    assert!(a.len() + b.len() + c.len() > 1 << 20);
    let ps = problems_of(Config::from_sources(&[
        ("a.toml", &a),
        ("b.toml", &b),
        ("c.toml", &c),
    ]));
    assert_problems(
        &ps,
        &[
            ("b.toml", 9000 * 4 + 3, "host.every", "invalid type"),
            (
                "c.toml",
                9000 * 4 + 3,
                "group.parent",
                "unknown field `parent`",
            ),
        ],
    );

    let ok = Config::from_sources(&[("a.toml", &a), ("c.toml", &hosts("c", 9000))]).expect("loads");
    assert_eq!(ok.model.checks.len(), 18_000);
    assert_eq!(ok.model.checks[9000].host, "c000000");
}

#[test]
fn sections_given_twice_and_misplaced_fields() {
    let ps = problems_of(Config::from_sources(&[
        (
            "a.toml",
            "site = \"one\"\n[defaults]\nevery = \"1m\"\n[web]\n\n[[command]]\nname = \"n\"\n",
        ),
        (
            "b.toml",
            "site = \"two\"\n[defaults]\nevery = \"2m\"\n[web]\n\n[[command]]\nname = \"h\"\nengine = \"http\"\nargv = [\"x\"]\n\n[[template]]\nname = \"t\"\naddress = \"1.2.3.4\"\n",
        ),
    ]));
    let got: Vec<(String, usize, &str)> = ps
        .iter()
        .map(|p| {
            let file = Path::new(&p.file).display().to_string();
            (file, p.line, p.field.as_str())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a.toml".to_string(), 7, "command.n.argv"),
            ("b.toml".to_string(), 1, "site"),
            ("b.toml".to_string(), 2, "defaults"),
            ("b.toml".to_string(), 4, "web"),
            ("b.toml".to_string(), 9, "command.h.argv"),
            ("b.toml".to_string(), 13, "template.t.address"),
        ],
        "{ps:#?}"
    );
}

#[test]
fn defaults_pool_and_disabled_template_service() {
    let c = Config::from_str_named(
        "p.toml",
        r#"
[defaults]
pool = "edge"
failed_after = 1

[[template]]
name = "t"
[[template.service]]
name = "quiet"
enabled = false
[[template.service]]
name = "loud"
pool = "special"

[[host]]
name = "h"
extends = ["t"]
"#,
    )
    .expect("loads");
    let m = &c.model;
    let quiet = check(m, CheckId::service("default", "h", "quiet"));
    let loud = check(m, CheckId::service("default", "h", "loud"));
    let host = check(m, CheckId::host("default", "h"));
    assert_eq!(
        (host.pool.as_str(), quiet.pool.as_str(), loud.pool.as_str()),
        ("edge", "edge", "special")
    );
    assert!(!quiet.enabled && loud.enabled && host.enabled);
    assert_eq!(quiet.policy.failed_after, 1);
    assert_eq!(quiet.engine, "passive");
}

/// A FIFO named `*.toml` (even behind a symlink) and a symlink loop in a
/// config directory are problems naming them; the loader never opens the
/// FIFO (it would block forever) nor follows the loop.
#[test]
fn fifo_and_symlink_loop_in_a_config_directory_are_named_problems_not_hangs() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.toml"), "site = \"s\"\n").expect("write");
    let fifo = dir.path().join("b.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    std::os::unix::fs::symlink(&fifo, dir.path().join("c.toml")).expect("symlink");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/loop")).expect("symlink");
    // On a separate thread: before the fix this blocked in open(2).
    let path = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(Config::load(&path)).ok();
    });
    let result = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the loader returned (no hang on the FIFO)");
    let problems = problems_of(result);
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 3, "{text:#?}");
    assert!(
        problems[0].file.ends_with("b.toml") && problems[0].message.contains("FIFO"),
        "{text:#?}"
    );
    assert!(
        problems[1].file.ends_with("c.toml") && problems[1].message.contains("FIFO"),
        "{text:#?}"
    );
    assert!(
        problems[2].file.ends_with("loop") && problems[2].message.contains("symlink loop"),
        "{text:#?}"
    );

    // A FIFO given as the configuration itself.
    let result = Config::load(&fifo);
    assert!(problems_of(result)[0].message.contains("FIFO"));
}

/// `#{listen.*}` take the listen address (`[web] listen`, or the daemon's
/// `--listen`); nagios checks get the Nagios macros and the command's `env`.
#[test]
fn listen_macros_and_plugin_env() {
    use bergamot_core::config::LoadOptions;
    let text = r##"
site = "s"
[web]
listen = "0.0.0.0:8080"
[[command]]
name = "own-port"
engine = "tcp"
params = { host = "#{listen.host}", port = "#{listen.port}" }
[[command]]
name = "own-http"
engine = "http"
params = { url = "#{listen.url}/healthz" }
[[command]]
name = "plugin"
argv = ["/bin/true"]
env = { TOKEN_FILE = "/etc/#{host.name}.tok", NAGIOS_SERVICEDESC = "over" }
[[host]]
name = "h1"
address = "10.0.0.1"
check = { command = "plugin" }
service = [
  { name = "port", command = "own-port" },
  { name = "http", command = "own-http" },
  { name = "p", command = "plugin" },
]
"##;
    let c = Config::from_str_named("t.toml", text).expect("config");
    let check = |name: &str| {
        c.model
            .checks
            .iter()
            .find(|k| k.name == name)
            .unwrap_or_else(|| panic!("check {name}"))
            .clone()
    };
    assert_eq!(check("port").params["host"], "127.0.0.1");
    assert_eq!(check("port").params["port"], "8080");
    assert_eq!(check("http").params["url"], "http://127.0.0.1:8080/healthz");
    assert_eq!(
        check("h1").params["env"],
        json!({"NAGIOS_HOSTNAME": "h1", "NAGIOS_HOSTADDRESS": "10.0.0.1", "NAGIOS_SERVICEDESC": "over", "TOKEN_FILE": "/etc/h1.tok"})
    );
    assert_eq!(
        check("p").params["env"],
        json!({"NAGIOS_HOSTNAME": "h1", "NAGIOS_HOSTADDRESS": "10.0.0.1", "NAGIOS_SERVICEDESC": "over", "TOKEN_FILE": "/etc/h1.tok"})
    );

    let c = Config::from_sources_with(
        &[("t.toml", text)],
        &LoadOptions::with_listen(Some("[::]:18080".parse().expect("addr"))),
    )
    .expect("config");
    assert_eq!(c.web.listen.port(), 18080);
    let port = c
        .model
        .checks
        .iter()
        .find(|k| k.name == "http")
        .expect("http");
    assert_eq!(port.params["url"], "http://[::1]:18080/healthz");

    // env on a non-nagios command is a problem.
    let bad = text.replace(
        "params = { url = \"#{listen.url}/healthz\" }",
        "params = { url = \"x\" }\nenv = { A = \"b\" }",
    );
    let p = problems_of(Config::from_str_named("t.toml", &bad));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "command.own-http.env.A");
}
