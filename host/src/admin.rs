//! The admin HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/readyz` and `/api/plugins`.
//!
//! It binds to loopback by default (`--metrics-addr 127.0.0.1:9464`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::host::Host;

/// Content type of the Prometheus text format served at `/metrics`.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The admin routes, bound to `host`.
pub fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/plugins", get(plugins))
        .with_state(host)
}

async fn metrics(State(host): State<Arc<Host>>) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        host.services().metrics.render(),
    )
        .into_response()
}

async fn readyz(State(host): State<Arc<Host>>) -> Response {
    if *host.ready().borrow() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
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
