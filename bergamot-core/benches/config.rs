//! Config loading benchmark: 20,000 hosts x 30 services from templates
//! (600,000 checks plus 20,000 host checks), written as TOML files into a temp
//! directory, then loaded. Prints the load time and the peak RSS.
//!
//! Run: `cargo bench -p bergamot-core --bench config` (goals: < 2 s, < 1.5 GiB).

use bergamot_core::config::Config;
use std::fmt::Write as _;
use std::time::Instant;

const HOSTS: usize = 20_000;
const FILES: usize = 20;
const SERVICES_PER_TEMPLATE: usize = 10;
const GROUPS: usize = 200;
const LOCATIONS: usize = 50;

/// Peak resident set size in KiB (`VmHWM` of /proc/self/status).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time used by the process, all threads, user + system, in seconds
/// (`/proc/self/stat` fields 14 and 15, in clock ticks, taken as 100 per second).
/// The machine may be shared: CPU time says what loading costs, wall time what it took.
fn cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

fn common() -> String {
    let mut s = String::from(
        r##"site = "bench"

[defaults]
every = "5m"
retry_every = "1m"

[[command]]
name = "check_ping"
argv = ["/usr/lib/nagios/plugins/check_ping", "-H", "#{host.address}", "-w", "#{warn}", "-c", "#{crit}", "-p", "5"]
params = { warn = "100,20%", crit = "500,60%" }

[[command]]
name = "check_tcp"
argv = ["/usr/lib/nagios/plugins/check_tcp", "-H", "#{host.address}", "-p", "#{port}", "-t", "10"]

[[command]]
name = "check_disk"
argv = ["/usr/lib/nagios/plugins/check_disk", "-w", "#{warn}", "-c", "#{crit}", "-p", "#{path}"]
params = { warn = "20%", crit = "10%" }

[[command]]
name = "http"
engine = "http"
params = { url = "http://#{host.address}:#{port}#{path}", expect_status = [200, 301, 302] }
"##,
    );
    for g in 0..GROUPS {
        write!(s, "\n[[group]]\nname = \"g{g}\"\n").ok();
        if g >= 10 {
            writeln!(s, "parents = [\"g{}\", \"g{}\"]", g % 10, (g / 10) % 10).ok();
        }
    }
    for l in 0..LOCATIONS {
        write!(s, "\n[[location]]\nname = \"dc{l}\"\n").ok();
        if l >= 5 {
            writeln!(s, "parent = \"dc{}\"", l % 5).ok();
        }
    }
    s
}

fn templates() -> String {
    let mut s = String::new();
    // base: host check, ping-ish and tcp services; linux: disks; app: http.
    write!(
        s,
        "[[template]]\nname = \"base\"\nevery = \"1m\"\nfailed_after = 3\ngroups = [\"g1\"]\ncheck = {{ command = \"check_ping\" }}\n"
    ).ok();
    for i in 0..SERVICES_PER_TEMPLATE {
        write!(
            s,
            "\n[[template.service]]\nname = \"tcp{i}\"\ncommand = \"check_tcp\"\nparams = {{ port = {} }}\n",
            1000 + i
        ).ok();
    }
    write!(s, "\n[[template]]\nname = \"linux\"\nextends = [\"base\"]\nrecovers_after = 2\ngroups = [\"g2\"]\n").ok();
    for i in 0..SERVICES_PER_TEMPLATE {
        write!(
            s,
            "\n[[template.service]]\nname = \"disk{i}\"\ncommand = \"check_disk\"\nparams = {{ path = \"/srv/{i}\" }}\nevery = \"10m\"\n"
        ).ok();
    }
    write!(
        s,
        "\n[[template]]\nname = \"app\"\ngroups = [\"g3\"]\nparams = {{ port = 8080 }}\n"
    )
    .ok();
    for i in 0..SERVICES_PER_TEMPLATE {
        write!(
            s,
            "\n[[template.service]]\nname = \"http{i}\"\ncommand = \"http\"\nparams = {{ path = \"/app/{i}\" }}\ndepends_on = [\"#{{host.name}}/tcp{i}\"]\n"
        ).ok();
    }
    s
}

fn hosts(file: usize) -> String {
    let per_file = HOSTS / FILES;
    let mut s = String::with_capacity(per_file * 200);
    for h in file * per_file..(file + 1) * per_file {
        write!(
            s,
            "[[host]]\nname = \"host{h:05}\"\naddress = \"10.{}.{}.{}\"\nextends = [\"app\", \"linux\"]\nlocation = \"dc{}\"\ngroups = [\"g{}\"]\n\n",
            h / 65536,
            (h / 256) % 256,
            h % 256,
            h % LOCATIONS,
            h % GROUPS
        ).ok();
    }
    s
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gen_start = Instant::now();
    std::fs::write(dir.path().join("00-common.toml"), common()).expect("write");
    std::fs::write(dir.path().join("01-templates.toml"), templates()).expect("write");
    std::fs::create_dir(dir.path().join("hosts")).expect("mkdir");
    let mut bytes = 0;
    for f in 0..FILES {
        let text = hosts(f);
        bytes += text.len();
        std::fs::write(dir.path().join(format!("hosts/hosts-{f:02}.toml")), text).expect("write");
    }
    println!(
        "generated {HOSTS} hosts in {FILES} files ({:.1} MiB of host TOML) in {:.2} s",
        bytes as f64 / 1048576.0,
        gen_start.elapsed().as_secs_f64()
    );
    let rss_before = peak_rss_kib().unwrap_or(0);

    let cpu_start = cpu_secs().unwrap_or(0.0);
    let start = Instant::now();
    let config = match Config::load(dir.path()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("config failed to load: {e}");
            std::process::exit(1);
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs().unwrap_or(0.0) - cpu_start;
    let rss = peak_rss_kib().unwrap_or(0);

    let checks = config.model.checks.len();
    let services = checks - HOSTS;
    let deps: usize = config
        .model
        .checks
        .iter()
        .map(|c| c.dependencies.len())
        .sum();
    println!(
        "loaded {checks} checks ({HOSTS} hosts x {} services), {deps} dependencies, {} groups, {} locations",
        services / HOSTS,
        config.model.groups.len(),
        config.model.locations.len()
    );
    println!(
        "load time: {secs:.3} s wall, {cpu:.3} s CPU ({:.0} checks per CPU second)   goal < 2 s",
        checks as f64 / cpu
    );
    println!(
        "peak RSS (VmHWM): {:.1} MiB (before loading: {:.1} MiB)   goal < 1536 MiB",
        rss as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    assert_eq!(services, HOSTS * 3 * SERVICES_PER_TEMPLATE);
}
