//! TLS, over the real `switchboard` binary: a CA and leaf certificates made here (rcgen), written
//! to a temporary directory and given with `--tls-cert` / `--tls-key`; clients that trust only
//! that CA. `wss://` relays and `https://` answers on the same port, on both transports; plain
//! `ws://` and clients trusting another CA fail the handshake; SIGHUP swaps the certificate for
//! new handshakes while open connections go on; a silent client is closed at the handshake
//! timeout; bad files stop the start with an error naming the file.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::processes::{free_port, BIN};
use crate::support::{notice, WAIT};

/// A WebSocket over TLS.
type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A certificate authority the test clients trust.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A server certificate for `localhost` and 127.0.0.1 with `serial` and common name `name`.
    fn leaf(&self, serial: u64, name: &str) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.serial_number = Some(SerialNumber::from(serial));
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf { cert, key }
    }

    /// A client configuration that trusts this CA only.
    fn client(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

struct Leaf {
    cert: Certificate,
    key: KeyPair,
}

impl Leaf {
    fn der(&self) -> &CertificateDer<'static> {
        self.cert.der()
    }

    /// Write the chain (leaf, then `ca` as the intermediate a real chain would carry) and the
    /// PKCS#8 key.
    fn write(&self, ca: &Ca, cert: &Path, key: &Path) {
        std::fs::write(cert, self.cert.pem() + &ca.cert.pem()).unwrap();
        std::fs::write(key, self.key.serialize_pem()).unwrap();
    }
}

/// A TLS-only `switchboard` serving laptimes on `port` with `extra` flags; killed when dropped.
fn tls_node(port: u16, cert: &Path, key: &Path, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["--systems", "laptimes", "--bind", "127.0.0.1"])
        .args(["--laptimes-port", &port.to_string()])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .args(extra)
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the switchboard binary")
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A TLS connection to `addr` as `localhost`, trusting what `config` trusts.
async fn tls_connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let connect = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("a valid name");
        TlsConnector::from(config.clone()).connect(name, tcp).await
    };
    tokio::time::timeout(WAIT, connect)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Wait (bounded) until the node completes TLS handshakes.
async fn wait_tls(addr: SocketAddr, config: &Arc<ClientConfig>) {
    let started = Instant::now();
    loop {
        match tls_connect(addr, config).await {
            Ok(_) => return,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "no TLS on {addr}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server certificate a handshake presented.
fn presented(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("a server certificate")[0]
        .clone()
}

/// A `wss://` connection on `path`, with the certificate the server presented.
async fn wss(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    path: &str,
) -> (Wss, CertificateDer<'static>) {
    let tls = tls_connect(addr, config).await.expect("a TLS handshake");
    let cert = presented(&tls);
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("the upgrade is answered in time")
        .expect("the upgrade is accepted");
    (ws, cert)
}

async fn next_text(ws: &mut Wss) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the stream is open")
            .expect("no socket error");
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Two laptimes clients: `b` is registered once it answers (a bad frame gets an error reply),
/// then a notice from `a` reaches `b`.
async fn relay(a: &mut Wss, b: &mut Wss) {
    b.send(Message::text("{}")).await.unwrap();
    next_text(b).await;
    let n = notice("times");
    a.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(next_text(b).await, n);
}

/// `GET path` over `https://`: the status and the body.
async fn https_get(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> (u16, String) {
    let mut tls = tls_connect(addr, config).await.expect("a TLS handshake");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let read = async {
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        // The server ends with close_notify; a reset after it is no concern here.
        let _ = tls.read_to_end(&mut buf).await;
        buf
    };
    let buf = tokio::time::timeout(WAIT, read)
        .await
        .expect("an answer in time");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The value of the `/metrics` sample `sample` (name and labels, as rendered).
async fn metric(addr: SocketAddr, config: &Arc<ClientConfig>, sample: &str) -> u64 {
    let (status, body) = https_get(addr, config, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{sample} missing from /metrics:\n{body}"))
}

/// Poll `/metrics` until `sample` is at least `min` (bounded).
async fn wait_metric(addr: SocketAddr, config: &Arc<ClientConfig>, sample: &str, min: u64) {
    let started = Instant::now();
    loop {
        let n = metric(addr, config, sample).await;
        if n >= min {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{sample} stayed at {n}, below {min}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn failures(reason: &str) -> String {
    format!("switchboard_tls_handshake_failures_total{{system=\"laptimes\",reason=\"{reason}\"}}")
}

async fn relay_wss_https_and_refusals(transport: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    let ca = Ca::new("switchboard test CA");
    ca.leaf(1, "switchboard one").write(&ca, &cert, &key);
    let port = free_port();
    let _node = tls_node(port, &cert, &key, &["--transport", transport]);
    let (addr, client) = (local(port), ca.client());
    wait_tls(addr, &client).await;

    let (mut a, _) = wss(addr, &client, "/").await;
    let (mut b, _) = wss(addr, &client, "/any/path").await;
    relay(&mut a, &mut b).await;

    // Plain WebSocket to the TLS port: the handshake fails, nothing reaches the hub.
    let plain = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}/")),
    )
    .await
    .expect("refused in time");
    assert!(
        plain.is_err(),
        "a plain ws:// upgrade succeeded on a TLS port"
    );

    // A client that trusts another CA refuses the certificate.
    let stranger = Ca::new("another CA").client();
    let e = tls_connect(addr, &stranger)
        .await
        .expect_err("an untrusted certificate");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    // The relay still works.
    relay(&mut b, &mut a).await;

    if transport == "hyper" {
        let (status, body) = https_get(addr, &client, "/health").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"status\":\"ok\""), "{body}");
        wait_metric(addr, &client, &failures("not_tls"), 1).await;
        wait_metric(addr, &client, &failures("peer_alert"), 1).await;
        let done = "switchboard_tls_handshakes_total{system=\"laptimes\"}";
        assert!(metric(addr, &client, done).await >= 3);
    }
}

#[tokio::test]
async fn tls_relays_over_wss_and_answers_https() {
    relay_wss_https_and_refusals("hyper").await;
}

#[tokio::test]
async fn tls_on_the_websocket_only_transport() {
    relay_wss_https_and_refusals("tokio").await;
}

/// A server-sent-event stream over `https://` receives what a `wss://` client sends.
async fn event_stream_over_tls(transport: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    let ca = Ca::new("switchboard test CA");
    ca.leaf(1, "switchboard one").write(&ca, &cert, &key);
    let port = free_port();
    let _node = tls_node(port, &cert, &key, &["--transport", transport]);
    let (addr, client) = (local(port), ca.client());
    wait_tls(addr, &client).await;
    let tls = tls_connect(addr, &client).await.expect("a TLS handshake");
    // Registered with the hub before its `200`: what is sent from now on reaches it.
    let mut events = crate::support::sse::request(Box::new(tls), "GET", "/sse", &[])
        .await
        .expect("the stream is answered");
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    let (mut a, _) = wss(addr, &client, "/").await;
    let n = notice("times");
    a.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(events.next_data().await, n);
}

#[tokio::test]
async fn tls_event_stream_on_both_transports() {
    event_stream_over_tls("hyper").await;
    event_stream_over_tls("tokio").await;
}

#[tokio::test]
async fn tls_certificate_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    let ca = Ca::new("switchboard test CA");
    let (first, second) = (
        ca.leaf(1001, "switchboard first"),
        ca.leaf(2002, "switchboard second"),
    );
    assert_ne!(first.der(), second.der());
    first.write(&ca, &cert, &key);
    let port = free_port();
    let drain_at_once = ["--drain-ready-delay-secs", "0", "--drain-window-secs", "0"];
    let mut node = tls_node(port, &cert, &key, &drain_at_once);
    let (addr, client) = (local(port), ca.client());
    wait_tls(addr, &client).await;
    let (mut old, seen) = wss(addr, &client, "/").await;
    assert_eq!(&seen, first.der());

    let pid = node.id().expect("running").to_string();
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    let hangup = || signal("-HUP");
    second.write(&ca, &cert, &key);
    hangup();
    // New handshakes get the new certificate once the reload is done (bounded).
    let started = Instant::now();
    let mut new = loop {
        let (ws, seen) = wss(addr, &client, "/").await;
        if &seen == second.der() {
            break ws;
        }
        assert_eq!(&seen, first.der(), "neither certificate");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still the first certificate 10 s after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The connection opened before the reload is untouched, both ways.
    relay(&mut old, &mut new).await;
    relay(&mut new, &mut old).await;
    wait_metric(
        addr,
        &client,
        "switchboard_tls_reloads_total{result=\"ok\"}",
        1,
    )
    .await;

    // Bad files: the reload fails, the certificate in use stays, the process serves on.
    std::fs::write(&key, "not a key").unwrap();
    hangup();
    wait_metric(
        addr,
        &client,
        "switchboard_tls_reloads_total{result=\"error\"}",
        1,
    )
    .await;
    assert_eq!(
        metric(addr, &client, "switchboard_tls_last_reload_successful").await,
        0
    );
    let (_, seen) = wss(addr, &client, "/").await;
    assert_eq!(&seen, second.der());
    relay(&mut old, &mut new).await;

    // SIGTERM still drains: both connections are closed with 1012, and the process exits 0.
    signal("-TERM");
    for ws in [&mut old, &mut new] {
        assert_eq!(close_code(ws).await, 1012);
    }
    let status = tokio::time::timeout(Duration::from_secs(15), node.wait())
        .await
        .expect("exits after the drain")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// The code of the close frame that ends `ws` (data frames before it skipped).
async fn close_code(ws: &mut Wss) -> u16 {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a close in time")
            .expect("a close frame before the end")
            .expect("no socket error");
        if let Message::Close(frame) = msg {
            return frame.map_or(1005, |f| u16::from(f.code));
        }
    }
}

#[tokio::test]
async fn tls_handshake_timeout_closes_a_silent_client() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    let ca = Ca::new("switchboard test CA");
    ca.leaf(7, "switchboard").write(&ca, &cert, &key);
    let port = free_port();
    let _node = tls_node(port, &cert, &key, &["--tls-handshake-timeout-secs", "1"]);
    let (addr, client) = (local(port), ca.client());
    wait_tls(addr, &client).await;

    // Connect and send nothing: the server closes the socket at the timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("closed by the handshake timeout, not held open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(900), "closed after {held:?}");
    wait_metric(addr, &client, &failures("timeout"), 1).await;
    // Others are served meanwhile.
    let (mut a, _) = wss(addr, &client, "/").await;
    let (mut b, _) = wss(addr, &client, "/").await;
    relay(&mut a, &mut b).await;
}

/// Start the binary with `cert` and `key`; it must exit at once, non-zero, and say why.
async fn start_fails(cert: &Path, key: &Path) -> String {
    let out = Command::new(BIN)
        .args(["--systems", "laptimes", "--bind", "127.0.0.1"])
        .args(["--laptimes-port", &free_port().to_string()])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("LOG_LEVEL", "error")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), out)
        .await
        .expect("exits at once")
        .unwrap();
    assert!(!out.status.success(), "started with bad TLS files");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[tokio::test]
async fn tls_bad_files_stop_the_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchboard test CA");
    let (cert, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    let leaf = ca.leaf(1, "switchboard");
    leaf.write(&ca, &cert, &key);

    let missing = dir.path().join("missing.pem");
    let why = start_fails(&missing, &key).await;
    assert!(why.contains(&*missing.to_string_lossy()), "{why}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let why = start_fails(&garbage, &key).await;
    assert!(why.contains(&*garbage.to_string_lossy()), "{why}");
    let why = start_fails(&cert, &garbage).await;
    assert!(why.contains(&*garbage.to_string_lossy()), "{why}");

    // Another certificate's key.
    let other = dir.path().join("other-key.pem");
    std::fs::write(&other, ca.leaf(2, "other").key.serialize_pem()).unwrap();
    let why = start_fails(&cert, &other).await;
    assert!(why.contains("does not belong"), "{why}");
    assert!(why.contains(&*other.to_string_lossy()), "{why}");

    // One of the two flags alone is a usage error.
    let out = Command::new(BIN)
        .arg("--tls-cert")
        .arg(&cert)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}
