//! A minimal HTTP/1.1 client for a running host's admin endpoint (`evhost run
//! --metrics-addr`), on the hyper already linked for the server side.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

/// How long a request to the admin endpoint may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long an upload may take: the host compiles the component before it answers (a Python
/// or JavaScript one takes seconds to tens of seconds the first time).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(180);

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
    /// The endpoint wants a bearer token, and none or another was given.
    #[error(
        "the evhost admin endpoint at {url} refused the request: it needs the host's bearer token (--admin-token or EVHOST_ADMIN_TOKEN)"
    )]
    Unauthorized {
        /// The admin URL.
        url: String,
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

/// A client of one host's admin endpoint, with the bearer token its `/api/*` may require.
#[derive(Debug, Clone)]
pub struct AdminClient {
    /// `http://host:port`, without a trailing slash.
    url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    token: Option<String>,
}

impl AdminClient {
    /// A client of the admin endpoint at `url` (`http://host:port`), sending `token` if given.
    pub fn new(url: &str, token: Option<String>) -> Self {
        AdminClient {
            url: url.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// GETs `path` and parses the JSON answer.
    ///
    /// # Errors
    ///
    /// [`AdminError`] saying what to check.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        let body = self.get(path).await?;
        serde_json::from_slice(&body).map_err(|err| AdminError::BadAnswer {
            url: self.url.clone(),
            path: path.to_string(),
            reason: format!("not the expected JSON ({err})"),
        })
    }

    /// GETs `path` and returns the body as text (e.g. the Prometheus exposition of
    /// `/metrics`).
    ///
    /// # Errors
    ///
    /// [`AdminError`] saying what to check; a body that is not UTF-8 is a bad answer.
    pub async fn get_text(&self, path: &str) -> Result<String, AdminError> {
        let body = self.get(path).await?;
        String::from_utf8(body.to_vec()).map_err(|err| AdminError::BadAnswer {
            url: self.url.clone(),
            path: path.to_string(),
            reason: format!("not UTF-8 text ({err})"),
        })
    }

    /// POSTs to `path` (a write action, no body) and parses the JSON answer.
    ///
    /// # Errors
    ///
    /// [`AdminError`] saying what to check; a refusal carries the host's reason.
    pub async fn post_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        let body = self
            .request(hyper::Method::POST, path, Bytes::new(), TIMEOUT)
            .await?;
        serde_json::from_slice(&body).map_err(|err| AdminError::BadAnswer {
            url: self.url.clone(),
            path: path.to_string(),
            reason: format!("not the expected JSON ({err})"),
        })
    }

    /// POSTs `body` to `path` (a write action) and parses the JSON answer.
    ///
    /// # Errors
    ///
    /// [`AdminError`] saying what to check; a refusal carries the host's reason.
    pub async fn post_bytes_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, AdminError> {
        let body = self
            .request(hyper::Method::POST, path, Bytes::from(body), UPLOAD_TIMEOUT)
            .await?;
        serde_json::from_slice(&body).map_err(|err| AdminError::BadAnswer {
            url: self.url.clone(),
            path: path.to_string(),
            reason: format!("not the expected JSON ({err})"),
        })
    }

    /// GETs `path` and returns the body of a successful answer.
    async fn get(&self, path: &str) -> Result<Bytes, AdminError> {
        self.request(hyper::Method::GET, path, Bytes::new(), TIMEOUT)
            .await
    }

    /// Sends a request without a body and returns the body of a successful answer.
    async fn request(
        &self,
        method: hyper::Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, AdminError> {
        let url = self.url.clone();
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
        let body = tokio::time::timeout(timeout, async {
            let stream = tokio::net::TcpStream::connect(&authority)
                .await
                .map_err(|err| unreachable(err.to_string()))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|err| unreachable(err.to_string()))?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "admin connection ended");
                }
            });
            let mut request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, &authority);
            if let Some(token) = &self.token {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let request = request
                .body(Full::new(body))
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
            if status == hyper::StatusCode::UNAUTHORIZED {
                return Err(AdminError::Unauthorized { url: url.clone() });
            }
            if !status.is_success() {
                // The endpoint says why in a line of text (`/readyz`: what is still loading).
                let said = String::from_utf8_lossy(&body);
                let said: String = said.trim().chars().take(300).collect();
                return Err(bad(if said.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {said}")
                }));
            }
            Ok(body)
        })
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))??;
        Ok(body)
    }
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
