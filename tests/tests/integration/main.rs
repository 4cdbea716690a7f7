//! The library-level integration tests, one module per area, linked into one test binary.
//!
//! One binary instead of one per file: each links wasmtime, so separate binaries cost minutes of
//! linking and gigabytes of disk for nothing. Every test still starts its own redis-server.

mod admin;
mod budget;
mod cluster;
mod compile_tiers;
mod conformance;
mod delivery;
mod doctor;
mod hot_swap;
mod languages;
mod loading;
mod new;
mod partitions;
mod redis_url;
mod replication;
mod retention;
mod rollout;
mod saga;
mod sandbox;
mod state;
mod stream_bound;
