//! Security headers on every response of the web node. Styles may be
//! inline (the UI sets a few `style` attributes); scripts may not.

use warp::http::header::{HeaderName, HeaderValue};

/// The Content-Security-Policy: the UI loads its own script and style only,
/// talks to its own origin (and its websocket), and may not be framed.
pub(crate) const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers (CSP, `nosniff`, no framing, no referrer)
/// unless a handler set one itself.
pub(crate) fn secure(mut resp: warp::reply::Response) -> warp::reply::Response {
    let h = resp.headers_mut();
    let set = [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
    ];
    for (name, value) in set {
        let name = HeaderName::from_static(name);
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    resp
}
