//! Hot swap and rollback under a steady stream: a plugin file replaced → the first event
//! handled by the new version; `Host::roll_back` → the first event handled by the previous one.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::BenchError;
use super::harness::{Running, options, produce, variant};
use evhost::activity::Activity;
use evhost::artifacts;
use evhost::broker::Broker;
use evhost::host::Host;
use evhost::plugin::sha256_hex;

/// What [`measure`] found, in milliseconds.
pub(super) struct SwapFigures {
    /// File written → first event handled by the new version.
    pub swap_ms: Vec<f64>,
    /// Rollback called → first event handled by the version before.
    pub rollback_ms: Vec<f64>,
}

/// The median of `samples` (NaN when empty).
pub(super) fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The largest of `samples` (NaN when empty).
pub(super) fn max(samples: &[f64]) -> f64 {
    samples
        .iter()
        .copied()
        .max_by(f64::total_cmp)
        .unwrap_or(f64::NAN)
}

/// How long the first event handled by the component `sha` took to come on `feed`.
async fn until_handled_by(
    feed: &mut broadcast::Receiver<Activity>,
    sha: &str,
    since: Instant,
    what: &'static str,
) -> Result<f64, BenchError> {
    let limit = Duration::from_secs(20);
    loop {
        match tokio::time::timeout(limit.saturating_sub(since.elapsed()), feed.recv()).await {
            Ok(Ok(Activity::Handled { sha256, .. })) if sha256 == sha => {
                return Ok(since.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                return Err(BenchError::Timeout(what, limit));
            }
        }
    }
}

/// Swaps the noop plugin `count` times under a steady stream, each swap followed by a
/// rollback to the version before it, and measures both.
pub(super) async fn measure(
    broker: Arc<dyn Broker>,
    url: &str,
    count: usize,
) -> Result<SwapFigures, BenchError> {
    let dir = tempfile::tempdir()?;
    let wasm = dir.path().join("swapper.wasm");
    std::fs::write(
        dir.path().join("swapper.toml"),
        "[config]\nname = \"swapper\"\nsubscriptions = \"BenchSwap\"\n",
    )?;
    std::fs::write(&wasm, artifacts::NOOP)?;
    let host = Host::new(broker, options()).map_err(|err| BenchError::Host(err.to_string()))?;
    host.add_dir(dir.path()).await?;
    let _watcher = host
        .watch_dir(dir.path())
        .map_err(|err| BenchError::Host(err.to_string()))?;
    let running = Running::run(host).await;
    let producer = tokio::spawn(produce(
        url.to_string(),
        "BenchSwap",
        2_000,
        Duration::from_secs(3600),
    ));
    let result = swap_and_roll_back(&running, &wasm, count).await;
    producer.abort();
    running.stop().await;
    result
}

async fn swap_and_roll_back(
    running: &Running,
    wasm: &Path,
    count: usize,
) -> Result<SwapFigures, BenchError> {
    let mut figures = SwapFigures {
        swap_ms: Vec::new(),
        rollback_ms: Vec::new(),
    };
    // Each rollback returns to the first version: the file then holds the variant rolled back
    // from, so the next variant is a change again.
    let serving = sha256_hex(artifacts::NOOP);
    for n in 0..count {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let bytes = variant(artifacts::NOOP, n);
        let sha = sha256_hex(&bytes);
        let mut feed = running.host.services().activity.subscribe();
        write_plugin(wasm, &bytes)?;
        let written = Instant::now();
        figures
            .swap_ms
            .push(until_handled_by(&mut feed, &sha, written, "a hot swap").await?);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut feed = running.host.services().activity.subscribe();
        let called = Instant::now();
        running
            .host
            .roll_back("swapper", "evhost bench")
            .map_err(|err| BenchError::Host(err.to_string()))?;
        figures
            .rollback_ms
            .push(until_handled_by(&mut feed, &serving, called, "a rollback").await?);
    }
    Ok(figures)
}

/// Writes a plugin file the way deploy tools do: a temporary file renamed into place.
fn write_plugin(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_file_name(".swapper.wasm.tmp");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}
