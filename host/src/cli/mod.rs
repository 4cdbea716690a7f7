//! The `evhost` command line: one module per subcommand.

mod bench;
mod bindgen;
mod cache;
mod common;
mod componentize;
mod config_file;
mod demo;
mod dev;
mod dlq;
mod doctor;
mod event_view;
mod examples;
mod history;
mod init;
mod new;
mod output;
mod plugins;
mod publish;
mod replay;
mod rollout;
mod run;
mod stats;
mod tail;
mod test;

use std::process::ExitCode;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};

pub use bench::BenchArgs;
pub use bindgen::BindgenArgs;
pub use common::redact_url;
pub use componentize::ComponentizeArgs;
pub use config_file::ConfigFileError;
pub use demo::DemoArgs;
pub use dev::DevArgs;
pub use dlq::DlqArgs;
pub use doctor::DoctorArgs;
pub use examples::ExamplesArgs;
pub use history::HistoryArgs;
pub use init::InitArgs;
pub use plugins::PluginsArgs;
pub use publish::PublishArgs;
pub use replay::ReplayArgs;
pub use rollout::RolloutArgs;
pub use run::RunArgs;
pub use stats::StatsArgs;
pub use tail::TailArgs;
pub use test::TestArgs;

/// evhost: run WebAssembly event handlers on Redis Streams.
#[derive(Debug, Parser)]
#[command(name = "evhost", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Examples:\n  evhost demo                      # the auction saga on an in-memory broker\n  evhost run --plugins ./plugins   # consume from Redis at $REDIS_URL\n  evhost publish AuctionEnded '{\"auction_id\":\"a1\",\"winning_bidder_id\":\"b1\",\"winning_price\":120}'"
)]
pub struct Cli {
    /// Configuration file with defaults for any flag (`evhost.toml`; environment variables and
    /// flags override it).
    #[arg(long, global = true, env = "EVHOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "EVHOST_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host: load plugins and consume their streams from Redis.
    Run(RunArgs),
    /// Fix the keyspace's partition count before any host runs on it.
    Init(InitArgs),
    /// Publish one event to `events:<TYPE>` and print its id, or every line of a file.
    Publish(PublishArgs),
    /// Show past events of one type, oldest (or newest) first.
    History(HistoryArgs),
    /// Follow new events live (no consumer group, nothing acknowledged).
    Tail(TailArgs),
    /// Streams, consumer groups (pending, lag) and a running host's plugin counters.
    Stats(StatsArgs),
    /// List a running host's plugins, or check a plugin file without running it.
    Plugins(PluginsArgs),
    /// Roll a new plugin version out beside the live one (shadow or canary), follow it,
    /// promote it or call it off, through a running host.
    Rollout(RolloutArgs),
    /// Return a plugin of a running host to its previous version (or back its candidate out).
    Rollback(rollout::ChangeArgs),
    /// Re-deliver past events of one type to one plugin only.
    Replay(ReplayArgs),
    /// Run a plugin on events without Redis or a host and print what it would commit.
    Test(TestArgs),
    /// Build a plugin project, run it on the embedded broker, rebuild and swap it on each save.
    Dev(DevArgs),
    /// Run the auction saga with the example plugins, on an in-memory broker or on Redis.
    Demo(DemoArgs),
    /// Write the example plugins (payment, notification, audit, metrics) into a directory.
    Examples(ExamplesArgs),
    /// List, show, re-drive or purge a plugin's dead letters.
    Dlq(DlqArgs),
    /// Check the Redis settings and streams that lose or stall events (exit 3 on a danger).
    Doctor(DoctorArgs),
    /// Show the compile cache, or prune it.
    Cache(cache::CacheArgs),
    /// Measure evhost beside a raw Redis consumer loop (throughput, latency, hot swap, memory).
    Bench(BenchArgs),
    /// Create a plugin project (Rust, Python, JavaScript or C) that builds with one command.
    New(new::NewArgs),
    /// Write bindings of the evhost WIT world for a plugin in C.
    Bindgen(BindgenArgs),
    /// Wrap a core Wasm module (e.g. built by clang) into a plugin component.
    Componentize(ComponentizeArgs),
}

impl Command {
    /// The default log filter of the subcommand when neither `EVHOST_LOG` nor `RUST_LOG` is set.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Run(_) => "info",
            Command::Demo(_)
            | Command::Publish(_)
            | Command::Init(_)
            | Command::Examples(_)
            | Command::Dlq(_)
            | Command::Doctor(_)
            | Command::Bench(_)
            | Command::Cache(_)
            | Command::History(_)
            | Command::Tail(_)
            | Command::Stats(_)
            | Command::Plugins(_)
            | Command::Rollout(_)
            | Command::Rollback(_)
            | Command::Replay(_)
            | Command::Test(_)
            | Command::Dev(_)
            | Command::New(_)
            | Command::Bindgen(_)
            | Command::Componentize(_) => "warn",
        }
    }
}

/// Parses `args` (the program name first), with defaults from the `--config` file.
///
/// # Errors
///
/// A clap error (usage error, or `--help`/`--version` output) or a configuration file that
/// cannot be used, both to be reported with exit code 2 (`--help`: 0, see [`clap::Error::exit`]).
pub fn parse(args: Vec<OsString>) -> Result<Cli, ParseError> {
    let args = join_repeated_seeds(args);
    let command = Cli::command();
    let strict = command.clone().try_get_matches_from(&args);
    // A flag that is required may come from the file: find the file and the subcommand path
    // with a lenient parse, then parse again with the file's values in place.
    let lenient = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&args);
    let matches = match (strict, lenient) {
        (Ok(matches), _) if matches.get_one::<PathBuf>("config").is_none() => matches,
        (Err(err), Ok(lenient)) if lenient.get_one::<PathBuf>("config").is_none() => {
            return Err(err.into());
        }
        (Err(err), Err(_)) => return Err(err.into()),
        (_, Ok(lenient)) => {
            let args = config_file::apply(&command, &lenient, args)?;
            command.try_get_matches_from(args)?
        }
        (Ok(matches), Err(_)) => matches,
    };
    Ok(Cli::from_arg_matches(&matches)?)
}

/// `--redis A --redis B` (seeds of a Redis Cluster given one by one) as `--redis A,B`, the
/// form every command takes; arguments after `--` are left alone.
fn join_repeated_seeds(args: Vec<OsString>) -> Vec<OsString> {
    let mut seeds: Vec<String> = Vec::new();
    let mut first = None;
    let mut kept = Vec::with_capacity(args.len());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            kept.push(arg);
            kept.extend(args.by_ref());
            break;
        }
        let value = match text.strip_prefix("--redis") {
            Some("") => args
                .next()
                .map(|value| value.to_string_lossy().into_owned()),
            Some(rest) if rest.starts_with('=') => Some(rest[1..].to_string()),
            _ => {
                kept.push(arg);
                continue;
            }
        };
        let Some(value) = value else {
            // A last `--redis` without its value: clap says what is missing.
            kept.push(arg);
            continue;
        };
        if first.is_none() {
            first = Some(kept.len());
            kept.push(OsString::new());
        }
        seeds.push(value);
    }
    if let Some(index) = first {
        kept[index] = OsString::from(format!("--redis={}", seeds.join(",")));
    }
    kept
}

/// Why the command line could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Bad arguments, or a request for help or the version.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// The configuration file cannot be used.
    #[error(transparent)]
    ConfigFile(#[from] ConfigFileError),
}

/// Sets up `tracing`: filter from `EVHOST_LOG`, else `RUST_LOG`, else `default_filter`.
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("EVHOST_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default_filter.to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|err| {
        eprintln!("warning: ignoring invalid log filter {filter:?}: {err}");
        EnvFilter::new(default_filter)
    });
    // Colours only on a terminal: a log redirected to a file or a pipe stays plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(err) = result {
        eprintln!("warning: logging already initialised: {err}");
    }
}

/// Runs a parsed command line; returns the process exit code (0 ok, 1 runtime failure).
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Publish(args) => publish::run(args).await,
        Command::Init(args) => init::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Examples(args) => examples::run(args),
        Command::Dlq(args) => dlq::run(args).await,
        Command::Doctor(args) => doctor::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Cache(args) => cache::run(args),
        Command::History(args) => history::run(args).await,
        Command::Tail(args) => tail::run(args).await,
        Command::Stats(args) => stats::run(args).await,
        Command::Plugins(args) => plugins::run(args).await,
        Command::Rollout(args) => rollout::run(args).await,
        Command::Rollback(args) => rollout::rollback(args).await,
        Command::Replay(args) => replay::run(args).await,
        Command::Test(args) => test::run(args).await,
        Command::Dev(args) => dev::run(args).await,
        Command::New(args) => new::run(args),
        Command::Bindgen(args) => bindgen::run(args),
        Command::Componentize(args) => componentize::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else if err.downcast_ref::<doctor::DangerFound>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Bad input on the command line (exit code 2, like clap's own usage errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    /// Seeds given one by one become one comma-separated `--redis`; one stays as it is.
    #[test]
    fn repeated_seeds_are_joined() {
        assert_eq!(
            join_repeated_seeds(strings(&[
                "evhost",
                "run",
                "--redis",
                "redis://a:1",
                "--consumer",
                "c",
                "--redis=redis://b:2",
                "--",
                "--redis",
                "x",
            ])),
            strings(&[
                "evhost",
                "run",
                "--redis=redis://a:1,redis://b:2",
                "--consumer",
                "c",
                "--",
                "--redis",
                "x",
            ])
        );
        assert_eq!(
            join_repeated_seeds(strings(&["evhost", "stats", "--redis", "redis://a:1"])),
            strings(&["evhost", "stats", "--redis=redis://a:1"])
        );
        assert_eq!(
            join_repeated_seeds(strings(&["evhost", "stats", "--redis"])),
            strings(&["evhost", "stats", "--redis"])
        );
        assert_eq!(
            join_repeated_seeds(strings(&["evhost", "demo", "--redisx"])),
            strings(&["evhost", "demo", "--redisx"])
        );
    }
}
