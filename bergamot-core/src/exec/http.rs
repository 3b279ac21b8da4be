//! The `http` engine: one HTTP(S) request, checked for status, body, response
//! time and (for https) certificate expiry.

use super::{
    effective_timeout, new_result, param_error, param_str, param_u64, time_perfdata, time_status,
    Executor, DEFAULT_TIMEOUT,
};
use crate::model::{CheckResult, Perfdata, Status};
use crate::queue::ExecuteCheck;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::fmt::Write as _;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How much of a response body is read (for `body_contains`); the rest is
/// not downloaded.
const BODY_LIMIT: usize = 1024 * 1024;

/// Sends one HTTP request and judges the response.
///
/// Parameters:
/// - `url` (required): `http://` or `https://` (the latter needs the default
///   cargo feature `https`);
/// - `method`: default `GET`;
/// - `expect_status`: accepted status codes: a number (`200`), a string of
///   codes and ranges (`"200,204,300-399"`) or a list of those; default
///   `200-399`. Another status is CRITICAL;
/// - `body_contains`: a string the body (first MiB) must contain, else CRITICAL;
/// - `warn_ms` / `crit_ms`: response time thresholds (connect to last byte);
/// - `cert_warn_days` / `cert_crit_days` (https): WARNING / CRITICAL when the
///   server certificate expires in fewer days.
///
/// Perfdata: `time` (ms), `size` (bytes read), `cert_days` (https).
/// Redirects are not followed (3xx is within the default accepted range).
/// One connection per check (HTTP/1.1, no pooling): the time measured is
/// what a new client sees, connect and TLS handshake included.
/// A refused or failed connection, failed TLS handshake or broken response is
/// CRITICAL naming the error; no complete response within the timeout is
/// TIMEOUT; a bad parameter is ERROR naming it.
#[derive(Clone)]
pub struct HttpExecutor {
    default_timeout: Duration,
    #[cfg(feature = "https")]
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for HttpExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpExecutor")
            .field("default_timeout", &self.default_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for HttpExecutor {
    fn default() -> Self {
        HttpExecutor::new()
    }
}

/// Accepted status codes, as inclusive ranges.
#[derive(Debug, Clone, PartialEq)]
struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code))
    }

    fn parse_into(text: &str, out: &mut Vec<(u16, u16)>) -> Result<(), String> {
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let code = |s: &str| {
                s.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (100..=999).contains(c))
                    .ok_or_else(|| {
                        format!("parameter \"expect_status\": {part:?} is not a status code or range like 200-399")
                    })
            };
            let (lo, hi) = (code(lo)?, code(hi)?);
            if lo > hi {
                return Err(format!(
                    "parameter \"expect_status\": range {part:?} is empty"
                ));
            }
            out.push((lo, hi));
        }
        Ok(())
    }

    fn from_param(value: Option<&serde_json::Value>) -> Result<StatusSet, String> {
        let mut ranges = Vec::new();
        let mut add = |v: &serde_json::Value| {
            match v {
            serde_json::Value::Number(n) => {
                let text = n.to_string();
                StatusSet::parse_into(&text, &mut ranges)
            }
            serde_json::Value::String(s) => StatusSet::parse_into(s, &mut ranges),
            other => Err(format!(
                "parameter \"expect_status\" must be a code, a string like \"200-399\" or a list, got {other}"
            )),
        }
        };
        match value {
            None | Some(serde_json::Value::Null) => return Ok(StatusSet(vec![(200, 399)])),
            Some(serde_json::Value::Array(items)) => {
                for item in items {
                    add(item)?;
                }
            }
            Some(v) => add(v)?,
        }
        if ranges.is_empty() {
            return Err("parameter \"expect_status\" lists no status code".into());
        }
        Ok(StatusSet(ranges))
    }
}

impl std::fmt::Display for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// The parameters of one http check.
#[derive(Debug)]
struct Params {
    uri: Uri,
    https: bool,
    host: String,
    port: u16,
    method: Method,
    expect: StatusSet,
    body_contains: Option<String>,
    warn_ms: Option<u64>,
    crit_ms: Option<u64>,
    cert_warn_days: Option<u64>,
    cert_crit_days: Option<u64>,
}

impl Params {
    fn parse(execute: &ExecuteCheck) -> Result<Params, String> {
        let url = param_str(execute, "url")?.ok_or("parameter \"url\" is missing")?;
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("parameter \"url\": {url:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "parameter \"url\": {url:?} must start with http:// or https://"
                ))
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("parameter \"url\": {url:?} has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let method = param_str(execute, "method")?.unwrap_or("GET");
        let method = Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("parameter \"method\": {method:?} is not an HTTP method"))?;
        Ok(Params {
            expect: StatusSet::from_param(execute.params.get("expect_status"))?,
            body_contains: param_str(execute, "body_contains")?.map(str::to_string),
            warn_ms: param_u64(execute, "warn_ms")?,
            crit_ms: param_u64(execute, "crit_ms")?,
            cert_warn_days: param_u64(execute, "cert_warn_days")?,
            cert_crit_days: param_u64(execute, "cert_crit_days")?,
            uri,
            https,
            host,
            port,
            method,
        })
    }
}

/// What came back.
struct Response {
    status: StatusCode,
    body: Vec<u8>,
    /// Days until the server certificate expires (https only).
    cert_days: Option<i64>,
}

/// Why no response came back; every one is CRITICAL.
struct Failure(String);

/// Aborts a spawned task when dropped (the connection driver, when the
/// check ends or times out).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the request over an open stream and reads the response.
async fn exchange<S>(stream: S, p: &Params) -> Result<(StatusCode, Vec<u8>), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure(format!("HTTP handshake failed: {e}")))?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        conn.await.ok();
    }));
    let path = p
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let default_port = if p.https { 443 } else { 80 };
    let host_header = match (p.uri.host(), p.port) {
        (Some(h), port) if port != default_port => format!("{h}:{port}"),
        (Some(h), _) => h.to_string(),
        (None, _) => p.host.clone(),
    };
    let request = Request::builder()
        .method(p.method.clone())
        .uri(path)
        .header(hyper::header::HOST, host_header)
        .header(hyper::header::USER_AGENT, "bergamot-http-check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure(format!("cannot build request: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Failure(format!("request failed: {e}")))?;
    let status = response.status();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while bytes.len() < BODY_LIMIT {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(Failure(format!("cannot read response body: {e}"))),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = BODY_LIMIT - bytes.len();
                    bytes.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
    }
    Ok((status, bytes))
}

impl HttpExecutor {
    /// An executor with a 30 s default timeout and, with the `https` feature,
    /// the Mozilla root certificates (webpki-roots).
    pub fn new() -> Self {
        HttpExecutor {
            default_timeout: DEFAULT_TIMEOUT,
            #[cfg(feature = "https")]
            tls: tls::default_connector(),
        }
    }

    /// Sets the timeout used for executes that carry none (zero).
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Uses this rustls client configuration for https (e.g. a private CA).
    #[cfg(feature = "https")]
    pub fn with_tls_config(
        mut self,
        config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    ) -> Self {
        self.tls = tokio_rustls::TlsConnector::from(config);
        self
    }

    async fn fetch(&self, p: &Params) -> Result<Response, Failure> {
        let tcp = TcpStream::connect((p.host.as_str(), p.port))
            .await
            .map_err(|e| Failure(format!("cannot connect to {}:{}: {e}", p.host, p.port)))?;
        tcp.set_nodelay(true).ok();
        if p.https {
            self.fetch_tls(tcp, p).await
        } else {
            let (status, body) = exchange(tcp, p).await?;
            Ok(Response {
                status,
                body,
                cert_days: None,
            })
        }
    }

    #[cfg(feature = "https")]
    async fn fetch_tls(&self, tcp: TcpStream, p: &Params) -> Result<Response, Failure> {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(p.host.clone())
            .map_err(|e| Failure(format!("{:?} is not a valid TLS server name: {e}", p.host)))?;
        let stream = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| Failure(format!("TLS handshake with {} failed: {e}", p.host)))?;
        let cert_days = {
            let (_, conn) = stream.get_ref();
            conn.peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|der| tls::days_left(der.as_ref(), Utc::now().timestamp()))
        };
        let (status, body) = exchange(stream, p).await?;
        Ok(Response {
            status,
            body,
            cert_days,
        })
    }

    #[cfg(not(feature = "https"))]
    async fn fetch_tls(&self, _tcp: TcpStream, _p: &Params) -> Result<Response, Failure> {
        Err(Failure(
            "https URLs need bergamot-core's `https` cargo feature".into(),
        ))
    }
}

#[cfg(feature = "https")]
pub(crate) mod tls {
    use std::sync::Arc;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    /// A connector trusting the Mozilla roots, with the ring provider chosen
    /// explicitly (so another crate enabling a second provider cannot make
    /// rustls' process default ambiguous).
    pub(crate) fn default_connector() -> tokio_rustls::TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// Whole days from `now` (unix seconds) until the certificate's notAfter;
    /// negative once expired. None if the certificate does not parse.
    pub(super) fn days_left(der: &[u8], now: i64) -> Option<i64> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let not_after = cert.validity().not_after.timestamp();
        Some((not_after - now).div_euclid(86_400))
    }
}

#[async_trait]
impl Executor for HttpExecutor {
    fn engine(&self) -> &str {
        "http"
    }

    async fn execute(&self, execute: &ExecuteCheck) -> CheckResult {
        let executed_at = Utc::now();
        let started = Instant::now();
        let p = match Params::parse(execute) {
            Ok(p) => p,
            Err(e) => return param_error(execute, "http", e),
        };
        let timeout = effective_timeout(execute, self.default_timeout);
        let url = p.uri.to_string();
        let response = match tokio::time::timeout(timeout, self.fetch(&p)).await {
            Err(_) => {
                return new_result(
                    execute,
                    Status::Timeout,
                    format!(
                        "HTTP {} {url}: no complete response after {}s",
                        p.method,
                        timeout.as_secs_f64()
                    ),
                    executed_at,
                    started,
                )
            }
            Ok(Err(Failure(why))) => {
                return new_result(
                    execute,
                    Status::Critical,
                    format!("HTTP CRITICAL - {url}: {why}"),
                    executed_at,
                    started,
                )
            }
            Ok(Ok(r)) => r,
        };
        let elapsed = started.elapsed();

        let mut status = Status::Ok;
        let mut notes = String::new();
        let mut note = |s: Status, text: String| {
            status = status.max(s);
            write!(notes, "; {text}").ok();
        };
        if !p.expect.contains(response.status.as_u16()) {
            note(
                Status::Critical,
                format!("unexpected status (expected {})", p.expect),
            );
        }
        if let Some(needle) = &p.body_contains {
            let body = String::from_utf8_lossy(&response.body);
            if !body.contains(needle.as_str()) {
                note(
                    Status::Critical,
                    format!("body does not contain {needle:?}"),
                );
            }
        }
        let time_st = time_status(elapsed, p.warn_ms, p.crit_ms);
        if time_st != Status::Ok {
            let limit = if time_st == Status::Critical {
                p.crit_ms
            } else {
                p.warn_ms
            };
            note(
                time_st,
                format!("response time over {} ms", limit.unwrap_or(0)),
            );
        }
        if let Some(days) = response.cert_days {
            let below =
                |t: Option<u64>| t.is_some_and(|t| days < i64::try_from(t).unwrap_or(i64::MAX));
            if days < 0 {
                note(
                    Status::Critical,
                    format!("certificate expired {} days ago", -days),
                );
            } else if below(p.cert_crit_days) {
                note(
                    Status::Critical,
                    format!("certificate expires in {days} days"),
                );
            } else if below(p.cert_warn_days) {
                note(
                    Status::Warning,
                    format!("certificate expires in {days} days"),
                );
            }
        }

        let output = format!(
            "HTTP {status} - {} {} in {:.3} ms, {} bytes{notes}",
            response.status.as_u16(),
            response.status.canonical_reason().unwrap_or(""),
            elapsed.as_secs_f64() * 1000.0,
            response.body.len(),
        );
        let mut r = new_result(execute, status, output, executed_at, started);
        #[allow(clippy::cast_precision_loss)]
        let size = response.body.len() as f64;
        let mut perfdata = vec![
            time_perfdata("time", elapsed, p.warn_ms, p.crit_ms),
            Perfdata {
                label: "size".into(),
                value: Some(size),
                uom: "B".into(),
                warn: None,
                crit: None,
                min: Some(0.0),
                max: None,
            },
        ];
        if let Some(days) = response.cert_days {
            #[allow(clippy::cast_precision_loss)]
            perfdata.push(Perfdata {
                label: "cert_days".into(),
                value: Some(days as f64),
                uom: String::new(),
                // Nagios range syntax: `30:` alerts below 30.
                warn: p.cert_warn_days.map(|d| format!("{d}:")),
                crit: p.cert_crit_days.map(|d| format!("{d}:")),
                min: None,
                max: None,
            });
        }
        r.perfdata = perfdata.into();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::tests::assert_bad_params;
    use serde_json::json;

    #[test]
    fn expect_status_forms() {
        let set = |v: serde_json::Value| StatusSet::from_param(Some(&v));
        assert_eq!(StatusSet::from_param(None), Ok(StatusSet(vec![(200, 399)])));
        assert_eq!(set(json!(204)), Ok(StatusSet(vec![(204, 204)])));
        assert_eq!(
            set(json!("200, 300-302")),
            Ok(StatusSet(vec![(200, 200), (300, 302)]))
        );
        assert_eq!(
            set(json!([200, "404"])),
            Ok(StatusSet(vec![(200, 200), (404, 404)]))
        );
        for bad in [
            json!("ok"),
            json!("300-200"),
            json!(""),
            json!([]),
            json!(true),
            json!(70000),
        ] {
            let e = set(bad.clone()).expect_err("bad expect_status");
            assert!(e.contains("\"expect_status\""), "{bad}: {e}");
        }
        let s = set(json!("200,300-399")).expect("valid");
        assert!(s.contains(200) && s.contains(301) && !s.contains(201));
        assert_eq!(s.to_string(), "200,300-399");
    }

    #[tokio::test]
    async fn bad_params_are_errors_naming_them() {
        let cases = [
            (json!({}), "\"url\""),
            (json!({"url": 5}), "\"url\""),
            (json!({"url": "ftp://x/"}), "\"url\""),
            (json!({"url": "not a url"}), "\"url\""),
            (json!({"url": "http://x/", "method": "G E T"}), "\"method\""),
            (json!({"url": "http://x/", "warn_ms": -5}), "\"warn_ms\""),
            (
                json!({"url": "http://x/", "expect_status": "x"}),
                "\"expect_status\"",
            ),
            (
                json!({"url": "http://x/", "body_contains": 1}),
                "\"body_contains\"",
            ),
        ];
        assert_bad_params(&HttpExecutor::new(), "http", &cases).await;
    }
}
