//! # evhost
//!
//! A host that consumes Redis Streams with consumer groups and hands each event to sandboxed
//! WebAssembly component plugins built against the `evhost:plugin/plugin` WIT world.
//!
//! # Layout
//!
//! - [`event`]: the CloudEvents-style envelope and its encodings in stream entries.
//! - [`keyspace`]: the name of every Redis key evhost uses, and their hash tags.
//! - [`partition`]: partition keys and the partition function producers compute.
//! - [`broker`]: the [`broker::Broker`] and [`broker::Inspect`] traits with a Redis and an
//!   in-memory implementation, and [`broker::connect`] to pick one from a URL.
//! - [`plugin`]: the Wasm engine, plugin versions, instances and host capabilities.
//! - [`registry`]: plugin name → current version, swappable atomically.
//! - [`watch`]: watches the plugin directory; the host reloads changed files (hot swap).
//! - [`consumer`]: one task per plugin × stream: read, dispatch, retry, commit.
//! - [`lease`]: one host per partition, with fenced commits.
//! - [`relay`]: moves outbox and ingress entries into their partitions, exactly once.
//! - [`dlq`]: dead letters and their re-drive to one plugin.
//! - [`retention`]: trims event streams by rules, never what a group still needs.
//! - [`doctor`]: the Redis settings and keyspace states that lose or stall events.
//! - [`host`]: loads plugins, discovers streams, runs consumers, shuts down gracefully.
//! - [`metrics`] and [`admin`]: Prometheus metrics and the admin HTTP endpoint.
//! - [`activity`]: a live feed of what the host does.
//! - [`artifacts`]: the example plugins, compiled by the build script and embedded.
//! - [`admin_client`]: reads a host's admin endpoint (`evhost plugins`, `evhost stats`).
//! - [`redis_process`]: a private `redis-server` (for `evhost bench` and the tests).
//!
//! The `evhost` command line (`host/src/cli/`), `evhost bench` (`host/src/bench/`), the plugin
//! templates of `evhost new` (`host/src/scaffold.rs`) and the C guest tools
//! (`host/src/guest_tools/`) belong to the binary, not to this library: an embedder links only
//! the runtime.
#![warn(missing_docs)]

pub mod activity;
pub mod admin;
pub mod admin_client;
pub mod artifacts;
pub mod broker;
pub mod console;
pub mod consumer;
pub mod dlq;
pub mod doctor;
pub mod event;
pub mod host;
pub mod keyspace;
pub mod lease;
pub mod metrics;
pub mod partition;
pub mod plugin;
pub mod redis_process;
pub mod registry;
pub mod relay;
pub mod retention;
pub mod rollout;
pub mod stream_registry;
pub mod stream_stats;
pub mod trial;
pub mod watch;

pub use broker::{Broker, Inspect, memory::MemoryBroker, redis::RedisBroker};
pub use event::Event;
pub use host::{Host, HostOptions};
pub use keyspace::Keyspace;

/// Resident set size of process `pid` in bytes, read from `/proc` (Linux); `None` elsewhere.
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
