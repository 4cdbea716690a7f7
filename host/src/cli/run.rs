//! `evhost run`: load the plugins of a directory and consume their streams from Redis.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::common::{DEFAULT_REDIS_URL, connect_redis_waiting, redact_url, shutdown_signal};
use evhost::admin;
use evhost::consumer::ConsumerOptions;
use evhost::doctor::Level;
use evhost::host::{Host, HostOptions};

/// Arguments of `evhost run`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  evhost run\n  evhost run --plugins ./plugins --redis redis://127.0.0.1:6379\n  REDIS_URL=redis://:secret@redis:6379 evhost run --consumer worker-2"
)]
pub struct RunArgs {
    /// Directory of plugin components (`*.wasm`, with optional `<name>.toml` sidecars).
    #[arg(long, env = "EVHOST_PLUGINS", default_value = "./plugins")]
    pub plugins: PathBuf,
    /// Redis server URL (`redis://[user:pass@]host:port[/db]`); for a Redis Cluster, any node
    /// (or several seeds: separated by commas, or one `--redis` each).
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis: String,
    /// Consumer name within each group [default: the hostname]. Hosts sharing a group need
    /// distinct names; a restarted host with the same name finds its pending entries.
    #[arg(long, env = "EVHOST_CONSUMER")]
    pub consumer: Option<String>,
    /// Address of the admin endpoint (`/metrics`, `/healthz`, `/readyz`, `/api/plugins`).
    #[arg(long, env = "EVHOST_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Bearer token that `/api/*` of the admin endpoint requires (give it when the endpoint
    /// listens off loopback; `/metrics`, `/healthz` and `/readyz` stay open).
    #[arg(long, env = "EVHOST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Entries per read.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// How long a read waits for new entries, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub block_ms: u64,
    /// How often pending entries are checked for a due retry, in milliseconds (each plugin's
    /// sidecar sets its backoff and attempts).
    #[arg(long, default_value_t = 500)]
    pub retry_interval_ms: u64,
    /// How long another consumer's pending entries must be idle before this host takes them
    /// over (a crashed host), in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub claim_idle_ms: u64,
    /// How often new streams are looked for, in milliseconds (`SCAN events:*`; the registry
    /// of streams on a partitioned keyspace).
    #[arg(long, default_value_t = 1000)]
    pub discovery_interval_ms: u64,
    /// On a partitioned keyspace, how often the keyspace is walked for streams nobody
    /// registered and for new plain `events:*` ingress streams, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub full_scan_interval_ms: u64,
    /// How long shutdown waits for in-flight handlers, in seconds.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Directory of compiled plugins, so that restarts and reverts do not recompile
    /// [default: $XDG_CACHE_HOME/evhost or ~/.cache/evhost].
    #[arg(long, env = "EVHOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every plugin with full optimisation before its first event. By default a
    /// large component not in the cache (a Python or JavaScript plugin) first compiles
    /// quickly, serves, and is optimised in the background.
    #[arg(long, env = "EVHOST_OPTIMIZE_FIRST")]
    pub optimize_first: bool,
    /// Most streams one plugin consumes in this host; streams its patterns match past this
    /// are left unconsumed, with a warning and `evhost_streams_unserved{plugin}` (a flood of
    /// new event types cannot open consumers and Redis connections without end).
    #[arg(long, default_value_t = evhost::host::DEFAULT_MAX_STREAMS_PER_PLUGIN)]
    pub max_streams_per_plugin: usize,
    /// Keep at most N entries of the streams of matching event types: `PATTERN=N`, e.g.
    /// `'Bid*=100000'` (repeatable; the first matching rule applies). Entries a consumer group
    /// has not yet delivered or acknowledged are never trimmed.
    #[arg(long, value_name = "PATTERN=N")]
    pub retain_len: Vec<String>,
    /// Keep only the last SECONDS of the streams of matching event types: `PATTERN=SECONDS`,
    /// e.g. `'AuctionEnded=604800'` (repeatable; the first matching rule applies; never what a
    /// group still needs).
    #[arg(long, value_name = "PATTERN=SECONDS")]
    pub retain_age: Vec<String>,
    /// Refuse to start when `evhost doctor`'s checks of the Redis settings find a danger
    /// (without it, dangers are logged and the host runs).
    #[arg(long)]
    pub strict: bool,
    /// Number of partitions of the keyspace: fixed when a keyspace is first used (and
    /// recorded in Redis under `evhost:partitions`); without it, the recorded count, else 1.
    /// A count other than the recorded one is refused.
    #[arg(long, env = "EVHOST_PARTITIONS", value_name = "P")]
    pub partitions: Option<NonZeroU32>,
    /// In a partitioned keyspace, the field of the JSON data that keys the events of TYPE
    /// written by producers that know nothing of partitions (to `events:TYPE`): `TYPE=FIELD`,
    /// e.g. `AuctionEnded=auction_id` (repeatable). Events with a `partitionkey` use it; the
    /// others are spread by id.
    #[arg(long, value_name = "TYPE=FIELD")]
    pub ingress_key: Vec<String>,
    /// In a partitioned keyspace, how long a partition lease lasts without renewal, in
    /// milliseconds: how long the partitions of a host that died wait for another host
    /// (renewed every third of it).
    #[arg(long, default_value_t = 6000)]
    pub lease_ttl_ms: u64,
    /// After each commit with effects and each move between partitions, wait until N
    /// replicas have the writes (`WAIT`) before acknowledging: a primary's crash then loses
    /// only writes still in flight (see the README on durability). Fewer confirmations within
    /// --wait-timeout-ms log a warning and count in `evhost_replication_shortfalls_total`.
    #[arg(
        long,
        env = "EVHOST_WAIT_REPLICAS",
        value_name = "N",
        default_value_t = 0
    )]
    pub wait_replicas: u32,
    /// How long each `WAIT` of --wait-replicas may take, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "T")]
    pub wait_timeout_ms: u64,
    /// Do not watch the plugin directory for changes (no hot swap).
    #[arg(long)]
    pub no_watch: bool,
}

/// The default compile cache: `$EVHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/evhost`, else
/// `$HOME/.cache/evhost` (the commands without a `--cache-dir` flag, such as `evhost test`,
/// share the host's cache this way).
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("EVHOST_CACHE_DIR").filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|dir| !dir.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })
        .map(|dir| dir.join("evhost"))
}

/// The machine's hostname, the default consumer name.
pub fn default_consumer_name() -> String {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    if name.is_empty() {
        "evhost".into()
    } else {
        name
    }
}

/// Runs `evhost run`.
///
/// # Errors
///
/// When Redis cannot be reached, the plugin directory cannot be read or the admin address
/// cannot be bound.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let wait = (args.wait_replicas > 0).then(|| evhost::broker::redis::WaitReplicas {
        replicas: args.wait_replicas,
        timeout: Duration::from_millis(args.wait_timeout_ms),
    });
    let broker = connect_redis_waiting(&args.redis, wait).await?;
    let keyspace = evhost::partition::resolve(broker.as_ref(), args.partitions).await?;
    let options = HostOptions {
        consumer: ConsumerOptions {
            consumer: args.consumer.unwrap_or_else(default_consumer_name),
            batch_size: args.batch_size.max(1),
            block: Duration::from_millis(args.block_ms.max(1)),
            retry_interval: Duration::from_millis(args.retry_interval_ms.max(10)),
            claim_idle: Duration::from_millis(args.claim_idle_ms.max(100)),
        },
        discovery_interval: Duration::from_millis(args.discovery_interval_ms.max(10)),
        full_scan_interval: Duration::from_millis(args.full_scan_interval_ms.max(100)),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        cache_dir: args.cache_dir.clone().or_else(default_cache_dir),
        compile: if args.optimize_first {
            evhost::plugin::CompilePolicy::Optimized
        } else {
            evhost::plugin::CompilePolicy::default()
        },
        max_streams_per_plugin: args.max_streams_per_plugin.max(1),
        retention: evhost::retention::Retention::parse(&args.retain_len, &args.retain_age)
            .map_err(|err| super::UsageError(err.to_string()))?,
        keyspace,
        lease_ttl: Duration::from_millis(args.lease_ttl_ms.max(300)),
        ingress_keys: evhost::relay::IngressKeys::parse(&args.ingress_key)
            .map_err(super::UsageError)?,
        ..HostOptions::default()
    };
    let consumer = options.consumer.consumer.clone();
    let report = doctor_checks(&args.redis, args.strict).await?;
    let host = Host::new(broker, options).context("cannot start the Wasm engine")?;
    host.set_doctor_report(report);
    // The admin endpoint first: /healthz answers, and /readyz says what is loading.
    let admin_cancel = CancellationToken::new();
    let token = admin::AdminToken::new(args.admin_token.as_deref());
    let bound = admin::serve(host.clone(), args.metrics_addr, token, admin_cancel.clone())
        .await
        .with_context(|| format!("cannot bind the admin endpoint to {}", args.metrics_addr))?;
    let loaded = host.add_dir(&args.plugins).await.with_context(|| {
        format!(
            "cannot read the plugin directory {} (create it, or pass --plugins DIR; `evhost examples --out {}` writes the example plugins)",
            args.plugins.display(),
            args.plugins.display()
        )
    })?;
    if loaded == 0 {
        tracing::warn!(dir = %args.plugins.display(), "no plugin loaded yet; drop *.wasm files into the directory");
    }
    let _watcher = if args.no_watch {
        None
    } else {
        Some(host.watch_dir(&args.plugins).with_context(|| {
            format!(
                "cannot watch the plugin directory {} (use --no-watch to run without hot swap)",
                args.plugins.display()
            )
        })?)
    };
    // "running" once the first discovery pass has created the consumer groups: an event
    // published after this line reaches every plugin, whatever its group start position.
    let announce = {
        let host = host.clone();
        let redis = redact_url(&args.redis);
        tokio::spawn(async move {
            if host.ready().wait_for(|ready| *ready).await.is_ok() {
                tracing::info!(
                    redis = %redis,
                    plugins = loaded,
                    partitions = keyspace.partitions(),
                    consumer,
                    admin = %format!("http://{bound}/metrics"),
                    "evhost running; Ctrl-C to stop"
                );
            }
        })
    };
    host.run(shutdown_signal()).await;
    announce.abort();
    admin_cancel.cancel();
    Ok(())
}

/// Runs `evhost doctor`'s checks of the Redis settings and logs what is not ok: dangers as
/// errors, the rest as warnings.
///
/// # Errors
///
/// With `strict`, when a check finds a danger; when Redis cannot be reached.
async fn doctor_checks(url: &str, strict: bool) -> anyhow::Result<evhost::doctor::Report> {
    let broker = evhost::RedisBroker::connect(url)
        .await
        .with_context(|| format!("cannot reach Redis at {}", redact_url(url)))?;
    let report = evhost::doctor::examine(&broker).await;
    for finding in &report.findings {
        match finding.level {
            Level::Ok => {
                tracing::debug!(check = finding.check, found = %finding.found, "doctor: ok");
            }
            Level::Danger => {
                tracing::error!(check = finding.check, found = %finding.found, risk = %finding.risk, fix = %finding.fix, "doctor: danger");
            }
            Level::Warning | Level::Unknown => {
                tracing::warn!(check = finding.check, level = finding.level.as_str(), found = %finding.found, risk = %finding.risk, fix = %finding.fix, "doctor: check the Redis settings");
            }
        }
    }
    let dangers = report.count(Level::Danger);
    if strict && dangers > 0 {
        anyhow::bail!(
            "--strict: {dangers} danger(s) in the Redis settings (see above, or run `evhost doctor`); not starting"
        );
    }
    Ok(report)
}
