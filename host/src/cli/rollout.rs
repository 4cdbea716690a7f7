//! `evhost rollout start|status|promote|abort` and `evhost rollback`: safe rollouts through a
//! running host (see `evhost::rollout`).
//!
//! `start` is the file-driven rollout done for you: it writes the candidate beside the live
//! plugin's file as `<name>.next.wasm`, with a `<name>.next.toml` sidecar holding the live
//! settings and the `[rollout]` table, then waits for the host to take it up or refuse it.
//! With `--upload` it sends the component to the host instead (a host on another machine);
//! such a candidate takes the live settings and is gone when the host restarts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use super::common::AdminArgs;
use super::output::{Align, Cell, Style, Table, json_line};
use evhost::host::{FileState, PluginStatus};
use evhost::rollout::{Mode, Promotion, RolloutPlan, RolloutStatus};

/// Arguments of `evhost rollout`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  evhost rollout start payment --file target/payment-v2.wasm                 # shadow: compare, commit nothing\n  evhost rollout start payment --file new.wasm --mode canary --share 10 --promote auto\n  evhost rollout status payment\n  evhost rollout promote payment\n  evhost rollout abort payment\n  evhost rollback payment                                                    # back to the previous version"
)]
pub struct RolloutArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RolloutCommand,
}

/// The `rollout` subcommands.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Roll a new version of a running plugin out beside its live version.
    Start(StartArgs),
    /// The rollouts under way: agreement, failures and p50/p99 of both versions.
    Status(StatusArgs),
    /// Make the candidate the live version.
    Promote(ChangeArgs),
    /// Call the rollout off: the live version alone serves again.
    Abort(ChangeArgs),
}

/// How the candidate meets events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// A copy of every event; its effects are compared with the live ones, never committed.
    Shadow,
    /// The events of a share of the keys, for real.
    Canary,
}

/// When a clean candidate takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PromoteArg {
    /// Only by `evhost rollout promote`.
    Manual,
    /// After `--clean-windows` clean windows in a row.
    Auto,
}

/// Arguments of `evhost rollout start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The running plugin to roll a new version of.
    pub plugin: String,
    /// The new version's component (`.wasm`); a sidecar beside it (`<file>.toml`) is used for
    /// its settings, else the live version's.
    #[arg(long)]
    pub file: PathBuf,
    /// Shadow or canary.
    #[arg(long, value_enum, default_value_t = ModeArg::Shadow)]
    pub mode: ModeArg,
    /// Canary: the share of partition keys the candidate handles, in percent.
    #[arg(long, default_value_t = 10.0)]
    pub share: f64,
    /// Length of a judging window, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub window_ms: u64,
    /// Candidate calls a window needs before it is judged.
    #[arg(long, default_value_t = 20)]
    pub min_calls: u64,
    /// Roll back when the candidate's failure rate exceeds the live one's by more points.
    #[arg(long, default_value_t = 5.0)]
    pub failure_margin_pct: f64,
    /// Roll back when the candidate's p99 exceeds the live one's by more percent...
    #[arg(long, default_value_t = 50.0)]
    pub p99_margin_pct: f64,
    /// ... and by more milliseconds.
    #[arg(long, default_value_t = 5)]
    pub p99_floor_ms: u64,
    /// Manual or automatic promotion.
    #[arg(long, value_enum, default_value_t = PromoteArg::Manual)]
    pub promote: PromoteArg,
    /// Clean windows in a row before an automatic promotion.
    #[arg(long, default_value_t = 3)]
    pub clean_windows: u32,
    /// The host's plugin directory, if the path the host reports is not valid here.
    #[arg(long, value_name = "DIR", conflicts_with = "upload")]
    pub plugins_dir: Option<PathBuf>,
    /// Send the component to the host through its admin endpoint instead of writing files
    /// (for a host on another machine; the candidate then lives until the host restarts).
    #[arg(long)]
    pub upload: bool,
    /// How long to wait for the host to take the candidate up.
    #[arg(long, default_value_t = 120)]
    pub wait_secs: u64,
    /// The running host.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Arguments of `evhost rollout status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this plugin.
    pub plugin: Option<String>,
    /// Also list the latest shadow mismatches with their differences.
    #[arg(long)]
    pub mismatches: bool,
    /// One JSON object per line (one per plugin with a rollout).
    #[arg(long)]
    pub json: bool,
    /// The running host.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Arguments of `promote`, `abort` and `evhost rollback`.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// The plugin.
    pub plugin: String,
    /// Print the transition as JSON.
    #[arg(long)]
    pub json: bool,
    /// The running host.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs `evhost rollout`.
///
/// # Errors
///
/// When the host cannot be reached or refuses.
pub async fn run(args: RolloutArgs) -> anyhow::Result<()> {
    match args.command {
        RolloutCommand::Start(args) => start(args).await,
        RolloutCommand::Status(args) => status(args).await,
        RolloutCommand::Promote(args) => change(args, "promote").await,
        RolloutCommand::Abort(args) => change(args, "abort").await,
    }
}

/// Runs `evhost rollback`.
///
/// # Errors
///
/// When the host cannot be reached or has nothing to roll back to.
pub async fn rollback(args: ChangeArgs) -> anyhow::Result<()> {
    change(args, "rollback").await
}

/// The answer to a change.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct ChangeAnswer {
    transition: evhost::rollout::Transition,
    took_ms: f64,
}

/// `name` as one segment of a URL path.
fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Prints a change's transition, or the answer as JSON.
fn print_change(plugin: &str, answer: &ChangeAnswer, json: bool) -> anyhow::Result<()> {
    if json {
        return json_line(answer);
    }
    let transition = &answer.transition;
    println!(
        "{}: {} — {} → {} (took {:.1} ms; {})",
        plugin,
        transition.kind.as_str(),
        transition.from,
        transition.to,
        answer.took_ms,
        transition.reason
    );
    Ok(())
}

async fn change(args: ChangeArgs, action: &str) -> anyhow::Result<()> {
    let path = format!("/api/plugins/{}/{action}", path_segment(&args.plugin));
    let answer: ChangeAnswer = args
        .admin
        .client()
        .post_json(&path)
        .await
        .with_context(|| format!("cannot {action} plugin {:?}", args.plugin))?;
    print_change(&args.plugin, &answer, args.json)
}

fn plan_of(args: &StartArgs) -> RolloutPlan {
    RolloutPlan {
        mode: match args.mode {
            ModeArg::Shadow => Mode::Shadow,
            ModeArg::Canary => Mode::Canary,
        },
        share_pct: args.share,
        window: Duration::from_millis(args.window_ms),
        min_calls: args.min_calls,
        failure_margin_pct: args.failure_margin_pct,
        p99_margin_pct: args.p99_margin_pct,
        p99_floor: Duration::from_millis(args.p99_floor_ms),
        promote: match args.promote {
            PromoteArg::Manual => Promotion::Manual,
            PromoteArg::Auto => Promotion::Auto,
        },
        clean_windows: args.clean_windows,
    }
}

/// The candidate's sidecar: `settings` (TOML text) without any `[rollout]` table, then the
/// plan's.
fn candidate_sidecar(settings: &str, plan: &RolloutPlan) -> anyhow::Result<String> {
    let mut table: toml::Table = toml::from_str(settings).context("the sidecar is not TOML")?;
    table.remove("rollout");
    let mut text = toml::to_string(&table).context("cannot write the sidecar")?;
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    text.push_str(&plan.to_toml());
    Ok(text)
}

/// Writes `bytes` to `path` through a hidden temporary file and a rename, so that the host's
/// watcher never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .context("the file has no name")?;
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot move {} to {}", temporary.display(), path.display()))
}

async fn start(args: StartArgs) -> anyhow::Result<()> {
    let plan = plan_of(&args);
    if !(0.0..=100.0).contains(&plan.share_pct) {
        return Err(super::UsageError(format!(
            "--share must be between 0 and 100, not {}",
            plan.share_pct
        ))
        .into());
    }
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let client = args.admin.client();
    if args.upload {
        let path = format!(
            "/api/plugins/{}/rollout?{}",
            path_segment(&args.plugin),
            plan.to_query()
        );
        let answer: ChangeAnswer = client
            .post_bytes_json(&path, bytes)
            .await
            .with_context(|| format!("cannot roll {} out", args.file.display()))?;
        return print_change(&args.plugin, &answer, false);
    }
    let plugins: Vec<PluginStatus> = client.get_json("/api/plugins").await?;
    let live = plugins
        .iter()
        .find(|status| !status.candidate && status.name.as_deref() == Some(args.plugin.as_str()))
        .with_context(|| {
            format!(
                "plugin {:?} does not run in the host at {} (evhost plugins lists what does)",
                args.plugin, args.admin.url
            )
        })?;
    let live_file = PathBuf::from(&live.file);
    let stem = live_file
        .file_stem()
        .and_then(|stem| stem.to_str())
        .filter(|_| live_file.extension().is_some_and(|ext| ext == "wasm"))
        .with_context(|| {
            format!(
                "plugin {:?} does not come from a file ({}): only plugins loaded from a plugin directory can be rolled out",
                args.plugin, live.file
            )
        })?;
    let dir = match &args.plugins_dir {
        Some(dir) => dir.clone(),
        None => live_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    anyhow::ensure!(
        dir.is_dir(),
        "the host's plugin directory {} is not a directory here: pass --plugins-dir, or --upload to send the component to the host",
        dir.display()
    );
    let own_sidecar = args.file.with_extension("toml");
    let live_sidecar = dir.join(format!("{stem}.toml"));
    let settings = [own_sidecar, live_sidecar]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    let candidate = dir.join(format!("{stem}.next.wasm"));
    write_atomically(
        &candidate.with_extension("toml"),
        candidate_sidecar(&settings, &plan)?.as_bytes(),
    )?;
    write_atomically(&candidate, &bytes)?;
    let sha256 = evhost::plugin::sha256_hex(&bytes);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.wait_secs);
    loop {
        let plugins: Vec<PluginStatus> = client.get_json("/api/plugins").await?;
        let row = plugins.iter().find(|status| {
            status.candidate && Path::new(&status.file).file_name() == candidate.file_name()
        });
        match row {
            Some(row)
                if row.state == FileState::Running
                    && row.sha256.as_deref() == Some(sha256.as_str()) =>
            {
                println!(
                    "rollout of {} started: version {} ({}) as a {} candidate{}; follow it with `evhost rollout status {}`",
                    args.plugin,
                    row.version.as_deref().unwrap_or("?"),
                    &sha256[..12],
                    plan.mode,
                    if plan.mode == Mode::Canary {
                        format!(" for {}% of the keys", plan.share_pct)
                    } else {
                        String::new()
                    },
                    args.plugin
                );
                return Ok(());
            }
            Some(row) if row.state == FileState::Failed => {
                anyhow::bail!(
                    "the host refused the candidate {}: {}; the live version goes on serving",
                    candidate.display(),
                    row.error.as_deref().unwrap_or("no reason given")
                );
            }
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the host did not take {} up within {} s (is it watching {}?)",
            candidate.display(),
            args.wait_secs,
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `a.b` with one decimal, or `-`.
fn figure(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "-".to_string(), |value| format!("{value:.1}{unit}"))
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let plugins: Vec<PluginStatus> = args.admin.client().get_json("/api/plugins").await?;
    let rollouts: Vec<(String, RolloutStatus, Option<String>)> = plugins
        .into_iter()
        .filter(|status| !status.candidate)
        .filter_map(|status| {
            let name = status.name?;
            let rollout = status.rollout?;
            Some((name, rollout, status.version))
        })
        .filter(|(name, _, _)| args.plugin.as_deref().is_none_or(|plugin| plugin == name))
        .collect();
    if args.json {
        for (name, rollout, live) in &rollouts {
            json_line(
                &serde_json::json!({ "plugin": name, "live_version": live, "rollout": rollout }),
            )?;
        }
        return Ok(());
    }
    if rollouts.is_empty() {
        match &args.plugin {
            Some(plugin) => println!("plugin {plugin:?} has no rollout under way"),
            None => println!("no rollout under way in the host at {}", args.admin.url),
        }
        return Ok(());
    }
    let mut table = Table::new(&[
        ("PLUGIN", Align::Left),
        ("MODE", Align::Left),
        ("LIVE → CANDIDATE", Align::Left),
        ("AGREE", Align::Right),
        ("CALLS L/C", Align::Right),
        ("FAILED L/C", Align::Right),
        ("P50 L/C", Align::Right),
        ("P99 L/C", Align::Right),
        ("CLEAN", Align::Right),
    ]);
    for (name, rollout, live) in &rollouts {
        let mode = match rollout.mode {
            Mode::Shadow => "shadow".to_string(),
            Mode::Canary => format!("canary {}%", rollout.plan.share_pct),
        };
        table.row(vec![
            Cell::styled(name.clone(), Style::Bold),
            mode.into(),
            format!(
                "{} → {} ({})",
                live.as_deref().unwrap_or("?"),
                rollout.candidate_version,
                &rollout.candidate_sha256[..rollout.candidate_sha256.len().min(12)]
            )
            .into(),
            figure(rollout.agreement_pct, "%").into(),
            format!("{}/{}", rollout.live.calls, rollout.candidate.calls).into(),
            format!(
                "{:.1}%/{:.1}%",
                rollout.live.failure_pct, rollout.candidate.failure_pct
            )
            .into(),
            format!(
                "{:.2}/{:.2} ms",
                rollout.live.p50_ms, rollout.candidate.p50_ms
            )
            .into(),
            format!(
                "{:.2}/{:.2} ms",
                rollout.live.p99_ms, rollout.candidate.p99_ms
            )
            .into(),
            format!("{}/{}", rollout.clean_windows, rollout.plan.clean_windows).into(),
        ]);
    }
    table.print();
    if args.mismatches {
        for (name, rollout, _) in &rollouts {
            for mismatch in &rollout.recent_mismatches {
                println!(
                    "\n{name}: event {} (entry {} of {}) at {}:\n{}",
                    mismatch.event_id,
                    mismatch.entry_id,
                    mismatch.stream,
                    mismatch.at,
                    mismatch.diff
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidate_sidecar_keeps_the_live_settings_and_replaces_the_rollout_table() {
        let live = "start = \"0\"\n[config]\nname = \"payment\"\n[rollout]\nmode = \"canary\"\n";
        let plan = RolloutPlan::default();
        let text = candidate_sidecar(live, &plan).expect("sidecar");
        let table: toml::Table = toml::from_str(&text).expect("TOML");
        assert_eq!(table["start"].as_str(), Some("0"));
        assert_eq!(table["config"]["name"].as_str(), Some("payment"));
        assert_eq!(table["rollout"]["mode"].as_str(), Some("shadow"));
        let alone = candidate_sidecar("", &plan).expect("sidecar");
        assert!(alone.starts_with("[rollout]"), "{alone}");
    }
}
