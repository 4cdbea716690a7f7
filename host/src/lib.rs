//! # evhost
//!
//! A host that consumes Redis Streams with consumer groups and hands each event to sandboxed
//! WebAssembly component plugins built against the `evhost:plugin/plugin` WIT world.
//!
//! # Layout
//!
//! - [`event`]: the CloudEvents-style envelope and its encodings in stream entries.
//! - [`broker`]: the [`broker::Broker`] trait with a Redis and an in-memory implementation.
//! - [`plugin`]: the Wasm engine, plugin versions, instances and host capabilities.
//! - [`registry`]: plugin name → current version, swappable atomically.
//! - [`watch`]: watches the plugin directory; the host reloads changed files (hot swap).
//! - [`consumer`]: one task per plugin × stream: read, dispatch, retry, commit.
//! - [`dlq`]: dead letters and their re-drive to one plugin.
//! - [`host`]: loads plugins, discovers streams, runs consumers, shuts down gracefully.
//! - [`metrics`] and [`admin`]: Prometheus metrics and the admin HTTP endpoint.
//! - [`activity`]: a live feed of what the host does.
//! - [`artifacts`]: the example plugins, compiled by the build script and embedded.
//! - [`cli`]: the `evhost` command line, one module per subcommand.
#![warn(missing_docs)]

pub mod activity;
pub mod admin;
pub mod artifacts;
pub mod broker;
pub mod cli;
pub mod consumer;
pub mod dlq;
pub mod event;
pub mod host;
pub mod metrics;
pub mod plugin;
pub mod registry;
pub mod watch;

pub use broker::{Broker, memory::MemoryBroker, redis::RedisBroker};
pub use event::Event;
pub use host::{Host, HostOptions};
