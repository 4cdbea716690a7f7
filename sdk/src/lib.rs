//! Write [evhost] plugins in Rust.
//!
//! An evhost plugin is a WebAssembly component that the host calls once per event read from a
//! Redis stream. This crate hides the component plumbing (`wit-bindgen`, the `evhost:plugin`
//! WIT world) behind a [`Plugin`] trait, an [`export_plugin!`] macro and a few plain functions
//! for the capabilities the host offers.
//!
//! [evhost]: https://github.com/evhost/evhost
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "evhost-plugin-payment"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! evhost-sdk = "0.1"
//! serde = { version = "1", features = ["derive"] }
//! serde_json = "1"
//! ```
//!
//! `src/lib.rs`:
//!
//! ```rust,standalone_crate
//! use evhost_sdk::prelude::*;
//!
//! /// The data of an `AuctionEnded` event.
//! #[derive(Deserialize)]
//! struct AuctionEnded {
//!     auction_id: String,
//!     winning_price: f64,
//! }
//!
//! struct Payment;
//!
//! impl Plugin for Payment {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("payment", env!("CARGO_PKG_VERSION")).subscribe("AuctionEnded")
//!     }
//!
//!     fn handle(event: Event, delivery: Delivery) -> Result<()> {
//!         // Bad JSON or a missing field: a reject error, the event is never retried.
//!         let ended: AuctionEnded = event.data_json()?;
//!         if ended.winning_price <= 0.0 {
//!             return Err(Error::reject(format!("auction {}: no price", ended.auction_id)));
//!         }
//!         log::info(format!("charging auction {} (attempt {})", ended.auction_id, delivery.attempt()));
//!         // Host failures are retry errors: the event is delivered again later.
//!         publish("PaymentProcessed", &serde_json::json!({"auction_id": ended.auction_id}))?;
//!         Ok(())
//!     }
//! }
//!
//! evhost_sdk::export_plugin!(Payment);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`: the `.wasm` file in
//! `target/wasm32-wasip2/release/` is a component the host can load, no adapter step needed.
//!
//! # Errors: retry or reject
//!
//! A handler returns [`Result<()>`](Result). `Ok` acknowledges the event. An [`Error`] is
//! either:
//!
//! - a **retry** error ([`Error::retry`]): something transient failed; the event stays pending
//!   and is delivered again, after at least the delay set with [`Error::after`] if any. Every
//!   [`std::error::Error`] converts into a retry error, so `?` just works, and so do failed
//!   host calls.
//! - a **reject** error ([`Error::reject`]): the event itself is bad and can never succeed.
//!   [`Event::data_json`] rejects data that does not parse; [`ResultExt::permanent`] turns any
//!   other failure into a reject.
//!
//! A panic traps the component: the host treats the event as failed and starts a fresh
//! instance. Never panic on input data; reject it.
//!
//! Whatever a failed handler published or appended to its journal is discarded by the host.
//!
//! # Capabilities
//!
//! | module / function | host capability |
//! |---|---|
//! | [`publish`], [`publish_keyed`], [`publish_raw`] | publish events to `events:<type>` (with the handled event's partition key, or another) |
//! | [`kv`] | the plugin's key-value store (`wasi:keyvalue`) |
//! | [`config`] | operator-set configuration values (`wasi:config`) |
//! | [`log`] | logging through the host (`wasi:logging`) |
//! | [`metrics`] | Prometheus counters, gauges and histograms |
//! | [`journal`] | an append-only record log, `evhost:journal:<plugin>` |
//!
//! Plugins get no filesystem, environment variables, sockets or processes.
//!
//! # Testing natively
//!
//! `cargo test` builds the plugin for the machine it runs on. [`Event::new`] and
//! [`Delivery::new`] build inputs by hand, but calling a host capability outside the host
//! panics: keep validation and formatting in plain functions and test those.
//!
//! ```
//! use evhost_sdk::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Bid {
//!     amount: f64,
//! }
//!
//! /// Pure logic: no host call, testable natively.
//! fn validate(event: &Event) -> Result<f64> {
//!     let bid: Bid = event.data_json()?;
//!     if bid.amount <= 0.0 {
//!         return Err(Error::reject("a bid must be positive"));
//!     }
//!     Ok(bid.amount)
//! }
//!
//! assert_eq!(validate(&Event::new("e-1", "BidPlaced", r#"{"amount": 3}"#)), Ok(3.0));
//! assert!(validate(&Event::new("e-2", "BidPlaced", r#"{"amount": -1}"#)).unwrap_err().is_reject());
//! assert!(validate(&Event::new("e-3", "BidPlaced", "{")).unwrap_err().is_reject());
//! ```
//!
//! # Layout
//!
//! - `plugin`: the [`Plugin`] trait and [`export_plugin!`].
//! - `event`: [`Event`] and [`Delivery`], the inputs of a handler.
//! - `info`: [`PluginInfo`], what `describe` returns.
//! - `error`: [`Error`], [`Result`] and [`ResultExt`].
//! - `publish`, [`kv`], [`config`], [`log`], [`metrics`], [`journal`]: host capabilities.
//! - [`de`]: serde helpers for loose JSON (ids that are strings or numbers).
//! - [`bindings`]: the raw `wit-bindgen` output, for what the wrappers do not cover.
//! - [`prelude`]: everything a plugin usually needs, in one `use`.
#![warn(missing_docs)]

pub mod bindings;
pub mod config;
pub mod de;
mod error;
mod event;
mod info;
pub mod journal;
pub mod kv;
pub mod log;
pub mod metrics;
mod plugin;
mod publish;

pub use error::{Error, ErrorKind, Result, ResultExt};
pub use event::{CAUSATION_ID, CORRELATION_ID, Delivery, Event};
pub use info::PluginInfo;
pub use plugin::Plugin;
pub use publish::{publish, publish_keyed, publish_raw};

/// Everything a plugin usually needs: `use evhost_sdk::prelude::*;`.
///
/// Brings in the [`Plugin`] trait, [`Event`], [`Delivery`], [`PluginInfo`], [`Error`],
/// [`Result`], [`ResultExt`], [`publish`], [`publish_raw`], the capability modules
/// ([`kv`], [`config`], [`log`], [`metrics`], [`journal`]), serde's `Deserialize` and
/// `Serialize` derives (the plugin must depend on `serde` with the `derive` feature for them
/// to expand) and [`Duration`](std::time::Duration) for [`Error::after`].
pub mod prelude {
    pub use std::time::Duration;

    pub use serde::{Deserialize, Serialize};

    pub use crate::{
        Delivery, Error, Event, Plugin, PluginInfo, Result, ResultExt, config, journal, kv, log,
        metrics, publish, publish_keyed, publish_raw,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::plugin::Export;
}
