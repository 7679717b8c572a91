//! The webhook's TLS: the versions it speaks, and a certificate rotated
//! under a client that is already connected.

mod common;
mod webhook_harness;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ProtocolVersion, SupportedProtocolVersion};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use webhook_harness::{Server, create, review};

/// One TLS connection to the webhook, as a client that trusts the test CA.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// The certificate the server showed.
    peer: Vec<u8>,
    version: ProtocolVersion,
}

async fn connect(server: &Server, versions: &[&'static SupportedProtocolVersion]) -> Connection {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(server.pki.ca_der()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.webhook)
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(server.webhook.ip().into()), tcp)
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    let peer = session.peer_certificates().unwrap()[0].to_vec();
    let version = session.protocol_version().unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    Connection {
        sender,
        peer,
        version,
    }
}

impl Connection {
    /// Validates a compliant pod on this connection.
    async fn validate(&mut self) -> Value {
        let pod = common::yaml(include_str!("data/typical-pod.yaml"));
        let body = review(&create("agyn", pod)).to_string();
        let request = hyper::Request::post("/validate?timeout=10s")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_spoken() {
    let server = Server::start(None, &[]);
    for (version, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let mut connection = connect(&server, &[version]).await;
        assert_eq!(connection.version, expected);
        assert_eq!(connection.validate().await["response"]["allowed"], true);
    }
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_without_dropping_open_ones() {
    let mut server = Server::start(None, &[]);
    let all = rustls::ALL_VERSIONS;
    let mut open = connect(&server, all).await;
    assert_eq!(open.validate().await["response"]["allowed"], true);

    let rotated = server.pki.issue(&server.dir, "agyn-admission-rotated");
    assert_ne!(open.peer, rotated);
    server.wait_for_log(Duration::from_secs(10), |e| {
        e["message"] == "certificate reloaded"
    });

    // The connection opened before the rotation goes on working...
    assert_eq!(open.validate().await["response"]["allowed"], true);
    // ...and a new one is shown the new certificate.
    let mut fresh = connect(&server, all).await;
    assert_eq!(fresh.peer, rotated);
    assert_eq!(fresh.validate().await["response"]["allowed"], true);
}
