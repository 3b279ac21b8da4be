//! Acceptance tests of https checks: a TLS server on 127.0.0.1 with
//! certificates from a test CA generated at test time.
#![cfg(feature = "https")]

mod common;

use bergamot_core::exec::{Executor, HttpExecutor};
use bergamot_core::model::{CheckResult, Status};
use bergamot_core::queue::ExecuteCheck;
use chrono::{Datelike, Utc};
use common::{assert_result, perfdata, read_head, respond};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

fn execute(params: serde_json::Value) -> ExecuteCheck {
    common::execute("http", params, Duration::from_secs(10))
}

fn date(days_from_now: i64) -> time::OffsetDateTime {
    let d = Utc::now() + chrono::Duration::days(days_from_now);
    rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
}

struct Pki {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A CA and a `localhost` certificate valid from `from` to `until` days
/// from now.
fn pki(from: i64, until: i64) -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.not_before = date(-3650);
    ca_params.not_after = date(3650);
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");

    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.not_before = date(from);
    params.not_after = date(until);
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
    Pki {
        ca: ca.der().clone(),
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// An https server answering every request with 200 "secure hello".
async fn server(pki: &Pki) -> u16 {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                if read_head(&mut tls).await.is_some() {
                    respond(&mut tls, "200 OK", "secure hello").await;
                }
            });
        }
    });
    port
}

fn client_trusting(ca: &CertificateDer<'static>) -> HttpExecutor {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("add test CA");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    HttpExecutor::new().with_tls_config(Arc::new(config))
}

async fn check(pki: &Pki, extra: serde_json::Value) -> CheckResult {
    let port = server(pki).await;
    let mut params = serde_json::json!({
        "url": format!("https://localhost:{port}/"),
        "body_contains": "secure hello",
        "cert_warn_days": 30,
        "cert_crit_days": 7,
    });
    if let (Some(p), Some(extra)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(extra.clone());
    }
    client_trusting(&pki.ca).execute(&execute(params)).await
}

fn cert_days(r: &CheckResult) -> f64 {
    perfdata(r, "cert_days").value.expect("cert_days value")
}

#[tokio::test]
async fn https_ok_with_a_long_valid_certificate() {
    let r = check(&pki(-1, 400), serde_json::json!({})).await;
    assert_eq!(r.status, Status::Ok, "{}", r.output);
    assert!(
        (398.0..=400.0).contains(&cert_days(&r)),
        "{}",
        cert_days(&r)
    );
    let p = perfdata(&r, "cert_days");
    assert_eq!(
        (p.warn.as_deref(), p.crit.as_deref()),
        (Some("30:"), Some("7:"))
    );
}

#[tokio::test]
async fn https_certificate_expiring_soon_warns() {
    let r = check(&pki(-1, 20), serde_json::json!({})).await;
    assert_result(&r, Status::Warning, &["certificate expires in"]);
}

#[tokio::test]
async fn https_certificate_expiring_very_soon_is_critical() {
    let r = check(&pki(-1, 3), serde_json::json!({})).await;
    assert_result(&r, Status::Critical, &["certificate expires in"]);
}

#[tokio::test]
async fn https_expired_certificate_is_critical() {
    let r = check(&pki(-30, -2), serde_json::json!({})).await;
    assert_result(
        &r,
        Status::Critical,
        &["TLS handshake with localhost failed"],
    );
}

#[tokio::test]
async fn https_untrusted_certificate_is_critical() {
    let p = pki(-1, 400);
    let port = server(&p).await;
    // The default executor trusts only the public roots, not the test CA.
    let r = HttpExecutor::new()
        .execute(&execute(
            serde_json::json!({"url": format!("https://localhost:{port}/")}),
        ))
        .await;
    assert_result(
        &r,
        Status::Critical,
        &["TLS handshake with localhost failed"],
    );
}
