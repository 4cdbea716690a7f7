//! The admin HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/readyz`, `/api/plugins` and
//! `/api/streams`.
//!
//! It binds to loopback by default (`--metrics-addr 127.0.0.1:9464`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::host::Host;
use crate::stream_stats::{self, StreamStats};

/// How long `/readyz` waits for Redis to answer.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Content type of the Prometheus text format served at `/metrics`.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The admin routes, bound to `host`.
pub fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/plugins", get(plugins))
        .route("/api/streams", get(streams))
        .with_state(host)
}

async fn metrics(State(host): State<Arc<Host>>) -> Response {
    refresh_group_gauges(&host).await;
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        host.services().metrics.render(),
    )
        .into_response()
}

async fn readyz(State(host): State<Arc<Host>>) -> Response {
    if !*host.ready().borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: plugins loading\n",
        )
            .into_response();
    }
    let ping = tokio::time::timeout(READY_PING_TIMEOUT, host.services().broker.ping()).await;
    match ping {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(err)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("redis unreachable: {err}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("redis did not answer within {READY_PING_TIMEOUT:?}\n"),
        )
            .into_response(),
    }
}

async fn streams(State(host): State<Arc<Host>>) -> Response {
    match stream_stats::snapshot(host.services().broker.as_ref()).await {
        Ok(streams) => Json(streams).into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": err.to_string() })),
        )
            .into_response(),
    }
}

/// Sets the group lag and pending gauges from a fresh snapshot; on a broker failure the last
/// values stay (a scrape must not fail because Redis is down).
async fn refresh_group_gauges(host: &Host) {
    let streams = match stream_stats::snapshot(host.services().broker.as_ref()).await {
        Ok(streams) => streams,
        Err(err) => {
            tracing::debug!(error = %err, "cannot refresh group gauges");
            return;
        }
    };
    let plugins: std::collections::HashSet<String> = host
        .registry()
        .versions()
        .iter()
        .map(|version| version.name.clone())
        .collect();
    host.services()
        .metrics
        .set_group_gauges(&plugin_groups(&streams, &plugins));
}

/// `(plugin, stream, lag, pending)` of every group named after a loaded plugin.
fn plugin_groups(
    streams: &[StreamStats],
    plugins: &std::collections::HashSet<String>,
) -> Vec<(String, String, Option<u64>, u64)> {
    streams
        .iter()
        .flat_map(|stream| {
            stream
                .groups
                .iter()
                .filter(|group| plugins.contains(&group.group))
                .map(|group| {
                    (
                        group.group.clone(),
                        stream.stream.clone(),
                        group.lag,
                        group.pending,
                    )
                })
        })
        .collect()
}

async fn plugins(State(host): State<Arc<Host>>) -> Response {
    Json(host.plugin_statuses()).into_response()
}

/// Binds `addr` and serves the admin routes until `cancel` fires; returns the bound address.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn serve(
    host: Arc<Host>,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(host);
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned());
        if let Err(err) = server.await {
            tracing::error!(error = %err, "admin endpoint failed");
        }
    });
    Ok(bound)
}
