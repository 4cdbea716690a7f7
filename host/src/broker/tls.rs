//! TLS material for `rediss://` URLs, named in the URL itself as redis-py does:
//! `rediss://host:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/etc/client.pem&ssl_keyfile=/etc/client.key`.
//!
//! `ssl_ca_certs` is the CA that signed the server's certificate (a managed Redis's own CA)
//! instead of the system store; `ssl_certfile` and `ssl_keyfile` are the client certificate and
//! key for mutual TLS. The URL stays the one setting (`--redis`, `REDIS_URL`, `evhost.toml`),
//! so every command takes them the same way. The parameters are taken out of the URL before it
//! reaches the Redis client.

use std::path::PathBuf;

use redis::{ClientTlsConfig, TlsCertificates};

/// Query parameters of a `rediss://` URL that name TLS files.
const CA: &str = "ssl_ca_certs";
const CERT: &str = "ssl_certfile";
const KEY: &str = "ssl_keyfile";

/// Why the TLS parameters of a URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The URL does not parse.
    #[error("invalid Redis URL: {0}")]
    Url(String),
    /// TLS files were named for a URL without TLS.
    #[error("{CA}, {CERT} and {KEY} need a rediss:// URL")]
    NotTls,
    /// A client certificate without its key, or the reverse.
    #[error("mutual TLS needs both {CERT} and {KEY}")]
    HalfClientIdentity,
    /// A file could not be read.
    #[error("cannot read {parameter} {path}: {source}")]
    Read {
        /// The URL parameter.
        parameter: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A Redis URL with its TLS files taken out.
#[derive(Debug)]
pub struct TlsUrl {
    /// The URL for the Redis client.
    pub url: String,
    /// The certificates to use, when the URL named any.
    pub certificates: Option<TlsCertificates>,
}

/// Splits the TLS file parameters off `url` and reads the files.
///
/// # Errors
///
/// [`TlsError`] naming the parameter and file when something is missing or unreadable.
pub fn split(url: &str) -> Result<TlsUrl, TlsError> {
    if !url.contains(CA) && !url.contains(CERT) && !url.contains(KEY) {
        return Ok(TlsUrl {
            url: url.to_string(),
            certificates: None,
        });
    }
    let mut parsed = url::Url::parse(url).map_err(|err| TlsError::Url(err.to_string()))?;
    let (mut ca, mut cert, mut key) = (None, None, None);
    let mut kept = Vec::new();
    for (name, value) in parsed.query_pairs() {
        let path = PathBuf::from(value.as_ref());
        match name.as_ref() {
            CA => ca = Some(path),
            CERT => cert = Some(path),
            KEY => key = Some(path),
            _ => kept.push((name.into_owned(), value.into_owned())),
        }
    }
    if !matches!(parsed.scheme(), "rediss" | "valkeys") {
        return Err(TlsError::NotTls);
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    let read = |parameter: &'static str, path: PathBuf| {
        std::fs::read(&path).map_err(|source| TlsError::Read {
            parameter,
            path,
            source,
        })
    };
    let client_tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(CERT, cert)?,
            client_key: read(KEY, key)?,
        }),
        (None, None) => None,
        _ => return Err(TlsError::HalfClientIdentity),
    };
    let root_cert = ca.map(|ca| read(CA, ca)).transpose()?;
    Ok(TlsUrl {
        url: parsed.to_string(),
        certificates: Some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_tls_files_pass_unchanged() {
        let split = split("rediss://:secret@host:6380/2#insecure").expect("plain");
        assert_eq!(split.url, "rediss://:secret@host:6380/2#insecure");
        assert!(split.certificates.is_none());
    }

    #[test]
    fn tls_files_are_taken_out_and_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"CA").expect("write");
        let url = format!(
            "rediss://user:pw@host:6380/1?protocol=resp3&{CA}={}",
            ca.display()
        );
        let split = split(&url).expect("split");
        assert_eq!(split.url, "rediss://user:pw@host:6380/1?protocol=resp3");
        let certificates = split.certificates.expect("certificates");
        assert_eq!(certificates.root_cert.as_deref(), Some(&b"CA"[..]));
        assert!(certificates.client_tls.is_none());
    }

    #[test]
    fn mistakes_are_named() {
        let err = split("redis://host/?ssl_ca_certs=/x").expect_err("not TLS");
        assert!(matches!(err, TlsError::NotTls), "{err}");
        let err = split("rediss://host/?ssl_certfile=/x").expect_err("no key");
        assert!(matches!(err, TlsError::HalfClientIdentity), "{err}");
        let err = split("rediss://host/?ssl_ca_certs=/no/such/ca.pem").expect_err("missing");
        assert!(
            err.to_string().contains("ssl_ca_certs /no/such/ca.pem"),
            "{err}"
        );
    }
}
