//! The admin HTTP endpoint: the web console at `/` (see [`crate::console`]), `/metrics`
//! (Prometheus), `/healthz`, `/readyz`, `/api/plugins` and
//! `/api/streams`, and the write actions `POST /api/plugins/{name}/rollout` (a candidate's
//! component as the body, its plan as query parameters), `/promote`, `/abort` and `/rollback`
//! (rollouts, see [`crate::rollout`]).
//!
//! It binds to loopback by default (`--metrics-addr 127.0.0.1:9464`). Off loopback, give it
//! a bearer token (`--admin-token`): `/api/*` then answers only requests with
//! `Authorization: Bearer <token>`; `/metrics`, `/healthz` and `/readyz` stay open for
//! scrapers and probes. Without a token, a write action is accepted only from a loopback
//! peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::host::{FileState, Host};
use crate::stream_stats::{self, StreamStats};

/// How long `/readyz` waits for Redis to answer.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest candidate component `POST /api/plugins/{name}/rollout` takes (Python and
/// JavaScript components weigh tens of MiB).
const MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;

/// Content type of the Prometheus text format served at `/metrics`.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The bearer token `/api/*` requires, if any.
#[derive(Clone, Default)]
pub struct AdminToken(Option<Arc<str>>);

impl AdminToken {
    /// `token` (`None` or empty: `/api/*` is open).
    pub fn new(token: Option<&str>) -> Self {
        AdminToken(token.filter(|token| !token.is_empty()).map(Arc::from))
    }

    /// Whether a token is configured.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether the `Authorization` header value `presented` carries the token; always true
    /// without one. Compared in constant time.
    fn admits(&self, presented: Option<&[u8]>) -> bool {
        let Some(token) = &self.0 else {
            return true;
        };
        let Some(given) = presented.and_then(|value| value.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let expected = token.as_bytes();
        given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() {
            "AdminToken(set)"
        } else {
            "AdminToken(none)"
        })
    }
}

/// The admin routes, bound to `host`; `/api/*` requires `token` when one is set, and the write
/// actions without one a loopback peer.
pub fn router(host: Arc<Host>, token: AdminToken) -> Router {
    let writes = Router::new()
        .route(
            "/api/plugins/{name}/rollout",
            post(start_rollout).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/api/plugins/{name}/promote", post(promote))
        .route("/api/plugins/{name}/abort", post(abort))
        .route("/api/plugins/{name}/rollback", post(rollback))
        .route_layer(middleware::from_fn_with_state(
            token.clone(),
            require_write_right,
        ));
    let api = Router::new()
        .route("/api/plugins", get(plugins))
        .route("/api/streams", get(streams))
        .merge(writes)
        .route_layer(middleware::from_fn_with_state(token, require_token));
    Router::new()
        .merge(crate::console::routes())
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(api)
        .with_state(host)
}

/// Answers 401 to a request without the configured token.
async fn require_token(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    if token.admits(presented) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this endpoint needs the host's bearer token: Authorization: Bearer <--admin-token>\n",
    )
        .into_response()
}

/// Answers 403 to a write action from off loopback when no token is configured (with one,
/// [`require_token`] already checked it).
async fn require_write_right(
    State(token): State<AdminToken>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    if token.is_set() || peer.is_some_and(|peer| peer.ip().is_loopback()) {
        return next.run(request).await;
    }
    (
        StatusCode::FORBIDDEN,
        "write actions are accepted from loopback only, unless the host has an --admin-token\n",
    )
        .into_response()
}

/// The answer to a change of what serves a plugin: the transition made, and how long it took.
fn change_answer(
    started: std::time::Instant,
    result: Result<crate::rollout::Transition, crate::host::ChangeError>,
) -> Response {
    match result {
        Ok(transition) => Json(serde_json::json!({
            "transition": transition,
            "took_ms": started.elapsed().as_secs_f64() * 1000.0,
        }))
        .into_response(),
        Err(err @ crate::host::ChangeError::UnknownPlugin(_)) => {
            (StatusCode::NOT_FOUND, format!("{err}\n")).into_response()
        }
        Err(err) => (StatusCode::CONFLICT, format!("{err}\n")).into_response(),
    }
}

async fn start_rollout(
    State(host): State<Arc<Host>>,
    Path(name): Path<String>,
    Query(section): Query<crate::rollout::plan::RolloutSection>,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let plan = match section.plan() {
        Ok(plan) => plan,
        Err(reason) => return (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response(),
    };
    match host.start_rollout(&name, body.to_vec(), plan).await {
        Ok(transition) => change_answer(started, Ok(transition)),
        Err(crate::host::StartRolloutError::Change(err)) => change_answer(started, Err(err)),
        Err(err @ crate::host::StartRolloutError::Load(_)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, format!("{err}\n")).into_response()
        }
    }
}

async fn promote(State(host): State<Arc<Host>>, Path(name): Path<String>) -> Response {
    let started = std::time::Instant::now();
    change_answer(started, host.promote(&name, "evhost rollout promote"))
}

async fn abort(State(host): State<Arc<Host>>, Path(name): Path<String>) -> Response {
    let started = std::time::Instant::now();
    change_answer(started, host.abort_rollout(&name, "evhost rollout abort"))
}

async fn rollback(State(host): State<Arc<Host>>, Path(name): Path<String>) -> Response {
    let started = std::time::Instant::now();
    change_answer(started, host.roll_back(&name, "evhost rollback"))
}

async fn metrics(State(host): State<Arc<Host>>) -> Response {
    refresh_group_gauges(&host).await;
    let services = host.services();
    services
        .metrics
        .sync_replication_shortfalls(services.broker.replication_shortfalls());
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        host.services().metrics.render(),
    )
        .into_response()
}

async fn readyz(State(host): State<Arc<Host>>) -> Response {
    if !*host.ready().borrow() {
        let loading: Vec<String> = host
            .plugin_statuses()
            .into_iter()
            .filter(|status| status.state == FileState::Loading)
            .map(|status| status.file)
            .collect();
        let body = if loading.is_empty() {
            "starting: creating consumer groups\n".to_string()
        } else {
            format!("starting: loading {}\n", loading.join(", "))
        };
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    let ping = tokio::time::timeout(READY_PING_TIMEOUT, host.services().broker.ping()).await;
    match ping {
        Ok(Ok(())) => {
            // Ready, with what the start-up checks of the Redis settings found amiss.
            let mut body = "ready\n".to_string();
            for finding in host
                .doctor_report()
                .map(|report| report.findings)
                .unwrap_or_default()
            {
                if finding.level != crate::doctor::Level::Ok {
                    body.push_str(&format!(
                        "{} {}: {} (fix: {})\n",
                        finding.level.as_str(),
                        finding.check,
                        finding.found,
                        finding.fix
                    ));
                }
            }
            (StatusCode::OK, body).into_response()
        }
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
    token: AdminToken,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() && !token.is_set() {
        tracing::warn!(admin = %bound, "the admin endpoint listens off loopback without --admin-token: anyone who reaches it can read /api/* (plugins, streams)");
    }
    let app = router(host, token);
    tokio::spawn(async move {
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(cancel.cancelled_owned());
        if let Err(err) = server.await {
            tracing::error!(error = %err, "admin endpoint failed");
        }
    });
    Ok(bound)
}
