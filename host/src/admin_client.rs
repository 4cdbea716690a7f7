//! A minimal HTTP/1.1 client for a running host's admin endpoint (`evhost run
//! --metrics-addr`), on the hyper already linked for the server side.

use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

/// How long a request to the admin endpoint may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the admin endpoint could not be queried.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The URL is not `http://host:port`.
    #[error("invalid admin URL {0:?}: expected http://HOST:PORT, e.g. http://127.0.0.1:9464")]
    InvalidUrl(String),
    /// Nothing answered.
    #[error(
        "cannot reach the evhost admin endpoint at {url}: {reason} — is `evhost run` running? its admin address is set with --metrics-addr (pass the same address as --admin)"
    )]
    Unreachable {
        /// The admin URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// It answered, but not as an evhost admin endpoint does.
    #[error(
        "unexpected answer from {url}{path}: {reason} — is this the admin address of `evhost run`?"
    )]
    BadAnswer {
        /// The admin URL.
        url: String,
        /// The path asked for.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

/// `host:port` of an `http://host:port[/]` URL.
fn authority(url: &str) -> Result<String, AdminError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| AdminError::InvalidUrl(url.to_string()))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
        return Err(AdminError::InvalidUrl(url.to_string()));
    }
    Ok(authority.to_string())
}

/// GETs `path` from the admin endpoint at `url` and parses the JSON answer.
///
/// # Errors
///
/// [`AdminError`] saying what to check.
pub async fn get_json<T: DeserializeOwned>(url: &str, path: &str) -> Result<T, AdminError> {
    let body = get(url, path).await?;
    serde_json::from_slice(&body).map_err(|err| AdminError::BadAnswer {
        url: url.trim_end_matches('/').to_string(),
        path: path.to_string(),
        reason: format!("not the expected JSON ({err})"),
    })
}

/// GETs `path` from the admin endpoint at `url` and returns the body as text (e.g. the
/// Prometheus exposition of `/metrics`).
///
/// # Errors
///
/// [`AdminError`] saying what to check; a body that is not UTF-8 is a bad answer.
pub async fn get_text(url: &str, path: &str) -> Result<String, AdminError> {
    let body = get(url, path).await?;
    String::from_utf8(body.to_vec()).map_err(|err| AdminError::BadAnswer {
        url: url.trim_end_matches('/').to_string(),
        path: path.to_string(),
        reason: format!("not UTF-8 text ({err})"),
    })
}

/// GETs `path` and returns the body of a successful answer.
async fn get(url: &str, path: &str) -> Result<Bytes, AdminError> {
    let url = url.trim_end_matches('/').to_string();
    let authority = authority(&url)?;
    let unreachable = |reason: String| AdminError::Unreachable {
        url: url.clone(),
        reason,
    };
    let bad = |reason: String| AdminError::BadAnswer {
        url: url.clone(),
        path: path.to_string(),
        reason,
    };
    let body = tokio::time::timeout(TIMEOUT, async {
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|err| unreachable(err.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| unreachable(err.to_string()))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "admin connection ended");
            }
        });
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, &authority)
            .body(Empty::<Bytes>::new())
            .map_err(|err| bad(err.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| unreachable(err.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| unreachable(err.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(bad(format!("HTTP {status}")));
        }
        Ok(body)
    })
    .await
    .map_err(|_| unreachable(format!("no answer within {TIMEOUT:?}")))??;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_http_host_port() {
        assert_eq!(
            authority("http://127.0.0.1:9464/").expect("ok"),
            "127.0.0.1:9464"
        );
        assert!(authority("127.0.0.1:9464").is_err());
        assert!(authority("http://127.0.0.1:9464/api").is_err());
        assert!(authority("https://127.0.0.1:9464").is_err());
    }
}
