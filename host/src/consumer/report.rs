//! Reporting one handled (or unhandled) entry: the handler metrics and the activity feed.

use std::time::{Duration, SystemTime};

use super::context::StreamContext;
use crate::activity::{Activity, OutcomeKind};
use crate::plugin::PluginVersion;

/// What became of one entry, for metrics and the feed.
pub(super) struct Report<'a> {
    /// The entry id in its origin stream.
    pub entry_id: String,
    /// The event id (empty when the entry is not an event).
    pub event_id: &'a str,
    pub outcome: OutcomeKind,
    /// The error or reason, when not handled.
    pub detail: Option<String>,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub version: &'a PluginVersion,
}

impl Report<'_> {
    /// Records the report in the handler metrics and, when someone listens, the feed.
    pub fn send(self, context: &StreamContext) {
        context.handler_metrics.record(
            &context.services.metrics,
            self.outcome.as_str(),
            self.duration,
        );
        // Build the feed's record only when someone listens: no per-event allocations otherwise.
        if context.services.activity.receiver_count() > 0 {
            let _ = context.services.activity.send(Activity::Handled {
                plugin: context.group.clone(),
                stream: context.stream.clone(),
                entry_id: self.entry_id,
                event_id: self.event_id.to_string(),
                outcome: self.outcome,
                detail: self.detail,
                duration: self.duration,
                started_at: self.started_at,
                sha256: self.version.sha256.clone(),
            });
        }
    }
}
