//! Helpers shared by subcommands.

use anyhow::Context as _;

use crate::broker::redis::RedisBroker;

/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// `url` with its password replaced by `***`, safe to print.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

/// Connects to Redis and checks it answers, with an error that says what to do.
///
/// # Errors
///
/// When the URL is invalid or the server does not answer.
pub async fn connect_redis(url: &str) -> anyhow::Result<RedisBroker> {
    let shown = redact_url(url);
    let broker = RedisBroker::connect(url).await.with_context(|| {
        format!("cannot reach Redis at {shown} — is redis-server running? try `docker compose up -d redis` or `redis-server --port 6379`")
    })?;
    broker
        .ping()
        .await
        .with_context(|| format!("Redis at {shown} does not answer PING"))?;
    Ok(broker)
}

/// Resolves when the process gets Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("got Ctrl-C"),
        () = terminate => tracing::info!("got SIGTERM"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("rediss://secret@host"), "rediss://***@host");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
