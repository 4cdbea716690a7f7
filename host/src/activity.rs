//! A live feed of what the host does, for people watching (`evhost demo`, later `evhost tail`).
//!
//! The feed is a broadcast channel: slow or absent listeners never hold up event handling.

use std::time::{Duration, SystemTime};

/// How a handler call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// Handled and acknowledged.
    Ok,
    /// Transient failure: left pending for a later attempt.
    Retry,
    /// Permanent failure reported by the plugin.
    Reject,
    /// The plugin trapped (panic, out of memory, ...).
    Trap,
    /// The call ran past its deadline.
    Timeout,
    /// The entry could not be parsed as an event.
    Malformed,
    /// The entry is larger than the plugin accepts.
    Oversized,
}

impl OutcomeKind {
    /// Lower-case name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Ok => "ok",
            OutcomeKind::Retry => "retry",
            OutcomeKind::Reject => "reject",
            OutcomeKind::Trap => "trap",
            OutcomeKind::Timeout => "timeout",
            OutcomeKind::Malformed => "malformed",
            OutcomeKind::Oversized => "oversized",
        }
    }
}

/// One thing that happened in the host.
#[derive(Debug, Clone)]
pub enum Activity {
    /// A plugin handled (or failed to handle) an entry.
    Handled {
        /// The plugin.
        plugin: String,
        /// The stream the entry came from.
        stream: String,
        /// The entry id.
        entry_id: String,
        /// The event id (empty for malformed entries).
        event_id: String,
        /// How it ended.
        outcome: OutcomeKind,
        /// Error text for failures.
        detail: Option<String>,
        /// Time spent in the handler.
        duration: Duration,
        /// When the handler was entered (wall clock), for latency measurements.
        started_at: SystemTime,
        /// SHA-256 of the plugin version that handled it.
        sha256: String,
    },
    /// A plugin's publish was committed.
    Published {
        /// The publishing plugin.
        plugin: String,
        /// Type of the new event.
        event_type: String,
        /// Id of the new event.
        event_id: String,
        /// Its data, as text.
        data: String,
    },
    /// A plugin wrote a log line.
    Log {
        /// The plugin.
        plugin: String,
        /// Level name (`info`, `warn`, ...).
        level: &'static str,
        /// The message.
        message: String,
    },
}
