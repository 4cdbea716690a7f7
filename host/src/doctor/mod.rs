//! `evhost doctor`: the Redis settings and keyspace states that silently lose events or stall
//! them, found before they do.
//!
//! Each check gives a [`Finding`] with a [`Level`], what can go wrong, and the exact fix. A
//! setting that cannot be read (`CONFIG` renamed away or refused on managed Redis) is
//! [`Level::Unknown`], never ok. [`server`] reads the server's settings (`CONFIG GET`, `INFO`),
//! [`cluster`] does so on every node of a Redis Cluster, [`keyspace`] looks at the streams and
//! their consumer groups.

pub mod cluster;
pub mod keyspace;
pub mod server;

use serde::Serialize;

use crate::broker::Broker as _;
use crate::broker::redis::RedisBroker;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be.
    Ok,
    /// Could not be checked: look at it yourself.
    Unknown,
    /// Works today, loses or stalls events in some circumstances.
    Warning,
    /// Loses events, or will: fix it before running in production.
    Danger,
}

impl Level {
    /// The word printed for the level.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Unknown => "unknown",
            Level::Warning => "warning",
            Level::Danger => "danger",
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check, e.g. `eviction`.
    pub check: &'static str,
    /// How bad it is.
    pub level: Level,
    /// What was found, e.g. `maxmemory-policy is allkeys-lru`.
    pub found: String,
    /// What can go wrong (empty when ok).
    pub risk: String,
    /// The exact fix: commands and the matching `redis.conf` line (empty when ok).
    pub fix: String,
}

impl Finding {
    fn ok(check: &'static str, found: impl Into<String>) -> Self {
        Finding {
            check,
            level: Level::Ok,
            found: found.into(),
            risk: String::new(),
            fix: String::new(),
        }
    }

    fn at(
        check: &'static str,
        level: Level,
        found: impl Into<String>,
        risk: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            check,
            level,
            found: found.into(),
            risk: risk.into(),
            fix: fix.into(),
        }
    }
}

/// Every finding of one examination.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// In the order the checks ran.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The worst level found (`Ok` when there are no findings).
    pub fn worst(&self) -> Level {
        self.findings
            .iter()
            .map(|finding| finding.level)
            .max()
            .unwrap_or(Level::Ok)
    }

    /// How many findings are at `level`.
    pub fn count(&self, level: Level) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.level == level)
            .count()
    }
}

/// Examines the Redis server of `broker` (on a Redis Cluster, every primary and replica) and
/// its evhost keyspace.
pub async fn examine(broker: &RedisBroker) -> Report {
    let mut findings = if broker.is_cluster() {
        cluster::check(broker).await
    } else {
        server::check(broker).await
    };
    findings.extend(keyspace::check(broker).await);
    Report { findings }
}
