//! `evhost plugins`: the running host's plugins (`list`), and `check` of a component file
//! without Redis or a running host.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;

use super::common::AdminArgs;
use super::output::{Align, Cell, Style, Table, json_line, truncate};
use evhost::broker::memory::MemoryBroker;
use evhost::host::{FileState, PluginStatus};
use evhost::metrics::Metrics;
use evhost::plugin::{CompileTier, HostServices, PluginEngine, PluginSettings};

/// Arguments of `evhost plugins`.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  evhost plugins                                  # same as `evhost plugins list`\n  evhost plugins list --admin http://127.0.0.1:9464 --json\n  evhost plugins check plugins/payment.wasm       # compile, validate, describe(); no Redis needed"
)]
pub struct PluginsArgs {
    /// What to do [default: list].
    #[command(subcommand)]
    pub command: Option<PluginsCommand>,
    /// Options of `list` when no subcommand is given.
    #[command(flatten)]
    pub list: ListArgs,
}

/// The `plugins` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// The plugins of a running host: state, version, hash, load time, failure reason.
    List(ListArgs),
    /// Compile a component with the host's engine, validate it against the WIT world and
    /// print its describe() (name, version, subscriptions); exits 1 if it would not load.
    Check(CheckArgs),
}

/// Arguments of `evhost plugins list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The running host.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `evhost plugins check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The component (`.wasm`); its sidecar `<name>.toml`, if any, is read and checked too.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A coloured cell for a load state.
pub(crate) fn state_cell(state: &FileState) -> Cell {
    match state {
        FileState::Running => Cell::styled("running", Style::Green),
        FileState::Loading => Cell::styled("loading", Style::Yellow),
        FileState::Failed => Cell::styled("failed", Style::Red),
        FileState::Retired => Cell::styled("retired", Style::Yellow),
    }
}

/// Runs `evhost plugins`.
///
/// # Errors
///
/// When the host cannot be reached, or the checked file would not load.
pub async fn run(args: PluginsArgs) -> anyhow::Result<()> {
    match args.command {
        None => list(args.list).await,
        Some(PluginsCommand::List(list_args)) => list(list_args).await,
        Some(PluginsCommand::Check(check_args)) => check(check_args).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let plugins: Vec<PluginStatus> = args.admin.client().get_json("/api/plugins").await?;
    if args.json {
        return json_line(&plugins);
    }
    if plugins.is_empty() {
        println!("the host at {} has no plugins loaded", args.admin.url);
        return Ok(());
    }
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("STATE", Align::Left),
        ("VERSION", Align::Left),
        ("SHA256", Align::Left),
        ("LOADED AT", Align::Left),
        ("SUBSCRIPTIONS", Align::Left),
        ("FILE / ERROR", Align::Left),
    ]);
    for plugin in &plugins {
        let name = plugin.name.clone().unwrap_or_else(|| {
            std::path::Path::new(&plugin.file).file_stem().map_or_else(
                || plugin.file.clone(),
                |stem| stem.to_string_lossy().into_owned(),
            )
        });
        let last = match &plugin.error {
            Some(error) => Cell::styled(truncate(error, 100), Style::Red),
            None => Cell::styled(file_note(plugin), Style::Dim),
        };
        let state = match plugin.state {
            FileState::Running if plugin.candidate => Cell::styled("candidate", Style::Yellow),
            _ => state_cell(&plugin.state),
        };
        let mut version = plugin.version.clone().unwrap_or_else(|| "-".into());
        if plugin.compiled == Some(CompileTier::Quick) {
            // Serving Winch's code until the optimised recompile replaces it.
            version = format!("{version} (quick-compiled, optimising)");
        }
        if let Some(rollout) = &plugin.rollout {
            version = format!(
                "{version} ({} of {})",
                rollout.mode, rollout.candidate_version
            );
        }
        table.row(vec![
            Cell::styled(name, Style::Bold),
            state,
            version.into(),
            plugin
                .sha256
                .as_deref()
                .map_or("-".to_string(), |sha| sha.chars().take(12).collect())
                .into(),
            plugin
                .loaded_at
                .clone()
                .unwrap_or_else(|| "-".into())
                .into(),
            plugin.subscriptions.join(",").into(),
            last,
        ]);
    }
    table.print();
    Ok(())
}

/// The file of a plugin, and what it holds when that is not what runs (after a rollback or
/// a promotion).
fn file_note(plugin: &PluginStatus) -> String {
    match (&plugin.file_sha256, &plugin.sha256) {
        (Some(on_disk), Some(running)) if on_disk != running => format!(
            "{} (the file holds {}, not what runs)",
            plugin.file,
            &on_disk[..on_disk.len().min(12)]
        ),
        _ => plugin.file.clone(),
    }
}

async fn check(args: CheckArgs) -> anyhow::Result<()> {
    // A throwaway engine on an in-memory broker: describe() runs with the host's capabilities
    // linked, but nothing it could write reaches Redis.
    let services = HostServices::new(Arc::new(MemoryBroker::new()), Arc::new(Metrics::new()));
    let engine = PluginEngine::new(services, None)?;
    let version = engine.load_file(&args.file).await?;
    let sidecar = PluginSettings::sidecar_path(&args.file);
    let sidecar = sidecar.is_file().then(|| sidecar.display().to_string());
    let subscriptions: Vec<String> = version
        .subscriptions
        .iter()
        .map(ToString::to_string)
        .collect();
    let size = std::fs::metadata(&args.file).map_or(0, |meta| meta.len());
    if args.json {
        return json_line(&json!({
            "file": args.file.display().to_string(),
            "bytes": size,
            "sha256": version.sha256,
            "sidecar": sidecar,
            "name": version.name,
            "version": version.version,
            "subscriptions": subscriptions,
        }));
    }
    println!("{} is a valid evhost plugin", args.file.display());
    println!("  name           {}", version.name);
    println!("  version        {}", version.version);
    println!("  subscriptions  {}", subscriptions.join(", "));
    println!("  sha256         {}", version.sha256);
    println!("  size           {} KiB", size / 1024);
    println!(
        "  sidecar        {}",
        sidecar.as_deref().unwrap_or("none (default settings)")
    );
    Ok(())
}
