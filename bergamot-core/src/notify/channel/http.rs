//! One HTTP(S) POST, for the `webhook` and `slack` channels: the hyper
//! client the http executor uses, one connection per send, a timeout on the
//! whole exchange, the status classified for retrying.

use super::{redact_url, Settings};
use crate::notify::{Notification, SendError};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::borrow::Cow;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How much of a response body is kept for an error message.
const ERROR_BODY_LIMIT: usize = 4096;

/// Where to POST, parsed once; `shown` is the redacted URL for messages.
#[derive(Clone)]
pub(crate) struct Target {
    https: bool,
    host: String,
    port: u16,
    path_and_query: String,
    host_header: String,
    /// `Basic ...` from the URL's userinfo, if any.
    basic_auth: Option<HeaderValue>,
    /// The URL without userinfo and query (and path, if asked).
    pub(crate) shown: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Target {
    /// The channel's required `url` setting as a target; `None`, with the
    /// problem recorded, when it is missing or bad.
    pub(crate) fn from_settings(s: &mut Settings<'_>, hide_path: bool) -> Option<Target> {
        let url = s.required_string("url")?;
        match Target::parse(&url, hide_path) {
            Ok(t) => Some(t),
            Err(e) => {
                s.problem("url", e);
                None
            }
        }
    }

    /// Where `n` goes: the recipient's own `url` setting for this (`kind`)
    /// channel if the contact has one, else `self`.
    pub(crate) fn for_recipient(
        &self,
        n: &Notification,
        kind: &str,
        hide_path: bool,
    ) -> Result<Cow<'_, Target>, SendError> {
        match n.recipient.settings.get("url") {
            None => Ok(Cow::Borrowed(self)),
            Some(url) => Target::parse(url, hide_path).map(Cow::Owned).map_err(|e| {
                SendError::permanent(format!("contact {}'s {kind} url: {e}", n.recipient.name))
            }),
        }
    }

    /// Parses `url` (`http://` or `https://`); errors show only the redacted URL.
    pub(crate) fn parse(url: &str, hide_path: bool) -> Result<Target, String> {
        let shown = redact_url(url, hide_path);
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|_| format!("{shown:?} is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{shown:?} must start with http:// or https://")),
        };
        if https && !cfg!(feature = "https") {
            return Err(format!(
                "{shown:?}: https URLs need bergamot-core's `https` cargo feature"
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{shown:?} has no host"))?;
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{shown:?} has no host"))?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let basic_auth = match authority.as_str().rsplit_once('@') {
            None => None,
            Some((userinfo, _)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .map(|c| c.into_owned())
                        .map_err(|_| format!("{shown:?}: the user or password is not UTF-8"))
                };
                let token = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    decode(user)?,
                    decode(pass)?
                ));
                let mut v = HeaderValue::from_str(&format!("Basic {token}"))
                    .map_err(|_| format!("{shown:?}: bad user or password"))?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let default_port = if https { 443 } else { 80 };
        let host_header = if port == default_port {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            https,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            path_and_query: uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_string(),
            host_header,
            basic_auth,
            shown,
        })
    }
}

/// Aborts the connection driver when the send ends or times out.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends POSTs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Poster {
    #[cfg(feature = "https")]
    tls: tokio_rustls::TlsConnector,
}

impl Poster {
    pub(crate) fn new() -> Self {
        Poster {
            #[cfg(feature = "https")]
            tls: crate::exec::http::tls::default_connector(),
        }
    }

    /// POSTs `body` as `application/json` with `headers`; `Ok` on 2xx.
    ///
    /// 408, 429, 5xx, a timeout or a connection/TLS error are transient;
    /// any other status (3xx are not followed, 4xx) is permanent.
    pub(crate) async fn post(
        &self,
        what: &str,
        target: &Target,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<(), SendError> {
        match tokio::time::timeout(timeout, self.exchange(target, headers, body)).await {
            Err(_) => Err(SendError::transient(format!(
                "{what} POST {}: no response within {}s",
                target.shown,
                timeout.as_secs_f64()
            ))),
            Ok(Err(why)) => Err(SendError::transient(format!(
                "{what} POST {}: {why}",
                target.shown
            ))),
            Ok(Ok((status, text))) => classify(what, &target.shown, status, &text),
        }
    }

    async fn exchange(
        &self,
        t: &Target,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<(StatusCode, String), String> {
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", t.host, t.port))?;
        tcp.set_nodelay(true).ok();
        if t.https {
            self.exchange_tls(tcp, t, headers, body).await
        } else {
            exchange(tcp, t, headers, body).await
        }
    }

    #[cfg(feature = "https")]
    async fn exchange_tls(
        &self,
        tcp: TcpStream,
        t: &Target,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<(StatusCode, String), String> {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(t.host.clone())
            .map_err(|e| format!("{:?} is not a valid TLS server name: {e}", t.host))?;
        let stream = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {} failed: {e}", t.host))?;
        exchange(stream, t, headers, body).await
    }

    #[cfg(not(feature = "https"))]
    async fn exchange_tls(
        &self,
        _tcp: TcpStream,
        _t: &Target,
        _headers: &[(HeaderName, HeaderValue)],
        _body: Bytes,
    ) -> Result<(StatusCode, String), String> {
        Err("https URLs need bergamot-core's `https` cargo feature".into())
    }
}

async fn exchange<S>(
    stream: S,
    t: &Target,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<(StatusCode, String), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        conn.await.ok();
    }));
    let mut request = Request::builder()
        .method(hyper::Method::POST)
        .uri(t.path_and_query.as_str())
        .header(hyper::header::HOST, t.host_header.as_str())
        .header(hyper::header::USER_AGENT, "bergamot-notify")
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(auth) = &t.basic_auth {
        request = request.header(hyper::header::AUTHORIZATION, auth.clone());
    }
    for (name, value) in headers {
        request = request.header(name, value.clone());
    }
    let request = request
        .body(Full::new(body))
        .map_err(|_| "cannot build the request".to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_LIMIT {
        match body.frame().await {
            None | Some(Err(_)) => break,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = ERROR_BODY_LIMIT - bytes.len();
                    bytes.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// 2xx is sent; 408, 429 and 5xx are worth retrying; the rest is not.
fn classify(what: &str, shown: &str, status: StatusCode, body: &str) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let mut reason = format!("{what} POST {shown} answered {status}");
    let first = body.lines().map(str::trim).find(|l| !l.is_empty());
    if let Some(line) = first {
        let line: String = line.chars().take(200).collect();
        reason.push_str(": ");
        reason.push_str(&line);
    }
    if status.is_redirection() {
        reason.push_str(" (redirects are not followed)");
    }
    let transient = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    Err(if transient {
        SendError::transient(reason)
    } else {
        SendError::permanent(reason)
    })
}

/// Parses the `headers` setting into header pairs (values marked sensitive).
pub(crate) fn parse_headers(
    map: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, (String, String)> {
    let mut out = Vec::new();
    for (k, v) in map {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| (k.clone(), format!("{k:?} is not an HTTP header name")))?;
        let mut value = HeaderValue::from_str(v)
            .map_err(|_| (k.clone(), "is not a valid HTTP header value".to_string()))?;
        value.set_sensitive(true);
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let c = |code: u16| {
            classify(
                "webhook",
                "http://h/",
                StatusCode::from_u16(code).expect("code"),
                "",
            )
        };
        assert!(c(200).is_ok());
        assert!(c(204).is_ok());
        for code in [500, 502, 503, 408, 429] {
            assert!(!c(code).expect_err("fails").permanent, "{code}");
        }
        for code in [400, 401, 403, 404, 410, 301] {
            assert!(c(code).expect_err("fails").permanent, "{code}");
        }
    }

    #[test]
    fn userinfo_becomes_basic_auth_and_is_not_shown() {
        let t =
            Target::parse("http://bob:s%40cret@example.com:8081/h?token=x", false).expect("parses");
        assert_eq!(t.shown, "http://example.com:8081/h?…");
        assert_eq!(t.host_header, "example.com:8081");
        assert_eq!(t.path_and_query, "/h?token=x");
        let auth = t.basic_auth.clone().expect("auth");
        let want = base64::engine::general_purpose::STANDARD.encode("bob:s@cret");
        assert_eq!(auth.to_str().expect("ascii"), format!("Basic {want}"));
        assert!(!format!("{t:?}").contains("cret"));
        let e = Target::parse("ftp://u:pw@h/?k=v", false).expect_err("bad scheme");
        assert!(!e.contains("pw") && !e.contains("k=v"), "{e}");
    }
}
