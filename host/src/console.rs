//! The web console: a page served by the admin endpoint at `/`, from assets embedded in the
//! binary (`host/console/`: plain HTML, CSS and JavaScript, so building evhost needs no Node
//! toolchain). It reads the same JSON as `evhost stats` and `evhost plugins` (`/api/streams`,
//! `/api/plugins`, with the admin token when the host has one) once a second, and draws the
//! streams with their groups, the plugins and the hot-swap timeline.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// Assets change with the binary: a browser must ask again after an upgrade.
const NO_CACHE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-cache");

/// The console's routes: `/`, `/console/console.js` and `/console/console.css`. They hold no
/// data, so they need no token; the page asks for one when `/api/*` answers 401.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), NO_CACHE],
        INDEX_HTML,
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            NO_CACHE,
        ],
        CONSOLE_JS,
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), NO_CACHE],
        CONSOLE_CSS,
    )
}
