//! Server certificates chosen by the name the client asks for (SNI): one context
//! serves several host names, each with its own certificate, and a default one for
//! clients that send no name or a name not listed.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate chain and key for the host `name` (`*.example.com` covers one
/// label under example.com). Certificate and key are PEM text or a file path.
#[derive(Clone, Debug)]
pub struct SniCert {
    pub name: String,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct SniResolver {
    /// Lower-case names (wildcards as `*.rest`) to their certificate.
    names: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    pub(super) fn new(
        provider: &CryptoProvider,
        certs: &[SniCert],
        default: Option<Arc<CertifiedKey>>,
    ) -> Result<SniResolver, String> {
        let mut names = HashMap::new();
        for c in certs {
            let name = c.name.to_ascii_lowercase();
            let host = name.strip_prefix("*.").unwrap_or(&name);
            let valid = !host.is_empty()
                && host.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                return Err(format!("sni: '{}' is not a host name", c.name));
            }
            let what = format!("sni['{}']", c.name);
            names.insert(name, certified(provider, &what, &c.cert, &c.key)?);
        }
        Ok(SniResolver { names, default })
    }

    fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.names.get(&name) {
            return Some(k.clone());
        }
        let (_, parent) = name.split_once('.')?;
        self.names.get(&format!("*.{parent}")).cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|n| self.lookup(n))
            .or_else(|| self.default.clone())
    }
}

/// A chain and its key, checked to belong together.
pub(super) fn certified(
    provider: &CryptoProvider,
    what: &str,
    cert: &[u8],
    key: &[u8],
) -> Result<Arc<CertifiedKey>, String> {
    let chain = super::context::certs_from(&format!("{what}.cert"), cert)?;
    let key = super::context::key_from(key)?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{what}.key: {e}"))?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(ck))
        }
        Err(e) => Err(format!("{what}: certificate and key do not match: {e}")),
    }
}
