//! Checks of the server's own settings: version, eviction, persistence, client limit.

use super::{Finding, Level};
use crate::broker::redis::RedisBroker;

/// Connections a host opens, whatever it consumes: its command connection, the few that its
/// group reads share, the one that waits for new entries, with room for its relay and a CLI.
const CONNECTIONS_PER_HOST: u64 = 8;

/// Runs every server check.
pub async fn check(broker: &RedisBroker) -> Vec<Finding> {
    vec![
        version(broker).await,
        eviction(broker).await,
        persistence(broker).await,
        clients(broker).await,
    ]
}

/// A value of `INFO`, e.g. `redis_version` of section `server`.
async fn info_field(broker: &RedisBroker, section: &str, field: &str) -> Result<String, String> {
    let text = broker.info(section).await.map_err(|err| err.to_string())?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_string())
        .ok_or_else(|| format!("INFO {section} has no {field}"))
}

/// A `CONFIG GET` value, or why it cannot be read.
async fn config(broker: &RedisBroker, name: &str) -> Result<String, String> {
    match broker.config_get(name).await {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(format!("CONFIG GET {name} answered nothing")),
        Err(err) => Err(format!("CONFIG GET {name} refused: {err}")),
    }
}

fn unknown(check: &'static str, why: String, look_for: &str) -> Finding {
    Finding::at(
        check,
        Level::Unknown,
        why,
        "this setting could not be read, so it could not be checked",
        format!("check {look_for} in your provider's console or redis.conf"),
    )
}

/// (major, minor) of a version string such as `7.0.15`.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

async fn version(broker: &RedisBroker) -> Finding {
    const CHECK: &str = "version";
    let version = match info_field(broker, "server", "redis_version").await {
        Ok(version) => version,
        Err(why) => return unknown(CHECK, why, "the server version"),
    };
    match major_minor(&version) {
        Some(found) if found >= (7, 0) => Finding::ok(CHECK, format!("Redis {version}")),
        Some(found) if found >= (6, 2) => Finding::at(
            CHECK,
            Level::Warning,
            format!("Redis {version}"),
            "consumer-group lag (XINFO GROUPS `lag`) needs Redis 7.0: stats, /api/streams and the lag gauge show none",
            "upgrade to Redis 7.0 or later",
        ),
        Some(_) => Finding::at(
            CHECK,
            Level::Danger,
            format!("Redis {version}"),
            "evhost needs Redis 6.2 or later (XPENDING ... IDLE, XAUTOCLAIM, XADD ... MINID): retries and take-overs fail",
            "upgrade to Redis 7.0 or later",
        ),
        None => unknown(
            CHECK,
            format!("unreadable version {version:?}"),
            "the server version",
        ),
    }
}

async fn eviction(broker: &RedisBroker) -> Finding {
    const CHECK: &str = "eviction";
    let policy = match config(broker, "maxmemory-policy").await {
        Ok(policy) => policy,
        Err(why) => return unknown(CHECK, why, "maxmemory-policy (it must be noeviction)"),
    };
    let limit = config(broker, "maxmemory")
        .await
        .ok()
        .and_then(|value| value.parse::<u64>().ok());
    let found = match limit {
        Some(0) => format!("maxmemory-policy is {policy}, maxmemory 0 (no limit)"),
        Some(bytes) => format!("maxmemory-policy is {policy}, maxmemory {bytes} bytes"),
        None => format!("maxmemory-policy is {policy}"),
    };
    let fix = "CONFIG SET maxmemory-policy noeviction (redis.conf: maxmemory-policy noeviction), and CONFIG REWRITE to keep it";
    if policy == "noeviction" {
        Finding::ok(CHECK, found)
    } else if policy.starts_with("allkeys-") && limit != Some(0) {
        Finding::at(
            CHECK,
            Level::Danger,
            found,
            "under memory pressure Redis evicts whole streams, consumer groups and their pending entries: events are lost without an error",
            fix,
        )
    } else {
        // volatile-* evicts only keys with a TTL (evhost sets none); allkeys-* without a
        // limit evicts nothing until someone sets one.
        Finding::at(
            CHECK,
            Level::Warning,
            found,
            "an eviction policy other than noeviction may remove evhost's keys once memory runs short (or a limit is set)",
            fix,
        )
    }
}

async fn persistence(broker: &RedisBroker) -> Finding {
    const CHECK: &str = "persistence";
    let aof = match config(broker, "appendonly").await {
        Ok(aof) => aof,
        Err(why) => return unknown(CHECK, why, "appendonly and appendfsync"),
    };
    let fsync = config(broker, "appendfsync").await.unwrap_or_default();
    let save = config(broker, "save").await.unwrap_or_default();
    let fix = "CONFIG SET appendonly yes; CONFIG SET appendfsync everysec (redis.conf: appendonly yes, appendfsync everysec), and CONFIG REWRITE to keep it";
    match (aof.as_str(), fsync.as_str()) {
        ("yes", "always" | "everysec") => {
            Finding::ok(CHECK, format!("append-only file, appendfsync {fsync}"))
        }
        ("yes", _) => Finding::at(
            CHECK,
            Level::Warning,
            format!("append-only file, appendfsync {fsync}"),
            "the operating system decides when writes reach the disk: a machine crash can lose acknowledged events and commits",
            fix,
        ),
        _ if save.trim().is_empty() => Finding::at(
            CHECK,
            Level::Danger,
            "no append-only file and no snapshots (save \"\")",
            "a restart of Redis loses every stream, group and pending entry",
            fix,
        ),
        _ => Finding::at(
            CHECK,
            Level::Warning,
            format!("snapshots only (save \"{save}\"), no append-only file"),
            "a crash loses everything since the last snapshot, often minutes of events and acknowledgements",
            fix,
        ),
    }
}

async fn clients(broker: &RedisBroker) -> Finding {
    const CHECK: &str = "maxclients";
    let limit = match config(broker, "maxclients").await {
        Ok(limit) => limit,
        Err(why) => return unknown(CHECK, why, "maxclients"),
    };
    let Ok(limit) = limit.parse::<u64>() else {
        return unknown(CHECK, format!("maxclients is {limit:?}"), "maxclients");
    };
    let connected = info_field(broker, "clients", "connected_clients")
        .await
        .ok()
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(0);
    // What the hosts consuming this keyspace open: a few connections each. Every host has a
    // consumer in each group it reads, so the largest group counts the hosts at most.
    let mut hosts = 0;
    if let Ok(streams) = crate::stream_stats::snapshot(broker).await {
        hosts = streams
            .iter()
            .flat_map(|stream| &stream.groups)
            .map(|group| group.consumers)
            .max()
            .unwrap_or(0);
    }
    let needed = connected.max(hosts * CONNECTIONS_PER_HOST + 10);
    let found = format!(
        "maxclients {limit}, {connected} connected, about {needed} needed by the hosts of this keyspace"
    );
    let fix = format!(
        "CONFIG SET maxclients {} (redis.conf: maxclients {}), or run fewer hosts",
        (needed * 4).max(10_000),
        (needed * 4).max(10_000)
    );
    if limit < needed {
        Finding::at(
            CHECK,
            Level::Danger,
            found,
            "hosts cannot open the connections their consumers need: new consumers fail to start",
            fix,
        )
    } else if limit < needed * 2 {
        Finding::at(
            CHECK,
            Level::Warning,
            found,
            "little headroom: more hosts, plugins or event types will run out of connections",
            fix,
        )
    } else {
        Finding::ok(CHECK, found)
    }
}

#[cfg(test)]
mod tests {
    use super::major_minor;

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(major_minor("7.0.15"), Some((7, 0)));
        assert_eq!(major_minor("6.2"), Some((6, 2)));
        assert!(major_minor("6.2.0") < Some((7, 0)));
        assert_eq!(major_minor("x"), None);
    }
}
