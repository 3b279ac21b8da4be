//! A real SMTP server for the tests: Debian's aiosmtpd running the sink of
//! `bergamot-core/tests/data/notify/smtp_sink.py`.

use std::path::PathBuf;
use std::time::Duration;

/// The Python interpreter that has aiosmtpd, or `None` (the test skips;
/// with `BERGAMOT_REQUIRE_SERVICES=1` it fails instead).
pub fn python_with_aiosmtpd() -> Option<&'static str> {
    let found = ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        std::process::Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("BERGAMOT_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "python3-aiosmtpd is not installed and BERGAMOT_REQUIRE_SERVICES=1"
        );
        eprintln!("SKIPPED: python3-aiosmtpd is not installed");
    }
    found
}

/// The aiosmtpd sink; exits when dropped (its stdin closes).
pub struct Smtp {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl Smtp {
    /// Starts the sink and waits for its port.
    pub async fn start(python: &str) -> Smtp {
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../bergamot-core/tests/data/notify/smtp_sink.py");
        let mut child = tokio::process::Command::new(python)
            .args(["-W", "ignore"])
            .arg(script)
            .arg(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start smtp_sink.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("sink prints its port")
        .expect("read port");
        Smtp {
            port: line.trim().parse().expect("port"),
            dir,
            _child: child,
        }
    }

    /// `(recipient, subject, message id)` of every message so far.
    pub fn messages(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.dir.path())
            .expect("read sink dir")
            .flatten()
        {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
            for r in v["rcpt_tos"].as_array().expect("rcpt_tos") {
                out.push((
                    r.as_str().unwrap_or_default().to_string(),
                    v["subject"].as_str().unwrap_or_default().to_string(),
                    v["message_id"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        out
    }
}
