//! TLS in the runtime: the certificate files (PEM chains; PKCS#8 and SEC1 keys; a key and chain
//! in one file; every bad file named in its error), and the outbox over a TLS socket (frames
//! written directly, a backlog kept in order and drained once the peer reads, with records
//! left in rustls flushed).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use switchboard_hub::Text;
use switchboard_runtime::outbox::{Corks, Outbox};
use switchboard_runtime::tls::{CertificateFiles, Tls, TlsError};
use switchboard_runtime::Stream;
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};

use support::{expect_numbered, numbered, NoHub};

/// Write `contents` to `name` in `dir`; its path.
fn write(dir: &TempDir, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A `localhost` certificate signed by `ca`, and its key.
fn leaf(ca: &Ca) -> (Certificate, KeyPair) {
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert, key)
}

/// The contents of the DER element at the start of `der`, and what follows it.
fn der_element(der: &[u8]) -> (&[u8], &[u8]) {
    let (len, start) = match der[1] {
        n if n < 0x80 => (n as usize, 2),
        n => {
            let bytes = (n & 0x7f) as usize;
            let len = der[2..2 + bytes]
                .iter()
                .fold(0usize, |acc, b| acc << 8 | *b as usize);
            (len, 2 + bytes)
        }
    };
    (&der[start..start + len], &der[start + len..])
}

/// The SEC1 `ECPrivateKey` inside a PKCS#8 EC key: PKCS#8 is `SEQUENCE { version,
/// algorithm, OCTET STRING privateKey }`.
fn sec1_of(pkcs8: &[u8]) -> Vec<u8> {
    let (info, _) = der_element(pkcs8);
    let (_, rest) = der_element(info); // version
    let (_, rest) = der_element(rest); // algorithm
    let (private_key, _) = der_element(rest);
    private_key.to_vec()
}

fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| acc << 8 | *b as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                text.push('=');
            }
        }
    }
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn files(cert: &Path, key: &Path) -> CertificateFiles {
    CertificateFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    }
}

#[test]
fn chains_and_keys_load_in_every_pem_form() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (cert, key) = leaf(&ca);
    let chain = write(&dir, "chain.pem", cert.pem() + &ca.cert.pem());
    let pkcs8 = write(&dir, "pkcs8.pem", key.serialize_pem());
    let loaded = files(&chain, &pkcs8).load().expect("PKCS#8");
    assert_eq!(loaded.cert.len(), 2, "the chain is served whole");
    assert_eq!(
        &loaded.cert[0],
        cert.der(),
        "the server's certificate first"
    );

    let sec1 = write(
        &dir,
        "sec1.pem",
        pem("EC PRIVATE KEY", &sec1_of(&key.serialize_der())),
    );
    files(&chain, &sec1).load().expect("SEC1");

    let both = write(&dir, "both.pem", key.serialize_pem() + &cert.pem());
    files(&both, &both)
        .load()
        .expect("key and chain in one file");
}

#[test]
fn every_bad_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (cert, key) = leaf(&ca);
    let chain = write(&dir, "chain.pem", cert.pem());
    let key_file = write(&dir, "key.pem", key.serialize_pem());
    let missing = dir.path().join("missing.pem");
    let garbage = write(&dir, "garbage.pem", "hello");
    let broken = write(&dir, "broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    let (_, other_key) = leaf(&ca);
    let other = write(&dir, "other.pem", other_key.serialize_pem());

    let named = |e: TlsError, path: &Path| {
        let text = e.to_string();
        assert!(text.contains(&*path.to_string_lossy()), "{text}");
        e
    };
    let e = named(files(&missing, &key_file).load().unwrap_err(), &missing);
    assert!(matches!(e, TlsError::Read { .. }), "{e:?}");
    let e = named(files(&garbage, &key_file).load().unwrap_err(), &garbage);
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e:?}");
    let e = named(files(&broken, &key_file).load().unwrap_err(), &broken);
    assert!(matches!(e, TlsError::Pem { .. }), "{e:?}");
    let e = named(files(&chain, &garbage).load().unwrap_err(), &garbage);
    assert!(matches!(e, TlsError::NoKey { .. }), "{e:?}");
    let e = named(files(&chain, &chain).load().unwrap_err(), &chain);
    assert!(matches!(e, TlsError::NoKey { .. }), "{e:?}");
    let e = named(files(&chain, &other).load().unwrap_err(), &other);
    assert!(matches!(e, TlsError::Mismatch { .. }), "{e:?}");
}

type Client = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A server-side outbox over TLS and the `wss://` client at the other end.
async fn tls_pair(dir: &TempDir) -> (Arc<Outbox>, Client) {
    let ca = ca();
    let (cert, key) = leaf(&ca);
    let chain = write(dir, "chain.pem", cert.pem());
    let key = write(dir, "key.pem", key.serialize_pem());
    let tls = Tls::new(files(&chain, &key), Duration::from_secs(10)).unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let tls = connector.connect(name, tcp).await.unwrap();
        tokio_tungstenite::client_async(format!("wss://localhost:{}/", addr.port()), tls)
            .await
            .unwrap()
            .0
    });
    let (tcp, peer) = listener.accept().await.unwrap();
    let handshakes = Default::default();
    let stream = tls.accept(tcp, peer, "test", &handshakes).await.unwrap();
    assert!(matches!(stream, Stream::Tls(_)));
    assert_eq!(handshakes.completed(), 1);
    let mut stream = stream;
    support::accept_upgrade(&mut stream).await;
    let out = Outbox::over(stream, Arc::new(NoHub));
    (out, client.await.unwrap())
}

/// Hand a frame over as the hub task does; whether it was written at once.
fn send(out: &Arc<Outbox>, payload: Text) -> bool {
    let mut corks = Corks::default();
    let payload = corks.add(payload);
    corks.stage((), 0, payload);
    let written = corks.write(0, out).expect("taken on an open connection") > 0;
    corks.clear();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_backlog_drains_in_order_once_the_peer_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (out, mut client) = tls_pair(&dir).await;
    // A few frames while the client keeps up: written at once.
    for i in 0..3 {
        assert!(
            send(&out, numbered(i, 100)),
            "an idle TLS socket takes frames directly"
        );
    }
    expect_numbered(&mut client, 0, 3, 100).await;
    // Then frames until the socket and rustls push back, the client not reading.
    let size = 16 * 1024 + 7;
    let mut sent = 0;
    while send(&out, numbered(sent, size)) {
        sent += 1;
        assert!(sent < 100_000, "the socket never pushed back");
    }
    let total = sent + 1 + 64;
    for i in sent + 1..total {
        assert!(!send(&out, numbered(i, size)), "queued behind the backlog");
    }
    expect_numbered(&mut client, 0, total, size).await;
    tokio::time::timeout(Duration::from_secs(5), out.drained())
        .await
        .expect("the outbox reports drained");
    assert!(send(&out, numbered(total, 10)), "direct writes again");
    expect_numbered(&mut client, total, total + 1, 10).await;
}
