//! TLS on every port of a process: the certificate (a chain and its key, read from PEM files,
//! and read again on demand), the rustls server configuration (ring, ALPN `http/1.1`), and the
//! handshake each connection's own task runs, within a deadline, before its transport sees a
//! byte ([`Tls::accept`]).
//!
//! A failed handshake is counted per system and reason ([`Handshakes`]) and logged at `debug`
//! only: a port on the internet sees scanners, plain-HTTP clients and clients that distrust the
//! certificate all day, and one line each would flood the log.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, InvalidMessage, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::stream::Stream;

/// How long a client may take to complete its TLS handshake, by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The one application protocol offered in ALPN: WebSocket and HTTP are both HTTP/1.1 here.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// The PEM files a certificate is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The certificate chain: the server's certificate first, then its intermediates.
    pub cert: PathBuf,
    /// Its private key: PKCS#8 (`PRIVATE KEY`), RSA (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`). May be the same file as the chain.
    pub key: PathBuf,
}

/// Why a certificate could not be loaded; every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is not valid PEM.
    #[error("{}: not valid PEM: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{}: no certificate in it (a PEM `BEGIN CERTIFICATE` block)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The server's certificate cannot be used.
    #[error("{}: unusable certificate: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The key file holds no private key block.
    #[error(
        "{}: no private key in it (a PEM `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY` block)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key cannot be used.
    #[error("{}: unusable private key: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("{}: this private key does not belong to the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The crypto provider: ring (aws-lc-rs, rustls' default, needs cmake to build).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl CertificateFiles {
    /// Read and check the chain and key: both parse, and the key is the certificate's.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        self.load_with(&provider())
    }

    fn load_with(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
        let cert_pem = read(&self.cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(&self.cert, e))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.cert.clone(),
            });
        }
        let key_pem = read(&self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::NoKey {
                path: self.key.clone(),
            },
            e => pem_error(&self.key, e),
        })?;
        let signer = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::BadKey {
                path: self.key.clone(),
                reason: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            // A key type rustls cannot compare is left to the handshake to prove.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                return Err(TlsError::Mismatch {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                })
            }
            Err(e) => {
                return Err(TlsError::BadCertificate {
                    path: self.cert.clone(),
                    reason: e.to_string(),
                })
            }
        }
        Ok(Arc::new(certified))
    }
}

/// The certificate every handshake is answered with; replaced whole by [`Tls::reload`], so a
/// handshake sees the old one or the new one, never a mix.
struct Current(RwLock<Arc<CertifiedKey>>);

impl Current {
    fn get(&self) -> Arc<CertifiedKey> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Current")
            .field("chain_len", &self.get().cert.len())
            .finish()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The server configuration: ring, the safe default versions (TLS 1.2 and 1.3), no client
/// certificates, the certificate from `current`, ALPN `http/1.1`, and a session cache of its own.
fn server_config(
    provider: &Arc<CryptoProvider>,
    current: &Arc<Current>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// Why a handshake failed, as `/metrics` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// Not complete within the handshake timeout (a stalled or very slow client).
    Timeout,
    /// The client closed or reset the connection during the handshake.
    Closed,
    /// The client did not speak TLS (e.g. plain HTTP or `ws://` to a TLS port).
    NotTls,
    /// The client refused the handshake with an alert (e.g. it does not trust the certificate).
    PeerAlert,
    /// Any other TLS error (no common version or cipher suite, a malformed message).
    Protocol,
}

impl HandshakeFailure {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [HandshakeFailure; 5] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
        HandshakeFailure::NotTls,
        HandshakeFailure::PeerAlert,
        HandshakeFailure::Protocol,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::PeerAlert => "peer_alert",
            HandshakeFailure::Protocol => "protocol",
        }
    }

    /// Classify the error of a failed handshake.
    fn of(e: &io::Error) -> HandshakeFailure {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::InvalidMessage(
                InvalidMessage::InvalidContentType | InvalidMessage::UnknownProtocolVersion,
            )) => HandshakeFailure::NotTls,
            Some(rustls::Error::AlertReceived(_)) => HandshakeFailure::PeerAlert,
            Some(_) => HandshakeFailure::Protocol,
            None => HandshakeFailure::Closed,
        }
    }
}

/// One system's TLS handshakes: completed, and failed by reason. Lock-free.
#[derive(Debug, Default)]
pub struct Handshakes {
    enabled: AtomicBool,
    completed: AtomicU64,
    failed: [AtomicU64; HandshakeFailure::ALL.len()],
}

impl Handshakes {
    /// Mark the system as served over TLS (its counts are then rendered).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Whether the system is served over TLS.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Handshakes completed.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Handshakes failed for `reason`.
    pub fn failed(&self, reason: HandshakeFailure) -> u64 {
        self.failed[reason as usize].load(Ordering::Relaxed)
    }

    fn count_failure(&self, reason: HandshakeFailure) {
        self.failed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// How the certificate reloads went, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadCounts {
    /// Reloads that replaced the certificate.
    pub ok: u64,
    /// Reloads that failed and kept the certificate in use.
    pub failed: u64,
    /// Whether the last reload (or, before any, the load at start) succeeded.
    pub last_ok: bool,
}

/// TLS for every port of a process: the certificate, the server configuration and the
/// handshake.
#[derive(Debug)]
pub struct Tls {
    files: CertificateFiles,
    current: Arc<Current>,
    /// Replaced at each reload, with a new session cache: a session made with the old
    /// certificate is not resumed after it.
    config: RwLock<Arc<ServerConfig>>,
    provider: Arc<CryptoProvider>,
    handshake_timeout: Duration,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_ok: AtomicBool,
}

impl Tls {
    /// Load the certificate from `files` and make the server configuration; a handshake must
    /// complete within `handshake_timeout`.
    pub fn new(files: CertificateFiles, handshake_timeout: Duration) -> Result<Tls, TlsError> {
        let provider = provider();
        let current = Arc::new(Current(RwLock::new(files.load_with(&provider)?)));
        let config = server_config(&provider, &current)?;
        Ok(Tls {
            files,
            current,
            config: RwLock::new(config),
            provider,
            handshake_timeout,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_ok: AtomicBool::new(true),
        })
    }

    /// The files the certificate is read from.
    pub fn files(&self) -> &CertificateFiles {
        &self.files
    }

    /// How long a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The rustls configuration new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The certificate chain in use (DER, the server's certificate first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.get().cert.clone()
    }

    /// Read the files again. If they are good, new handshakes use them from now on (open
    /// connections keep theirs, and no session made before is resumed: a client shows the new
    /// certificate on its next handshake); if not, the certificate in use stays and the error
    /// says why. Returns the new chain's length.
    pub fn reload(&self) -> Result<usize, TlsError> {
        let loaded = self
            .files
            .load_with(&self.provider)
            .and_then(|certified| Ok((certified, server_config(&self.provider, &self.current)?)));
        match loaded {
            Ok((certified, config)) => {
                let len = certified.cert.len();
                *self
                    .current
                    .0
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = certified;
                *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.last_ok.store(true, Ordering::Relaxed);
                Ok(len)
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                self.last_ok.store(false, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// How the reloads went.
    pub fn reloads(&self) -> ReloadCounts {
        ReloadCounts {
            ok: self.reloads_ok.load(Ordering::Relaxed),
            failed: self.reloads_failed.load(Ordering::Relaxed),
            last_ok: self.last_ok.load(Ordering::Relaxed),
        }
    }

    /// Run the server side of a handshake on `tcp` from `peer`, at most the handshake timeout;
    /// count it in `handshakes` (those of `system`). `None` when it failed: the socket is
    /// closed, and the failure counted and logged at `debug`.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        system: &'static str,
        handshakes: &Handshakes,
    ) -> Option<Stream> {
        let acceptor = TlsAcceptor::from(self.config());
        let failure = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await
        {
            Ok(Ok(tls)) => {
                handshakes.completed.fetch_add(1, Ordering::Relaxed);
                let (tcp, conn) = tls.into_inner();
                return Some(Stream::tls(tcp, conn));
            }
            Ok(Err(e)) => {
                let reason = HandshakeFailure::of(&e);
                tracing::debug!(system, %peer, reason = reason.as_str(), error = %e, "TLS handshake failed");
                reason
            }
            Err(_) => {
                let secs = self.handshake_timeout.as_secs_f64();
                tracing::debug!(system, %peer, secs, "TLS handshake not complete in time");
                HandshakeFailure::Timeout
            }
        };
        handshakes.count_failure(failure);
        None
    }
}
