//! TLS contexts: what `TlsOptions` asks for (certificates, roots, versions, ALPN,
//! verification) turned into a rustls configuration that makes connections.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, DigitallySignedStruct, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme, SupportedProtocolVersion,
};

/// Lowest protocol version a context accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// What a [`TlsContext`] is made from. Certificates, keys and CAs are PEM text or the
/// path of a PEM file (anything without `-----BEGIN` is taken as a path).
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// Server side (accepts handshakes) or client side.
    pub server: bool,
    /// Certificate chain: required for servers, optional client certificate otherwise.
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
    /// Trust anchors. Client: verifies the server (default: the system store).
    /// Server: when given, clients must present a certificate signed by one of these.
    pub ca: Option<Vec<u8>>,
    /// Client: verify the server's certificate and name. Turning this off accepts any
    /// server (unsafe: anyone on the path can impersonate it).
    pub verify: bool,
    /// ALPN protocols, in preference order.
    pub alpn: Vec<Vec<u8>>,
    /// Client: the name to send (SNI) and verify; default: the host connected to.
    pub server_name: Option<String>,
    pub min_version: Option<TlsVersion>,
    /// Server: more certificates, chosen by the name the client asks for (SNI);
    /// `cert`/`key` (optional then) serve the other clients.
    pub sni: Vec<super::SniCert>,
}

impl TlsOptions {
    pub fn server(cert: &[u8], key: &[u8]) -> TlsOptions {
        TlsOptions {
            server: true,
            cert: Some(cert.to_vec()),
            key: Some(key.to_vec()),
            ..TlsOptions::client()
        }
    }

    /// A verifying client using the system CA store.
    pub fn client() -> TlsOptions {
        TlsOptions {
            server: false,
            cert: None,
            key: None,
            ca: None,
            verify: true,
            alpn: Vec::new(),
            server_name: None,
            min_version: None,
            sni: Vec::new(),
        }
    }
}

enum Side {
    Server(Arc<ServerConfig>),
    Client(Arc<ClientConfig>),
}

/// A shareable TLS configuration: build once, use for any number of sockets.
pub struct TlsContext {
    side: Side,
    server_name: Option<String>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TlsContext({})",
            if self.is_server() { "server" } else { "client" }
        )
    }
}

/// PEM text as is, or the contents of the file it names.
fn pem_source(what: &str, src: &[u8]) -> Result<Vec<u8>, String> {
    if src.windows(10).any(|w| w == b"-----BEGIN") {
        return Ok(src.to_vec());
    }
    let path =
        std::path::Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(src));
    std::fs::read(path).map_err(|e| format!("{what}: cannot read '{}': {e}", path.display()))
}

pub(super) fn certs_from(what: &str, src: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = pem_source(what, src)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no CERTIFICATE found"));
    }
    Ok(certs)
}

pub(super) fn key_from(src: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    let pem = pem_source("key", src)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("key: no usable private key: {e}"))
}

fn roots_from(src: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in certs_from("ca", src)? {
        roots
            .add(c)
            .map_err(|e| format!("ca: unusable certificate: {e}"))?;
    }
    Ok(roots)
}

/// The system trust store (`/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`),
/// loaded once per process.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                Err("no system CA certificates found (install ca-certificates, or pass ca)".into())
            } else {
                Ok(Arc::new(roots))
            }
        })
        .clone()
}

/// `verify = false`: accepts any server certificate (signatures are still checked, so
/// the handshake itself is sound; the peer's identity is not).
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl TlsContext {
    /// Build a context; the error says which option is wrong.
    pub fn new(o: &TlsOptions) -> Result<Arc<TlsContext>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static SupportedProtocolVersion] = match o.min_version {
            Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let alpn = o.alpn.clone();
        if alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
            return Err("alpn: each protocol name must be 1..255 bytes".into());
        }
        let side = if o.server {
            let default = match (&o.cert, &o.key) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) if !o.sni.is_empty() => None,
                (None, None) => return Err("a server context needs cert and key (or sni)".into()),
                _ => return Err("cert and key go together".into()),
            };
            let builder = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| format!("tls: {e}"))?;
            let builder = match &o.ca {
                Some(ca) => {
                    let roots = Arc::new(roots_from(ca)?);
                    let v = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                        .build()
                        .map_err(|e| format!("ca: {e}"))?;
                    builder.with_client_cert_verifier(v)
                }
                None => builder.with_no_client_auth(),
            };
            let mut cfg = if o.sni.is_empty() {
                let (cert, key) = default.ok_or("a server context needs cert and key")?;
                builder
                    .with_single_cert(certs_from("cert", cert)?, key_from(key)?)
                    .map_err(|e| format!("cert/key: {e}"))?
            } else {
                let default = match default {
                    Some((cert, key)) => Some(super::sni::certified(&provider, "cert", cert, key)?),
                    None => None,
                };
                let resolver = super::sni::SniResolver::new(&provider, &o.sni, default)?;
                builder.with_cert_resolver(Arc::new(resolver))
            };
            cfg.alpn_protocols = alpn;
            Side::Server(Arc::new(cfg))
        } else {
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| format!("tls: {e}"))?;
            let builder = if !o.verify {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider.clone())))
            } else {
                let roots = match &o.ca {
                    Some(ca) => Arc::new(roots_from(ca)?),
                    None => system_roots()?,
                };
                builder.with_root_certificates(roots)
            };
            let mut cfg = match (&o.cert, &o.key) {
                (Some(cert), Some(key)) => builder
                    .with_client_auth_cert(certs_from("cert", cert)?, key_from(key)?)
                    .map_err(|e| format!("cert/key: {e}"))?,
                (None, None) => builder.with_no_client_auth(),
                _ => return Err("cert and key go together".into()),
            };
            cfg.alpn_protocols = alpn;
            Side::Client(Arc::new(cfg))
        };
        Ok(Arc::new(TlsContext {
            side,
            server_name: o.server_name.clone(),
        }))
    }

    pub fn is_server(&self) -> bool {
        matches!(self.side, Side::Server(_))
    }

    /// A new connection. A client needs a name to send and verify: `name`, else the
    /// context's `server_name`, else `fallback` (the host connected to, or the peer IP).
    pub(crate) fn connection(
        &self,
        name: Option<&str>,
        fallback: Option<&str>,
    ) -> Result<Connection, String> {
        match &self.side {
            Side::Server(cfg) => ServerConnection::new(cfg.clone())
                .map(Connection::Server)
                .map_err(|e| format!("tls: {e}")),
            Side::Client(cfg) => {
                let name = name
                    .or(self.server_name.as_deref())
                    .or(fallback)
                    .ok_or("tls: a client needs a server name (server_name option)")?;
                let sn = ServerName::try_from(name.to_string())
                    .map_err(|_| format!("tls: invalid server name '{name}'"))?;
                ClientConnection::new(cfg.clone(), sn)
                    .map(Connection::Client)
                    .map_err(|e| format!("tls: {e}"))
            }
        }
    }
}
