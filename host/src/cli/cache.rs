//! `evhost cache`: what the compile cache holds, and pruning it.
//!
//! The host bounds the cache itself (512 MiB, least recently used entries first) each time it
//! compiles; `prune` also drops the entries of other evhost builds (another wasmtime version
//! or configuration), which no build of this one ever loads, and can shrink it further.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::output::{format_bytes, json_line};
use evhost::broker::memory::MemoryBroker;
use evhost::metrics::Metrics;
use evhost::plugin::compile_cache::{CompileCache, MAX_CACHE_BYTES};
use evhost::plugin::{HostServices, PluginEngine};

/// Arguments of `evhost cache`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  evhost cache info\n  evhost cache prune                 # other builds' entries, then down to 512 MiB\n  evhost cache prune --max-mib 64\n  evhost cache prune --all --json"
)]
pub struct CacheArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CacheCommand,
    /// The cache directory (`evhost run --cache-dir`) [default: $XDG_CACHE_HOME/evhost or ~/.cache/evhost].
    #[arg(long, global = true, env = "EVHOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print JSON (one object) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The `cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Where the cache is, how many compiled components it holds and their size.
    Info,
    /// Remove the entries this build cannot load, then the least recently used ones until the
    /// rest fit in `--max-mib`.
    Prune(PruneArgs),
}

/// Arguments of `evhost cache prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep at most this many MiB [default: the host's own cap, 512].
    #[arg(long, conflicts_with = "all")]
    pub max_mib: Option<u64>,
    /// Remove every entry (the next load of each plugin compiles it again).
    #[arg(long)]
    pub all: bool,
}

/// Runs `evhost cache`.
///
/// # Errors
///
/// When no cache directory is known, or it cannot be read or pruned.
pub fn run(args: CacheArgs) -> anyhow::Result<()> {
    let dir = args
        .cache_dir
        .clone()
        .or_else(super::run::default_cache_dir)
        .context("no cache directory: neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir")?;
    // An engine configured as the host's, for the compatibility of each entry.
    let services = HostServices::new(Arc::new(MemoryBroker::new()), Arc::new(Metrics::new()));
    let engine = PluginEngine::new(services, Some(dir.clone()))?;
    let cache: &CompileCache = engine
        .compile_cache()
        .context("the engine has no compile cache")?;
    let shown = dir.display().to_string();
    match args.command {
        CacheCommand::Info => {
            let usage = cache
                .usage()
                .with_context(|| format!("cannot read {shown}"))?;
            if args.json {
                return json_line(&serde_json::json!({
                    "dir": shown,
                    "entries": usage.entries,
                    "bytes": usage.bytes,
                    "stale_entries": usage.stale_entries,
                    "stale_bytes": usage.stale_bytes,
                    "max_bytes": MAX_CACHE_BYTES,
                }));
            }
            println!("{shown}");
            println!(
                "  {} compiled component(s), {} (the host keeps at most {})",
                usage.entries,
                format_bytes(usage.bytes),
                format_bytes(MAX_CACHE_BYTES)
            );
            if usage.stale_entries > 0 {
                println!(
                    "  {} of them ({}) from another evhost build, never loaded by this one: `evhost cache prune` removes them",
                    usage.stale_entries,
                    format_bytes(usage.stale_bytes)
                );
            }
            Ok(())
        }
        CacheCommand::Prune(prune) => {
            let max_bytes = if prune.all {
                0
            } else {
                prune
                    .max_mib
                    .map_or(MAX_CACHE_BYTES, |mib| mib.saturating_mul(1024 * 1024))
            };
            let pruned = cache
                .prune(max_bytes)
                .with_context(|| format!("cannot prune {shown}"))?;
            let left = cache
                .usage()
                .with_context(|| format!("cannot read {shown}"))?;
            if args.json {
                return json_line(&serde_json::json!({
                    "dir": shown,
                    "removed": pruned.removed,
                    "freed_bytes": pruned.freed_bytes,
                    "entries": left.entries,
                    "bytes": left.bytes,
                }));
            }
            println!(
                "removed {} entr{} ({}) from {shown}; {} left ({})",
                pruned.removed,
                if pruned.removed == 1 { "y" } else { "ies" },
                format_bytes(pruned.freed_bytes),
                left.entries,
                format_bytes(left.bytes)
            );
            Ok(())
        }
    }
}
