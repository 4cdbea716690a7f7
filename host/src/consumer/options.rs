//! Tunables shared by all consumers of a host.

use std::time::Duration;

/// Tunables shared by all consumers of a host.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Consumer name within each group (the hostname by default).
    pub consumer: String,
    /// Entries per read.
    pub batch_size: usize,
    /// How long a read waits for new entries.
    pub block: Duration,
    /// How often pending entries are checked for a retry.
    pub retry_interval: Duration,
    /// How long another consumer's pending entry must be idle before this one takes it over.
    pub claim_idle: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            consumer: "evhost".into(),
            batch_size: 100,
            block: Duration::from_secs(1),
            retry_interval: Duration::from_millis(500),
            claim_idle: Duration::from_secs(30),
        }
    }
}
