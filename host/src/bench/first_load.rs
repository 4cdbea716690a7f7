//! `evhost bench --first-load FILE...`: how long a component not in the compile cache takes
//! to serve, on the quick tier (Winch, then optimised in the background) beside a load that
//! optimises first, and what the quick tier's code costs while it serves.
//!
//! Each round loads every file on fresh engines with empty caches, the two ways in turn, so
//! that both see the same machine; the report gives the median of the rounds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evhost::broker::memory::MemoryBroker;
use evhost::metrics::Metrics;
use evhost::plugin::{CompilePolicy, HostServices, PluginEngine, PluginSettings, PluginVersion};

use super::BenchError;
use super::swap::median;

/// Rounds per file; the median is reported.
const ROUNDS: usize = 3;
/// `describe()` calls timed on each tier: a call into the guest's own code (for Python and
/// JavaScript, their interpreter).
const CALLS: usize = 200;

/// The first load of one component, each figure the median of [`ROUNDS`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct FirstLoad {
    /// The component file.
    pub file: String,
    /// Its size.
    pub bytes: usize,
    /// Quick tier: from the bytes to a described version ready to serve.
    pub quick_ms: f64,
    /// Quick tier: from the bytes until the optimised recompile was ready to replace it.
    pub optimized_ready_ms: f64,
    /// Optimising first: from the bytes to a described version ready to serve.
    pub optimize_first_ms: f64,
    /// Loading it again from the compile cache.
    pub cached_ms: f64,
    /// One `describe()` call on the quick tier's code.
    pub quick_call_us: f64,
    /// One `describe()` call on the optimised code.
    pub optimized_call_us: f64,
}

/// Every file's first load.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FirstLoadReport {
    /// One per file, in the order given.
    pub loads: Vec<FirstLoad>,
}

impl FirstLoadReport {
    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "evhost bench --first-load: empty compile cache, median of {ROUNDS} interleaved rounds\n\n{:<28} {:>8} {:>10} {:>12} {:>12} {:>9} {:>11} {:>11}\n",
            "component",
            "MiB",
            "quick s",
            "optimised s",
            "opt. first s",
            "cached ms",
            "quick µs",
            "optim. µs"
        );
        for load in &self.loads {
            let name = Path::new(&load.file).file_name().map_or_else(
                || load.file.clone(),
                |name| name.to_string_lossy().into_owned(),
            );
            out.push_str(&format!(
                "{name:<28} {:>8.1} {:>10.2} {:>12.2} {:>12.2} {:>9.1} {:>11.0} {:>11.0}\n",
                load.bytes as f64 / (1024.0 * 1024.0),
                load.quick_ms / 1000.0,
                load.optimized_ready_ms / 1000.0,
                load.optimize_first_ms / 1000.0,
                load.cached_ms,
                load.quick_call_us,
                load.optimized_call_us,
            ));
        }
        out.push_str(
            "\nquick s: serving on the quick tier; optimised s: its optimised code ready (in the background);\n\
             opt. first s: serving when optimised first (--optimize-first); quick/optim. µs: one describe() call\n",
        );
        out
    }
}

/// Times the first load of each file in `files`.
///
/// # Errors
///
/// When a file cannot be read or loaded.
pub async fn run(files: &[PathBuf]) -> Result<FirstLoadReport, BenchError> {
    let mut samples: Vec<Vec<Sample>> = files.iter().map(|_| Vec::new()).collect();
    let mut sizes = vec![0; files.len()];
    for _ in 0..ROUNDS {
        for (index, file) in files.iter().enumerate() {
            let bytes = std::fs::read(file).map_err(|err| {
                BenchError::Host(format!("cannot read {}: {err}", file.display()))
            })?;
            sizes[index] = bytes.len();
            samples[index].push(measure(file, bytes).await?);
        }
    }
    let loads = files
        .iter()
        .zip(samples)
        .zip(sizes)
        .map(|((file, samples), bytes)| FirstLoad {
            file: file.display().to_string(),
            bytes,
            quick_ms: pick(&samples, |sample| sample.quick_ms),
            optimized_ready_ms: pick(&samples, |sample| sample.optimized_ready_ms),
            optimize_first_ms: pick(&samples, |sample| sample.optimize_first_ms),
            cached_ms: pick(&samples, |sample| sample.cached_ms),
            quick_call_us: pick(&samples, |sample| sample.quick_call_us),
            optimized_call_us: pick(&samples, |sample| sample.optimized_call_us),
        })
        .collect();
    Ok(FirstLoadReport { loads })
}

/// The median of one figure over the rounds.
fn pick(samples: &[Sample], figure: impl Fn(&Sample) -> f64) -> f64 {
    median(&samples.iter().map(figure).collect::<Vec<_>>())
}

/// One round's figures of one file.
struct Sample {
    quick_ms: f64,
    optimized_ready_ms: f64,
    optimize_first_ms: f64,
    cached_ms: f64,
    quick_call_us: f64,
    optimized_call_us: f64,
}

async fn measure(file: &Path, bytes: Vec<u8>) -> Result<Sample, BenchError> {
    let origin = file.display().to_string();
    let failed = |err: evhost::plugin::LoadError| BenchError::Host(err.to_string());

    let cache = tempfile::tempdir()?;
    let tiered = engine(cache.path(), CompilePolicy::Tiered { quick_min_bytes: 0 })?;
    let started = Instant::now();
    let (quick, pending) = tiered
        .load_tiered(origin.clone(), bytes.clone(), PluginSettings::default())
        .await
        .map_err(failed)?;
    let quick_ms = elapsed_ms(started);
    let pending = pending
        .ok_or_else(|| BenchError::Host(format!("{origin} did not load on the quick tier")))?;
    let optimized = tiered.optimize(pending).await.map_err(failed)?;
    let optimized_ready_ms = elapsed_ms(started);
    let quick_call_us = call_us(&quick).await?;
    let optimized_call_us = call_us(&optimized).await?;

    let cache = tempfile::tempdir()?;
    let optimizing = engine(cache.path(), CompilePolicy::Optimized)?;
    let started = Instant::now();
    optimizing
        .load_bytes(origin.clone(), bytes.clone(), PluginSettings::default())
        .await
        .map_err(failed)?;
    let optimize_first_ms = elapsed_ms(started);
    let started = Instant::now();
    optimizing
        .load_bytes(origin, bytes, PluginSettings::default())
        .await
        .map_err(failed)?;
    let cached_ms = elapsed_ms(started);
    Ok(Sample {
        quick_ms,
        optimized_ready_ms,
        optimize_first_ms,
        cached_ms,
        quick_call_us,
        optimized_call_us,
    })
}

/// An engine of its own, on an in-memory broker, caching in `cache_dir`.
fn engine(cache_dir: &Path, policy: CompilePolicy) -> Result<PluginEngine, BenchError> {
    let services = HostServices::new(Arc::new(MemoryBroker::new()), Arc::new(Metrics::new()));
    PluginEngine::with_policy(services, Some(cache_dir.to_path_buf()), policy)
        .map_err(|err| BenchError::Host(err.to_string()))
}

/// Microseconds per `describe()` call on one instance of `version`.
async fn call_us(version: &PluginVersion) -> Result<f64, BenchError> {
    let mut instance = version.instantiate().await.map_err(|err| {
        BenchError::Host(format!("cannot instantiate {}: {err:#}", version.origin))
    })?;
    let timeout = Duration::from_secs(10);
    // The first call warms the instance (lazy initialisation in the guest).
    instance
        .describe(timeout)
        .await
        .map_err(|err| BenchError::Host(format!("describe() of {}: {err}", version.origin)))?;
    let started = Instant::now();
    for _ in 0..CALLS {
        instance
            .describe(timeout)
            .await
            .map_err(|err| BenchError::Host(format!("describe() of {}: {err}", version.origin)))?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / CALLS as f64)
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}
