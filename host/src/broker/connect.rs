//! Chooses the broker backend from a URL.

use std::sync::Arc;

use super::redis::{RedisBroker, WaitReplicas};
use super::{Broker, BrokerError};

/// URL schemes served by [`RedisBroker`]: TCP, TLS and Unix sockets (and the same for Valkey,
/// which the Redis client accepts).
const REDIS_SCHEMES: [&str; 7] = [
    "redis",
    "rediss",
    "redis+unix",
    "unix",
    "valkey",
    "valkeys",
    "valkey+unix",
];

/// Connects to the broker at `url`, the backend chosen by the URL's scheme:
/// `redis://[user:pass@]host:port[/db]`, `rediss://` (TLS) or `redis+unix:///path` /
/// `unix:///path` are Redis.
///
/// Adding a backend means a scheme here and an implementation of [`Broker`] and
/// [`Inspect`](super::Inspect).
///
/// # Errors
///
/// [`BrokerError::UnsupportedScheme`] for an unknown scheme; the backend's error when the URL
/// is invalid or the server cannot be reached.
pub async fn connect(url: &str) -> Result<Arc<dyn Broker>, BrokerError> {
    connect_waiting(url, None).await
}

/// [`connect`], the broker waiting for `wait` replicas after each write that must survive a
/// failover (`--wait-replicas`; see [`WaitReplicas`]).
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_waiting(
    url: &str,
    wait: Option<WaitReplicas>,
) -> Result<Arc<dyn Broker>, BrokerError> {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    if REDIS_SCHEMES.contains(&scheme) {
        let broker = RedisBroker::connect(url).await?;
        return Ok(Arc::new(match wait {
            Some(wait) => broker.with_wait_replicas(wait),
            None => broker,
        }));
    }
    Err(BrokerError::UnsupportedScheme {
        scheme: url
            .split_once(':')
            .map_or(url, |(scheme, _)| scheme)
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unknown schemes are refused before any connection, without echoing credentials.
    #[tokio::test]
    async fn refuses_unknown_schemes() {
        for url in [
            "http://user:secret@127.0.0.1:6379",
            "memory:",
            "127.0.0.1:6379",
        ] {
            let Err(err) = connect(url).await else {
                panic!("{url} was accepted");
            };
            assert!(
                matches!(err, BrokerError::UnsupportedScheme { .. }),
                "{url}: {err}"
            );
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }
}
