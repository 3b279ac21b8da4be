//! The web UI in real headless Chromium, driven over the DevTools protocol
//! (a small CDP client on tokio-tungstenite): the group tree shows states,
//! execute-now on a check brings its new result without a reload, and a
//! screenshot lands in `test-artifacts/ui.png`; a group of 10,000 checks
//! renders (windowed), shows a live update and scrolls to its end.

mod common;

use bergamot_core::config::Config;
use bergamot_core::model::{CheckId, GroupId};
use bergamot_daemon::{Backends, Options, Running};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Cdp {
    ws: Ws,
    next_id: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws
            .send(Message::Text(
                json!({ "id": id, "method": method, "params": params }).to_string(),
            ))
            .await
            .expect("cdp send");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no CDP answer to {method}"))
                .expect("cdp open")
                .expect("cdp frame");
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).expect("cdp json");
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        r["result"]["value"].clone()
    }

    async fn wait_for(&mut self, what: &str, expr: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.eval(expr).await;
            if !v.is_null() && v != false {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Cdp {
    /// The page as a PNG.
    async fn screenshot_png(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("png data"))
            .expect("base64")
    }
}

/// A daemon running every role of `config` on the in-memory backends.
struct Daemon {
    addr: SocketAddr,
    backends: Backends,
    running: Running,
    stop: common::Stop,
}

impl Daemon {
    async fn start(config: &Config, listen: &str) -> Daemon {
        let backends = Backends::in_memory();
        let options = Options {
            listen: listen.parse().expect("addr"),
            auth: (&config.web).into(),
            ..Options::default()
        };
        let (running, stop) =
            common::start_in_process(config.model.clone(), backends.clone(), options).await;
        Daemon {
            addr: running.addr.expect("addr"),
            backends,
            running,
            stop,
        }
    }

    async fn stop(self) {
        common::stop(self.running, self.stop).await;
    }
}

struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root")
        .to_path_buf()
}

/// Whether Chromium is there; without it the tests skip, unless
/// `BERGAMOT_REQUIRE_SERVICES=1`.
fn have_chromium() -> bool {
    bergamot_testkit::require(Path::new(CHROMIUM).exists(), CHROMIUM, "browser test")
}

/// Headless Chromium with a fresh profile, and a CDP session on its page.
async fn open_browser() -> (Browser, tempfile::TempDir, Cdp) {
    // Chromium with a fresh profile; it writes its DevTools port to a file.
    let profile = tempfile::tempdir().expect("profile");
    let browser = Browser(
        Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1280,860",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium"),
    );
    let port_file = profile.path().join("DevToolsActivePort");
    let devtools_port: u16 =
        bergamot_testkit::wait_for("Chromium's DevTools port", Duration::from_secs(30), || {
            let port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
            std::future::ready(port)
        })
        .await;
    let devtools: std::net::SocketAddr =
        format!("127.0.0.1:{devtools_port}").parse().expect("addr");
    let list = common::get(devtools, "/json/list", None).await.json();
    let page_ws = list
        .as_array()
        .and_then(|l| l.iter().find(|t| t["type"] == "page"))
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_string();
    let (ws, _) = tokio_tungstenite::connect_async(page_ws)
        .await
        .expect("cdp connect");
    let mut cdp = Cdp { ws, next_id: 0 };
    cdp.call("Page.enable", json!({})).await;
    cdp.call("Runtime.enable", json!({})).await;

    (browser, profile, cdp)
}

#[tokio::test(flavor = "multi_thread")]
async fn ui_shows_tree_and_execute_now_updates_live() {
    if !have_chromium() {
        return;
    }
    // The demo config on a free port, plus a check that only runs when asked.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let text = std::fs::read_to_string(repo_root().join("examples/demo.toml")).expect("demo");
    let text = text.replace("8080", &port.to_string())
        + "\n[[host]]\nname = \"manual\"\ngroups = [\"Shop\"]\n\n[[host.service]]\nname = \"on-demand\"\ncommand = \"cycle\"\nevery = \"1h\"\n";
    std::fs::write(dir.path().join("demo.toml"), text).expect("write");
    std::fs::create_dir_all(dir.path().join("plugins")).expect("dir");
    std::fs::copy(
        repo_root().join("examples/plugins/check_demo.sh"),
        dir.path().join("plugins/check_demo.sh"),
    )
    .expect("plugin");
    let config = bergamot_daemon::cli::load_config(&dir.path().join("demo.toml")).expect("config");
    let daemon = Daemon::start(&config, &format!("127.0.0.1:{port}")).await;
    let addr = daemon.addr;
    let target = CheckId::service(&config.model.site, "manual", "on-demand");

    let (_browser, _profile, mut cdp) = open_browser().await;

    // The group tree with states.
    cdp.call("Page.navigate", json!({ "url": format!("http://{addr}/") }))
        .await;
    cdp.wait_for(
        "the group tree",
        "document.querySelectorAll('#group-tree .node .badge').length >= 6",
    )
    .await;
    let names = cdp
        .eval("[...document.querySelectorAll('#group-tree .node .name')].map(e => e.textContent).join(',')")
        .await;
    for g in [
        "Demo",
        "Infrastructure",
        "Monitoring",
        "Applications",
        "Shop",
    ] {
        assert!(names.as_str().unwrap_or_default().contains(g), "{names}");
    }
    cdp.wait_for(
        "live updates",
        "document.querySelector('#conn').textContent === 'live'",
    )
    .await;
    // Results arrive until every group of the tree shows a real state; then
    // take the picture (some checks may still be pending: the picture
    // asserts nothing).
    cdp.wait_for(
        "every group with a state",
        "[...document.querySelectorAll('#group-tree .node .badge')].every(b => b.textContent !== 'PENDING')",
    )
    .await;
    cdp.eval(NEXT_FRAME).await;
    let png = cdp.screenshot_png().await;
    let artifacts = repo_root().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    std::fs::write(artifacts.join("ui.png"), &png).expect("write ui.png");

    // The check page; log in as the demo operator, click execute-now.
    cdp.eval(&format!(
        "sessionStorage.setItem('bergamot.auth', 'Basic ' + btoa('demo:demo')); location.hash = '#/check/{target}'; true"
    ))
    .await;
    cdp.wait_for(
        "the check page",
        "document.querySelector('#check-version') !== null",
    )
    .await;
    let before = cdp
        .eval("document.querySelector('#check-version').textContent")
        .await;
    let url_before = cdp.eval("location.href").await;
    cdp.eval("document.querySelector('#btn-execute').click(); true")
        .await;
    let after = cdp
        .wait_for(
            "the new result",
            &format!(
                "(() => {{ const v = document.querySelector('#check-version'); return v && v.textContent !== {before} ? v.textContent : null; }})()"
            ),
        )
        .await;
    assert_ne!(after, before);
    let output = cdp
        .eval("document.querySelector('#check-output').textContent")
        .await;
    assert!(
        output.as_str().unwrap_or_default().starts_with("dummy"),
        "{output}"
    );
    // No reload happened: same URL, same document.
    assert_eq!(cdp.eval("location.href").await, url_before);
    let png = cdp.screenshot_png().await;
    std::fs::write(artifacts.join("ui-check.png"), &png).expect("write ui-check.png");

    daemon.stop().await;
}

/// A group of 10,000 traps (plus their 100 hosts): the group page renders
/// only the rows in view, a result shows up in its row live, scrolling
/// reaches the last rows, and a burst of 2,000 results is applied without
/// a reload. Prints how long the page took and its longest main-thread
/// task; asserts no timing.
#[tokio::test(flavor = "multi_thread")]
async fn group_page_with_10000_checks_renders_and_updates() {
    if !have_chromium() {
        return;
    }
    const HOSTS: usize = 100;
    const TRAPS: usize = 100;
    let site = "big";
    let mut text = format!(
        "site = \"{site}\"\n[web]\nanonymous_read = true\n[[web.tokens]]\nname = \"t\"\n\
         token_hash = \"{}\"\nrole = \"operator\"\n[[group]]\nname = \"Big\"\n",
        bergamot_daemon::web::auth::hash_token("tok")
    );
    for h in 0..HOSTS {
        text.push_str(&format!(
            "[[host]]\nname = \"h{h:03}\"\ngroups = [\"Big\"]\n"
        ));
        for t in 0..TRAPS {
            text.push_str(&format!("[[host.trap]]\nname = \"t{t:03}\"\n"));
        }
    }
    let config = Config::from_str_named("big.toml", &text).expect("config");
    let daemon = Daemon::start(&config, "127.0.0.1:0").await;
    let addr = daemon.addr;
    let queue = &daemon.backends.queue;
    let total = config
        .model
        .checks
        .iter()
        .filter(|c| c.groups.iter().any(|g| *g == GroupId::named(site, "Big")))
        .count();
    assert!(total >= HOSTS * TRAPS, "{total} checks in the group");

    let (_browser, _profile, mut cdp) = open_browser().await;
    // Record the longest gap between animation frames (how long the page
    // was frozen), for the report.
    cdp.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": "window.__gap = 0; (() => { let last = performance.now(); const f = (t) => { window.__gap = Math.max(window.__gap, t - last); last = t; requestAnimationFrame(f); }; requestAnimationFrame(f); })();" }),
    )
    .await;
    let group = GroupId::named(site, "Big");
    let t0 = Instant::now();
    cdp.call(
        "Page.navigate",
        json!({ "url": format!("http://{addr}/#/group/{group}") }),
    )
    .await;
    let rows = cdp
        .wait_for(
            "the group's check table",
            "(() => { const w = document.querySelector('[data-table=group]'); return w && w.querySelectorAll('tr.r').length > 0 ? Number(w.dataset.rows) : null; })()",
        )
        .await;
    let rendered_in = t0.elapsed();
    assert_eq!(rows.as_u64(), Some(total as u64), "rows of the table");
    let in_dom = cdp
        .eval("document.querySelectorAll('[data-table=group] tr.r').length")
        .await
        .as_u64()
        .expect("row count");
    assert!(
        in_dom > 0 && in_dom < 500,
        "{in_dom} rows in the DOM: the table is not windowed"
    );
    cdp.wait_for(
        "live updates",
        "document.querySelector('#conn').textContent === 'live'",
    )
    .await;
    // The subscription reply reloads the state and re-renders: wait for the
    // table again, then take the first visible row's check.
    let first = cdp
        .wait_for(
            "the first row",
            "(() => { const r = document.querySelector('[data-table=group] tr.r'); return r ? r.dataset.check : null; })()",
        )
        .await;
    let first = first.as_str().expect("check id").to_string();
    let t1 = Instant::now();
    let r = common::post(
        addr,
        &format!("/api/checks/{first}/results"),
        Some("Bearer tok"),
        &json!({ "status": "CRITICAL", "output": "big test" }).to_string(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    cdp.wait_for(
        "the update in the first row",
        &format!(
            "(() => {{ const b = document.querySelector('[data-table=group] tr[data-check=\"{first}\"] .badge'); return b && b.textContent === 'CRITICAL'; }})()"
        ),
    )
    .await;
    let updated_in = t1.elapsed();
    // Scrolling to the end brings the last rows in.
    cdp.eval("(() => { const w = document.querySelector('[data-table=group]'); w.scrollTop = w.scrollHeight; return true; })()")
        .await;
    cdp.wait_for(
        "the last rows after scrolling",
        &format!(
            "(() => {{ const w = document.querySelector('[data-table=group]'); const r = w.querySelectorAll('tr.r'); const s = w.querySelectorAll('tr.spacer'); return r.length > 0 && r[0].dataset.check !== '{first}' && s[s.length - 1].style.height === '0px'; }})()"
        ),
    )
    .await;
    // A burst of 2,000 results over the whole group; the last one's row
    // (scrolled into view) shows it.
    let ids: Vec<CheckId> = (0..2000)
        .map(|i| {
            CheckId::trap(
                site,
                &format!("h{:03}", i / TRAPS),
                &format!("t{:03}", i % TRAPS),
            )
        })
        .collect();
    let last = cdp
        .eval("(() => { const r = document.querySelectorAll('[data-table=group] tr.r'); return r[r.length - 1].dataset.check; })()")
        .await;
    let last: CheckId = last.as_str().expect("id").parse().expect("check id");
    let load_gap = cdp.eval("window.__gap").await;
    cdp.eval("window.__gap = 0").await;
    let t2 = Instant::now();
    for id in ids.iter().chain(std::iter::once(&last)) {
        queue
            .publish_result(bergamot_core::model::CheckResult::new(
                *id,
                bergamot_core::model::Status::Warning,
                "burst".to_string(),
                chrono::Utc::now(),
            ))
            .await
            .expect("publish");
    }
    cdp.wait_for(
        "the burst's last update",
        &format!(
            "(() => {{ const b = document.querySelector('[data-table=group] tr[data-check=\"{last}\"] .badge'); return b && b.textContent === 'WARNING'; }})()"
        ),
    )
    .await;
    let burst_in = t2.elapsed();
    let burst_gap = cdp.eval("window.__gap").await;
    eprintln!(
        "group page, {total} checks: table rendered {rendered_in:?} after navigation ({in_dom} rows in the DOM), \
         an update shown {updated_in:?} after its result was posted, a burst of 2,001 results shown {burst_in:?} \
         after publishing began; longest gap between animation frames: {load_gap} ms while loading, \
         {burst_gap} ms during the burst"
    );
    daemon.stop().await;
}

/// Where screenshots go: `target/screenshots/` (or `$CARGO_TARGET_DIR/screenshots`).
/// CI runs in a fresh clone and keeps its `target/` after the run, so the
/// pictures of the last CI run stay next to its build; `.ci/run` prints the
/// folder at the end.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn screenshot(cdp: &mut Cdp, name: &str) -> PathBuf {
    let png = cdp.screenshot_png().await;
    let path = screenshot_dir().join(name);
    std::fs::write(&path, png).expect("write screenshot");
    path
}

async fn viewport(cdp: &mut Cdp, width: u32, height: u32, mobile: bool) {
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
    )
    .await;
}

/// Resolves once the page has drawn two more frames (what was laid out
/// before is on screen).
const NEXT_FRAME: &str =
    "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))";

/// Layout faults on the page: a horizontal scroll, or a count pill / mark
/// cut off by its box. `[]` when the page is right.
const LAYOUT_FAULTS: &str = "(() => { const f = []; const d = document.documentElement; \
  if (d.scrollWidth > window.innerWidth + 1) f.push('horizontal scroll: ' + d.scrollWidth + ' > ' + window.innerWidth); \
  for (const c of document.querySelectorAll('.count, .badge, .node .name')) { \
    const r = c.getBoundingClientRect(); if (!r.width) continue; \
    const box = c.closest('td') || c.closest('.card') || c.closest('header'); const b = box.getBoundingClientRect(); \
    if (r.right > b.right + 0.5 || r.left < b.left - 0.5 || c.scrollWidth > c.clientWidth + 1) f.push('clipped: ' + c.textContent); } \
  return f; })()";

/// 1,000 checks (40 hosts with 24 traps each; 2 hosts in no group) with
/// problems that have long output, acknowledgements and downtimes: the UI
/// at 1400×900 and at 390×844 (phone) has no horizontal scroll and no
/// clipped counts; the tree counts acknowledged and downtimed checks as
/// their own marks, agreeing with the header; ungrouped checks are listed;
/// search, the host list, log-out and the acknowledgement's author work.
/// Screenshots of every page go to `target/screenshots/` (path printed).
#[tokio::test(flavor = "multi_thread")]
async fn ui_with_1000_checks_layout_marks_search_and_screenshots() {
    if !have_chromium() {
        return;
    }
    const HOSTS: usize = 40;
    const TRAPS: usize = 24;
    let site = "shots";
    let mut text = format!(
        "site = \"{site}\"\n[web]\nanonymous_read = true\n\
         [[web.users]]\nname = \"demo\"\npassword_hash = \"{}\"\nrole = \"operator\"\n\
         [[group]]\nname = \"Production\"\n\
         [[group]]\nname = \"Web servers\"\nparents = [\"Production\"]\n\
         [[group]]\nname = \"Databases\"\nparents = [\"Production\"]\n\
         [[group]]\nname = \"Edge\"\nparents = [\"Production\"]\n",
        common::cheap_hash("demo")
    );
    let groups = ["Web servers", "Databases", "Edge"];
    let host = |h: usize| format!("srv{h:02}.example.org");
    for h in 0..HOSTS {
        let g = if h >= HOSTS - 2 {
            String::new()
        } else {
            format!("groups = [\"{}\"]\n", groups[h % 3])
        };
        text.push_str(&format!("[[host]]\nname = \"{}\"\n{g}", host(h)));
        for t in 0..TRAPS {
            text.push_str(&format!("[[host.trap]]\nname = \"check-{t:02}\"\n"));
        }
    }
    let config = Config::from_str_named("shots.toml", &text).expect("config");
    assert_eq!(config.model.checks.len(), HOSTS * (TRAPS + 1));
    let daemon = Daemon::start(&config, "127.0.0.1:0").await;
    let addr = daemon.addr;
    let (queue, store) = (&daemon.backends.queue, &daemon.backends.store);

    // Every check gets a result: most OK, some problems with long output.
    use bergamot_core::model::{CheckResult, Status};
    let long = "CRITICAL - connection refused by upstream 10.20.30.40:5432 after 3 retries; \
                pool exhausted (max_connections=200, waiting=57); last error: FATAL remaining \
                connection slots are reserved for non-replication superuser connections";
    let mut last = None;
    for h in 0..HOSTS {
        queue
            .publish_result(CheckResult::new(
                CheckId::host(site, &host(h)),
                Status::Ok,
                "PING OK - rta 0.4 ms".to_string(),
                chrono::Utc::now(),
            ))
            .await
            .expect("publish");
        for t in 0..TRAPS {
            let id = CheckId::trap(site, &host(h), &format!("check-{t:02}"));
            let (status, output) = match (h * TRAPS + t) % 23 {
                0 => (Status::Critical, long.to_string()),
                1 => (
                    Status::Warning,
                    format!("WARNING - disk /var at 91% on {}", host(h)),
                ),
                2 if h % 4 == 0 => (
                    Status::Unknown,
                    "UNKNOWN - plugin timed out reading /proc".to_string(),
                ),
                _ => (Status::Ok, "OK - all fine".to_string()),
            };
            queue
                .publish_result(CheckResult::new(id, status, output, chrono::Utc::now()))
                .await
                .expect("publish");
            last = Some(id);
        }
    }
    let last = last.expect("a check");
    bergamot_testkit::wait_until("the results applied", Duration::from_secs(60), || async {
        store.state(last).await.expect("state").version > 0
    })
    .await;
    // Acknowledge three CRITICAL checks, put two WARNING ones in downtime.
    let operator = common::basic("demo", "demo");
    let criticals: Vec<CheckId> = (0..HOSTS * TRAPS)
        .filter(|i| i % 23 == 0 && i / TRAPS < HOSTS - 2)
        .map(|i| CheckId::trap(site, &host(i / TRAPS), &format!("check-{:02}", i % TRAPS)))
        .collect();
    let warnings: Vec<CheckId> = (0..HOSTS * TRAPS)
        .filter(|i| i % 23 == 1 && i / TRAPS < HOSTS - 2)
        .map(|i| CheckId::trap(site, &host(i / TRAPS), &format!("check-{:02}", i % TRAPS)))
        .collect();
    for id in &criticals[..3] {
        let r = common::post(
            addr,
            &format!("/api/checks/{id}/acknowledge"),
            Some(&operator),
            &json!({ "comment": "DBA paged, failover in progress", "sticky": true }).to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for id in &warnings[..2] {
        let r = common::post(
            addr,
            &format!("/api/checks/{id}/downtimes"),
            Some(&operator),
            &json!({ "comment": "disk swap", "duration_seconds": 3600 }).to_string(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // Wait for all applied results, then wait for the processor's aggregates.
    let acked = criticals[0];
    bergamot_testkit::wait_until(
        "the acknowledgement applied",
        Duration::from_secs(30),
        || async { store.state(acked).await.expect("state").ack.is_some() },
    )
    .await;

    let (_browser, _profile, mut cdp) = open_browser().await;
    viewport(&mut cdp, 1400, 900, false).await;
    cdp.call("Page.navigate", json!({ "url": format!("http://{addr}/") }))
        .await;
    cdp.wait_for(
        "the tree and live updates",
        "document.querySelector('#conn').textContent === 'live' && document.querySelectorAll('#group-tree .node').length >= 5",
    )
    .await;
    // The subscription reloads the state once: wait until that second
    // `/api/state` came back and a frame was drawn after it.
    cdp.wait_for(
        "the state reloaded after the subscription",
        "subscribedOnce && performance.getEntriesByType('resource').filter(e => e.name.endsWith('/api/state')).length >= 2",
    )
    .await;
    cdp.eval(NEXT_FRAME).await;
    let mut shots = Vec::new();

    // Home at 1400×900: no horizontal scroll, no clipped count.
    let faults = cdp.eval(LAYOUT_FAULTS).await;
    assert_eq!(faults, json!([]), "home page at 1400 px");
    shots.push(screenshot(&mut cdp, "home-1400x900.png").await);
    // Marks: three acknowledged, two in downtime, in the header and on the
    // root group alike; grey PENDING pills nowhere (every check has a result).
    let marks = cdp
        .eval("(() => { const t = (sel) => [...document.querySelectorAll(sel + ' .count')].map(c => c.textContent).join(','); \
              return { header: t('#totals'), root: t('#group-tree > li > .node[data-group]:not(#ungrouped-node)') }; })()")
        .await;
    for part in ["header", "root"] {
        let s = marks[part].as_str().unwrap_or_default();
        assert!(s.contains("ACK 3") && s.contains("DT 2"), "{part}: {s}");
    }
    let pending = cdp
        .eval("document.querySelectorAll('#group-tree .count.s-PENDING, #totals .count.s-PENDING').length")
        .await;
    assert_eq!(
        pending, 0,
        "acknowledged / downtimed checks shown as PENDING"
    );
    // The two hosts in no group: an Ungrouped node with their 50 checks.
    let ungrouped = cdp
        .eval("(() => { const n = document.querySelector('#ungrouped-node'); return n && n.querySelector('.total').textContent; })()")
        .await;
    assert_eq!(ungrouped, json!("50 checks"));

    // Search from the header box.
    cdp.eval("document.querySelector('#q').value = 'srv03'; document.querySelector('#search-form').requestSubmit(); true")
        .await;
    let count = cdp
        .wait_for(
            "search results",
            "(() => { const c = document.querySelector('#search-count'); return c && c.textContent; })()",
        )
        .await;
    assert_eq!(
        count,
        json!(format!("{} of {}", TRAPS + 1, HOSTS * (TRAPS + 1)))
    );
    // Filters: not OK and acknowledged.
    cdp.eval("location.hash = '#/search?status=problems&ack=yes'; true")
        .await;
    cdp.wait_for(
        "the acknowledged problems",
        "(() => { const c = document.querySelector('#search-count'); return c && c.textContent.startsWith('3 of'); })()",
    )
    .await;
    cdp.eval("location.hash = '#/search?status=problems'; true")
        .await;
    cdp.wait_for(
        "all problems",
        "document.querySelectorAll('[data-table=search] tr.r').length > 10",
    )
    .await;
    assert_eq!(cdp.eval(LAYOUT_FAULTS).await, json!([]), "search page");
    shots.push(screenshot(&mut cdp, "search-1400x900.png").await);

    // The host list.
    cdp.eval("location.hash = '#/hosts'; true").await;
    let hosts = cdp
        .wait_for(
            "the host list",
            "(() => { const n = document.querySelectorAll('#host-table tr[data-host]').length; return n || null; })()",
        )
        .await;
    assert_eq!(hosts, json!(HOSTS));
    assert_eq!(cdp.eval(LAYOUT_FAULTS).await, json!([]), "hosts page");
    shots.push(screenshot(&mut cdp, "hosts-1400x900.png").await);

    // The acknowledged check: who and why.
    cdp.eval(&format!("location.hash = '#/check/{acked}'; true"))
        .await;
    let ack = cdp
        .wait_for(
            "the acknowledgement",
            "(() => { const a = document.querySelector('#check-ack'); return a && a.textContent; })()",
        )
        .await;
    let ack = ack.as_str().unwrap_or_default();
    assert!(
        ack.contains("by demo") && ack.contains("DBA paged, failover in progress"),
        "{ack}"
    );
    cdp.wait_for(
        "the history",
        "document.querySelector('#check-history table') !== null",
    )
    .await;
    assert_eq!(cdp.eval(LAYOUT_FAULTS).await, json!([]), "check page");
    shots.push(screenshot(&mut cdp, "check-1400x900.png").await);

    // Phone: 390×844.
    viewport(&mut cdp, 390, 844, true).await;
    cdp.eval("location.hash = '#/'; true").await;
    cdp.wait_for(
        "the tree on the phone",
        "document.querySelectorAll('#group-tree .node').length >= 5",
    )
    .await;
    cdp.wait_for("the phone viewport", "window.innerWidth === 390")
        .await;
    cdp.eval(NEXT_FRAME).await;
    assert_eq!(cdp.eval(LAYOUT_FAULTS).await, json!([]), "home at 390 px");
    shots.push(screenshot(&mut cdp, "home-390x844.png").await);
    cdp.eval(&format!("location.hash = '#/check/{acked}'; true"))
        .await;
    cdp.wait_for(
        "the check page on the phone",
        "document.querySelector('#check-ack') !== null",
    )
    .await;
    assert_eq!(cdp.eval(LAYOUT_FAULTS).await, json!([]), "check at 390 px");
    shots.push(screenshot(&mut cdp, "check-390x844.png").await);

    // Log in, then log out.
    cdp.eval("sessionStorage.setItem('bergamot.auth', 'Basic ' + btoa('demo:demo')); location.hash = '#/'; true")
        .await;
    cdp.wait_for(
        "the log-out button",
        "!document.querySelector('#logout-btn').hidden && document.querySelector('#who').textContent.startsWith('demo')",
    )
    .await;
    cdp.eval("document.querySelector('#logout-btn').click(); true")
        .await;
    cdp.wait_for(
        "logged out",
        "document.querySelector('#logout-btn').hidden && !document.querySelector('#login-btn').hidden && sessionStorage.getItem('bergamot.auth') === null",
    )
    .await;

    eprintln!(
        "screenshots in {}: {}",
        screenshot_dir().display(),
        shots
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    daemon.stop().await;
}

/// With `anonymous_read = false`, the logged-in page still gets live
/// updates: it fetches a short-lived ticket from `/api/whoami` and opens
/// `/ws?ticket=...` (a browser cannot send the Basic header there, and the
/// password never goes into a URL). Before, `/ws` answered 401 and the
/// page stayed "offline".
#[tokio::test(flavor = "multi_thread")]
async fn logged_in_ui_is_live_without_anonymous_read() {
    if !have_chromium() {
        return;
    }
    let site = "priv";
    let text = format!(
        "site = \"{site}\"\n[web]\nanonymous_read = false\n\n[[web.users]]\nname = \"op\"\n\
         password_hash = \"{}\"\nrole = \"operator\"\n\n[[group]]\nname = \"g\"\n\n\
         [[host]]\nname = \"h\"\ngroups = [\"g\"]\n\n[[host.trap]]\nname = \"events\"\n",
        common::cheap_hash("pw")
    );
    let config = Config::from_str_named("t.toml", &text).expect("config");
    let daemon = Daemon::start(&config, "127.0.0.1:0").await;
    let addr = daemon.addr;
    let trap = CheckId::trap(site, "h", "events");
    let (_browser, _profile, mut cdp) = open_browser().await;
    cdp.call(
        "Page.navigate",
        json!({ "url": format!("http://{addr}/app.js") }),
    )
    .await;
    cdp.eval("sessionStorage.setItem('bergamot.auth', 'Basic ' + btoa('op:pw')); true")
        .await;
    cdp.call(
        "Page.navigate",
        json!({ "url": format!("http://{addr}/#/check/{trap}") }),
    )
    .await;
    cdp.wait_for(
        "the check page",
        "document.querySelector('#check-output') !== null",
    )
    .await;
    cdp.wait_for(
        "live updates over a ticket",
        "document.querySelector('#conn').textContent === 'live'",
    )
    .await;
    let r = common::post(
        addr,
        &format!("/api/checks/{trap}/results"),
        Some(&common::basic("op", "pw")),
        &json!({ "status": "CRITICAL", "output": "arrived-live" }).to_string(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    cdp.wait_for(
        "the live result",
        "document.querySelector('#check-output') && document.querySelector('#check-output').textContent.includes('arrived-live')",
    )
    .await;
    daemon.stop().await;
}
