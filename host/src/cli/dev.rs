//! `evhost dev [DIR]`: the plugin author's loop. It builds the plugin project in DIR (or each
//! project in its subfolders) with the project's `build.sh`, runs a host on the embedded broker
//! (or `--redis`) with the builds, prints what the handlers do, and on every saved change of a
//! project's sources builds it again and hot-swaps it, then re-drives what the version before
//! dead-lettered. `--send FILE` publishes the events of FILE after every build that went
//! live; JSON lines typed on stdin are published too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::common::{shutdown_signal, unpartitioned_broker};
use super::demo::print_activity;
use super::test::read_events;
use evhost::broker::{Broker, EntryId};
use evhost::consumer::ConsumerOptions;
use evhost::event::Event;
use evhost::plugin::CompileTier;
use evhost::{Host, HostOptions};

/// Arguments of `evhost dev`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  evhost new my-plugin --lang rust && evhost dev my-plugin --send my-plugin/event.json\n  evhost dev plugins-src/                 # every project with a build.sh in its subfolders\n  evhost dev my-plugin --redis redis://127.0.0.1:6379\n  echo '{\"message\":\"hi\"}' | evhost dev my-plugin   # data of the plugin's first type, or {\"type\", \"data\"}"
)]
pub struct DevArgs {
    /// A plugin project made by `evhost new` (a folder with `build.sh`), or a folder of them.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Publish the events of this file (as for `evhost test --events`) after every build that
    /// went live.
    #[arg(long, value_name = "FILE")]
    pub send: Option<PathBuf>,
    /// Run on this Redis instead of the embedded in-memory broker.
    #[arg(long)]
    pub redis: Option<String>,
}

/// Source changes closer together than this make one rebuild.
const SETTLE: Duration = Duration::from_millis(300);
/// How long a build that went live may take to be loaded before `--send` gives up on it.
const LOAD_WAIT: Duration = Duration::from_secs(120);

/// One plugin project and where its builds go.
#[derive(Debug, Clone)]
struct Project {
    name: String,
    dir: PathBuf,
    /// The build's output, before it is moved into the host's plugin folder.
    staging: PathBuf,
    /// The file the host loads.
    live: PathBuf,
}

/// The projects in `dir`: itself when it has a `build.sh`, else its subfolders that have one.
fn projects(dir: &Path, work: &Path) -> anyhow::Result<Vec<Project>> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot open {}", dir.display()))?;
    let mut dirs = Vec::new();
    if dir.join("build.sh").is_file() {
        dirs.push(dir.clone());
    } else {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let path = entry?.path();
            if path.join("build.sh").is_file() {
                dirs.push(path);
            }
        }
        dirs.sort();
    }
    if dirs.is_empty() {
        anyhow::bail!(
            "{} has no build.sh, nor any subfolder with one: make a project with `evhost new NAME`",
            dir.display()
        );
    }
    Ok(dirs
        .into_iter()
        .map(|dir| {
            let name = dir.file_name().map_or_else(
                || "plugin".into(),
                |name| name.to_string_lossy().into_owned(),
            );
            Project {
                staging: work.join("staging").join(format!("{name}.wasm")),
                live: work.join("plugins").join(format!("{name}.wasm")),
                name,
                dir,
            }
        })
        .collect())
}

impl Project {
    /// Runs `build.sh` and moves its output into the plugin folder in one rename, so that the
    /// host never reads half a file; returns the component's SHA-256, or why the build failed
    /// (the running version keeps serving).
    async fn build(&self) -> Result<String, String> {
        let started = Instant::now();
        println!("[dev] building {} ...", self.name);
        let evhost = std::env::current_exe().map_err(|err| err.to_string())?;
        let output = tokio::process::Command::new("bash")
            .arg(self.dir.join("build.sh"))
            .arg(&self.staging)
            .current_dir(&self.dir)
            .env("EVHOST", evhost)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|err| format!("cannot run {}/build.sh: {err}", self.dir.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "build.sh failed ({}):\n{}",
                output.status,
                tail.join("\n")
            ));
        }
        let bytes = std::fs::read(&self.staging)
            .map_err(|err| format!("build.sh wrote no {}: {err}", self.staging.display()))?;
        std::fs::rename(&self.staging, &self.live)
            .map_err(|err| format!("cannot move the build to {}: {err}", self.live.display()))?;
        println!(
            "[dev] built {} in {:.1} s ({} KiB)",
            self.name,
            started.elapsed().as_secs_f64(),
            bytes.len() / 1024
        );
        Ok(evhost::plugin::sha256_hex(&bytes))
    }

    /// Whether `path` is one of the project's sources: not its build outputs, dependencies or
    /// hidden files.
    fn is_source(&self, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(&self.dir) else {
            return false;
        };
        let ignored = relative.components().any(|part| {
            let part = part.as_os_str().to_string_lossy();
            part.starts_with('.')
                || matches!(
                    part.as_ref(),
                    "target" | "node_modules" | "__pycache__" | "build" | "dist"
                )
        });
        !ignored && path.extension().is_none_or(|ext| ext != "wasm")
    }
}

/// Waits until the host runs the version of `project` with `sha256`; false when it did not
/// within [`LOAD_WAIT`] (a load failure is in the log).
async fn wait_live(host: &Host, project: &Project, sha256: &str) -> bool {
    let deadline = Instant::now() + LOAD_WAIT;
    let file = project.live.display().to_string();
    while Instant::now() < deadline {
        let live = host
            .plugin_statuses()
            .iter()
            .any(|status| status.file == file && status.sha256.as_deref() == Some(sha256));
        if live {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Waits until the running version of `project` has its consumer group on the stream of each
/// exact type it subscribes to: a group starting at `$` would not see an event sent before it
/// was created. False when that did not happen within 10 s.
async fn wait_consuming(host: &Host, broker: &dyn Broker, project: &Project) -> bool {
    let file = project.live.display().to_string();
    let Some(status) = host
        .plugin_statuses()
        .into_iter()
        .find(|status| status.file == file)
    else {
        return false;
    };
    let Some(plugin) = status.name else {
        return false;
    };
    let streams: Vec<String> = status
        .subscriptions
        .iter()
        .filter(|subscription| !subscription.contains(['*', '?', '[']))
        .map(|event_type| evhost::keyspace::Keyspace::single().event_stream(event_type))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut consuming = true;
        for stream in &streams {
            let groups = broker.groups(stream).await.unwrap_or_default();
            consuming &= groups.iter().any(|group| group.name == plugin);
        }
        if consuming {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The first exact type `project`'s running version subscribes to.
fn first_type(host: &Host, project: &Project) -> Option<String> {
    let file = project.live.display().to_string();
    host.plugin_statuses()
        .into_iter()
        .find(|status| status.file == file)
        .and_then(|status| {
            status
                .subscriptions
                .into_iter()
                .find(|subscription| !subscription.contains(['*', '?', '[']))
        })
}

/// " (quick-compiled; ...)" when `project`'s running version serves Winch's code until its
/// optimised recompile replaces it, else nothing.
fn tier_note(host: &Host, project: &Project) -> &'static str {
    let file = project.live.display().to_string();
    let quick = host
        .plugin_statuses()
        .into_iter()
        .any(|status| status.file == file && status.compiled == Some(CompileTier::Quick));
    if quick {
        " (quick-compiled; the optimised code replaces it in a few seconds)"
    } else {
        ""
    }
}

/// Most dead letters re-driven after one swap.
const MAX_REDRIVEN: usize = 10_000;

/// Hands the events an earlier version of `project` dead-lettered since `since` (the start
/// of this session: older ones of a shared Redis are left alone) to the version now live:
/// what failed while the fix was being built is handled again, not left behind.
async fn redrive_dead_letters(host: &Host, broker: &dyn Broker, project: &Project, since: EntryId) {
    let file = project.live.display().to_string();
    let Some(plugin) = host
        .plugin_statuses()
        .into_iter()
        .find(|status| status.file == file)
        .and_then(|status| status.name)
    else {
        return;
    };
    let layout = evhost::keyspace::Keyspace::single();
    let letters = match evhost::dlq::list(broker, layout, &plugin, MAX_REDRIVEN).await {
        Ok(letters) => letters,
        Err(err) => {
            println!("[dev] cannot read the dead letters of {plugin}: {err}");
            return;
        }
    };
    let recent: Vec<_> = letters
        .into_iter()
        .filter(|letter| letter.dlq_id.parse::<EntryId>().is_ok_and(|id| id >= since))
        .collect();
    if recent.is_empty() {
        return;
    }
    let redriven = evhost::dlq::redrive(broker, layout, &plugin, &recent).await;
    match redriven {
        Ok(moved) => {
            println!("[dev] re-drove {moved} dead-lettered event(s) of {plugin} to the new version")
        }
        Err(err) => println!("[dev] cannot re-drive the dead letters of {plugin}: {err}"),
    }
}

/// Publishes `events` to the broker the host runs on.
async fn publish(broker: &dyn Broker, events: &[Event]) {
    for event in events {
        let stream = evhost::keyspace::Keyspace::single().event_stream(&event.event_type);
        match broker.add(&stream, &event.to_fields()).await {
            Ok(id) => println!(
                "[dev] sent {} {} as {id}",
                event.event_type,
                String::from_utf8_lossy(&event.data)
            ),
            Err(err) => println!("[dev] cannot send {}: {err}", event.event_type),
        }
    }
}

/// Runs `evhost dev`.
///
/// # Errors
///
/// When DIR holds no project, Redis cannot be reached, or the host cannot start.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let session_start = EntryId::new(
        u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0),
        0,
    );
    let work = tempfile::tempdir().context("cannot create a work folder")?;
    std::fs::create_dir_all(work.path().join("staging"))?;
    std::fs::create_dir_all(work.path().join("plugins"))?;
    let projects = projects(&args.dir, work.path())?;
    let (broker, place) = unpartitioned_broker(args.redis.as_deref(), "dev").await?;
    let options = HostOptions {
        consumer: ConsumerOptions {
            consumer: "evhost-dev".into(),
            block: Duration::from_millis(200),
            retry_interval: Duration::from_millis(500),
            ..ConsumerOptions::default()
        },
        discovery_interval: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(5),
        cache_dir: super::run::default_cache_dir(),
        ..HostOptions::default()
    };
    let host = Host::new(broker.clone(), options).context("cannot start the Wasm engine")?;
    println!(
        "[dev] {} project(s) on {place}: {}",
        projects.len(),
        projects
            .iter()
            .map(|project| project.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut built = HashMap::new();
    for project in &projects {
        match project.build().await {
            Ok(sha256) => {
                built.insert(project.name.clone(), sha256);
            }
            Err(reason) => println!("[dev] {}: {reason}", project.name),
        }
    }
    let plugins = work.path().join("plugins");
    host.add_dir(&plugins)
        .await
        .with_context(|| format!("cannot read {}", plugins.display()))?;
    let _plugin_watcher = host.watch_dir(&plugins)?;
    let printer = tokio::spawn(print_activity(host.services().activity.subscribe()));
    let runner = {
        let host = host.clone();
        tokio::spawn(async move { host.run(std::future::pending()).await })
    };

    // Source changes, by project.
    let (changed_tx, mut changed) = mpsc::unbounded_channel::<usize>();
    let filters = projects.clone();
    let mut source_watcher =
        notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
            let Ok(event) = result else { return };
            if !evhost::watch::changes_content(&event.kind) {
                return;
            }
            for path in &event.paths {
                if let Some(index) = filters.iter().position(|project| project.is_source(path)) {
                    let _ = changed_tx.send(index);
                }
            }
        })?;
    for project in &projects {
        source_watcher
            .watch(&project.dir, RecursiveMode::Recursive)
            .with_context(|| format!("cannot watch {}", project.dir.display()))?;
    }

    // Events typed on stdin, read by a thread of their own (reading stdin blocks).
    let (typed_tx, mut typed) = mpsc::unbounded_channel::<String>();
    std::thread::Builder::new()
        .name("evhost-dev-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { return };
                if !line.trim().is_empty() && typed_tx.send(line).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the stdin reader")?;

    let send = |project: &Project| {
        let host = host.clone();
        let broker = broker.clone();
        let file = args.send.clone();
        let live = project.clone();
        async move {
            let Some(file) = file else { return };
            if !wait_consuming(&host, broker.as_ref(), &live).await {
                println!(
                    "[dev] {} does not consume its types yet; sending anyway",
                    live.name
                );
            }
            match read_events(&file, None, first_type(&host, &live)) {
                Ok(events) => publish(broker.as_ref(), &events).await,
                Err(err) => println!("[dev] cannot send {}: {err:#}", file.display()),
            }
        }
    };
    for project in &projects {
        if let Some(sha256) = built.get(&project.name) {
            if wait_live(&host, project, sha256).await {
                println!(
                    "[dev] {} is live{}",
                    project.name,
                    tier_note(&host, project)
                );
                send(project).await;
            } else {
                println!("[dev] {} did not load; see the log above", project.name);
            }
        }
    }
    println!(
        "[dev] watching the sources; save a file to rebuild, type JSON lines to send events, Ctrl-C to stop"
    );

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(index) = changed.recv() => {
                // Let the editor finish writing; take every change of the moment.
                tokio::time::sleep(SETTLE).await;
                let mut due = vec![index];
                while let Ok(more) = changed.try_recv() {
                    if !due.contains(&more) {
                        due.push(more);
                    }
                }
                for index in due {
                    let project = &projects[index];
                    match project.build().await {
                        Ok(sha256) => {
                            if wait_live(&host, project, &sha256).await {
                                println!("[dev] {} swapped{}", project.name, tier_note(&host, project));
                                redrive_dead_letters(&host, broker.as_ref(), project, session_start).await;
                                send(project).await;
                            } else {
                                println!("[dev] {} did not load; the previous version keeps serving", project.name);
                            }
                        }
                        Err(reason) => println!("[dev] {}: {reason}\n[dev] the previous version keeps serving", project.name),
                    }
                }
            }
            Some(line) = typed.recv() => {
                let default_type = projects.first().and_then(|project| first_type(&host, project));
                match super::test::parse_typed_line(&line, default_type) {
                    Ok(event) => publish(broker.as_ref(), std::slice::from_ref(&event)).await,
                    Err(reason) => println!("[dev] not sent: {reason}"),
                }
            }
        }
    }
    host.stop();
    let _ = runner.await;
    printer.abort();
    Ok(())
}
