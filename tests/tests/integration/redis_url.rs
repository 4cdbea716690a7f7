//! Redis URLs with credentials (`redis://user:pass@host`) and TLS (`rediss://`, with a private
//! CA and a client certificate for mutual TLS): the host
//! connects, consumes and commits through them, and a wrong password is a clear error that
//! never shows the password. The broker comes from [`broker::connect`], which picks Redis for
//! both schemes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use evhost::broker::{self, Broker};
use evhost_tests::{RedisServer, TestHost, events_of, example, fast_options, publish, wait_for};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the payment plugin on `broker` and checks that an auction turns into a payment.
async fn payment_flows_through(broker: Arc<dyn Broker>) {
    let host = TestHost::start(
        broker.clone(),
        fast_options("url-host"),
        vec![example("payment")],
    )
    .await;
    publish(
        broker.as_ref(),
        "AuctionEnded",
        json!({"auction_id": "a-1", "winning_bidder_id": "b-1", "winning_price": 99.5}),
    )
    .await;
    wait_for("the payment", TIMEOUT, || async {
        events_of(broker.as_ref(), "PaymentProcessed").await.len() == 1
    })
    .await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_and_password_in_the_url() {
    let server = RedisServer::start_with(&[
        "--requirepass",
        "default-secret",
        "--user",
        "evhost",
        "on",
        ">s3cret-pass",
        "~*",
        "&*",
        "+@all",
    ]);
    let port = server.port();
    let url = format!("redis://evhost:s3cret-pass@127.0.0.1:{port}");
    let broker = broker::connect(&url).await.expect("connect as evhost");
    broker.ping().await.expect("ping as evhost");
    payment_flows_through(broker).await;

    let wrong = format!("redis://evhost:wrong-pass@127.0.0.1:{port}");
    assert!(
        broker::connect(&wrong).await.is_err(),
        "a wrong password is refused"
    );
    // How the CLI shows that refusal (the URL redacted) is tested with the binary, in
    // tests/cli: a_wrong_password_is_refused_without_showing_it.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_url() {
    let certs = tempfile::tempdir().expect("temp dir");
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("self-signed certificate");
    let cert_path = certs.path().join("cert.pem");
    let key_path = certs.path().join("key.pem");
    std::fs::write(&cert_path, key.cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.key_pair.serialize_pem()).expect("write key");
    let tls_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
        .to_string();
    let cert = cert_path.to_str().expect("utf-8 path");
    let _server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        cert,
        "--tls-key-file",
        key_path.to_str().expect("utf-8 path"),
        "--tls-ca-cert-file",
        cert,
        "--tls-auth-clients",
        "no",
    ]);
    // `#insecure`: accept the self-signed certificate (a real deployment uses its CA).
    let url = format!("rediss://127.0.0.1:{tls_port}/#insecure");
    let broker = broker::connect(&url).await.expect("connect over TLS");
    broker.ping().await.expect("ping over TLS");
    payment_flows_through(broker).await;
}

/// A certificate authority, and certificates for 127.0.0.1 it signed, written as PEM files.
struct Authority {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Authority {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "evhost test CA");
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        Authority { dir, ca, ca_key }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Writes `<name>.pem` and `<name>.key`, a certificate for 127.0.0.1 signed by the CA.
    fn issue(&self, name: &str) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("signed certificate");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("write cert");
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("write key");
    }
}

/// A managed Redis with its own CA that requires client certificates (mutual TLS): the CA and
/// the client certificate are named in the URL; the server's certificate is verified (no
/// `#insecure`); without a client certificate the server refuses the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_private_ca() {
    let authority = Authority::new();
    authority.issue("server");
    authority.issue("client");
    let tls_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
        .to_string();
    let _server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &authority.path("server.pem"),
        "--tls-key-file",
        &authority.path("server.key"),
        "--tls-ca-cert-file",
        &authority.path("ca.pem"),
        "--tls-auth-clients",
        "yes",
    ]);
    let base = format!("rediss://127.0.0.1:{tls_port}/");
    let url = format!(
        "{base}?ssl_ca_certs={}&ssl_certfile={}&ssl_keyfile={}",
        authority.path("ca.pem"),
        authority.path("client.pem"),
        authority.path("client.key")
    );
    let broker = broker::connect(&url)
        .await
        .expect("connect with mutual TLS");
    broker.ping().await.expect("ping over mutual TLS");
    payment_flows_through(broker).await;

    // The server's certificate is checked against the CA: trusted, but no client certificate.
    let ca_only = format!("{base}?ssl_ca_certs={}", authority.path("ca.pem"));
    let refused = match broker::connect(&ca_only).await {
        Ok(broker) => broker.ping().await.err(),
        Err(err) => Some(err),
    };
    assert!(
        refused.is_some(),
        "a client without a certificate is refused"
    );
    // Without the CA, the system store does not trust the server.
    let untrusted = format!(
        "{base}?ssl_certfile={}&ssl_keyfile={}",
        authority.path("client.pem"),
        authority.path("client.key")
    );
    let refused = match broker::connect(&untrusted).await {
        Ok(broker) => broker.ping().await.err(),
        Err(err) => Some(err),
    };
    assert!(
        refused.is_some(),
        "a server certificate of an unknown CA is refused"
    );
}

/// Several URLs are seeds of a Redis Cluster: naming a standalone server with them is refused
/// with a clear error, while the same server alone is taken as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_of_a_standalone_server_are_refused_with_a_clear_error() {
    let server = RedisServer::start();
    let seeds = format!("{},{}", server.url(), server.url());
    let Err(err) = broker::connect(&seeds).await else {
        panic!("seeds of a standalone server were accepted");
    };
    assert!(
        matches!(err, broker::BrokerError::SeedsOfNoCluster),
        "{err}"
    );
    assert!(err.to_string().contains("not a cluster node"), "{err}");
    let broker = broker::connect(&server.url()).await.expect("one URL");
    assert!(!broker.is_cluster());
}
