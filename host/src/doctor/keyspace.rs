//! Checks of the keyspace: streams that only grow, and consumer groups that fall behind.

use std::time::Duration;

use super::{Finding, Level};
use crate::broker::redis::RedisBroker;
use crate::stream_stats::{self, StreamStats};

/// Entries past which a stream is reported as growing without bound (untrimmed).
const LONG_STREAM: u64 = 1_000_000;
/// Undelivered entries past which a group is reported as falling behind.
const LAGGING: u64 = 100_000;
/// How long the oldest pending entry of a group may wait before it is reported.
const STALLED: Duration = Duration::from_secs(3600);

/// Runs every keyspace check.
pub async fn check(broker: &RedisBroker) -> Vec<Finding> {
    match stream_stats::snapshot(broker).await {
        Ok(streams) => vec![retention(&streams), backlog(&streams)],
        Err(err) => vec![Finding::at(
            "streams",
            Level::Unknown,
            format!("cannot list the streams: {err}"),
            "the streams and groups could not be checked",
            "run evhost stats to see what fails",
        )],
    }
}

fn retention(streams: &[StreamStats]) -> Finding {
    const CHECK: &str = "retention";
    let long: Vec<String> = streams
        .iter()
        .filter(|stream| stream.length > LONG_STREAM)
        .map(|stream| format!("{} ({} entries)", stream.stream, stream.length))
        .collect();
    if long.is_empty() {
        return Finding::ok(
            CHECK,
            format!("{} streams, none over {LONG_STREAM} entries", streams.len()),
        );
    }
    Finding::at(
        CHECK,
        Level::Warning,
        long.join(", "),
        "a stream without a retention rule grows until Redis runs out of memory",
        "give the host a retention rule: evhost run --retain-len 'TYPE=N' or --retain-age 'TYPE=SECONDS' (it never trims what a group has not yet delivered or acknowledged)",
    )
}

fn backlog(streams: &[StreamStats]) -> Finding {
    const CHECK: &str = "backlog";
    let mut behind = Vec::new();
    for stream in streams {
        for group in &stream.groups {
            let lag = group.lag.unwrap_or(0);
            let stalled = group
                .oldest_pending_idle_ms
                .is_some_and(|idle| Duration::from_millis(idle) > STALLED);
            if lag > LAGGING || stalled {
                behind.push(format!(
                    "{} on {} (lag {}, {} pending{})",
                    group.group,
                    stream.stream,
                    group.lag.map_or("?".to_string(), |lag| lag.to_string()),
                    group.pending,
                    if stalled {
                        ", oldest pending idle over an hour"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    if behind.is_empty() {
        return Finding::ok(CHECK, "every group keeps up");
    }
    Finding::at(
        CHECK,
        Level::Warning,
        behind.join("; "),
        "these groups fall behind: events wait, and a stalled pending entry waits for ever if its consumer is gone",
        "run more consumers (more hosts, [limits] concurrency), check the plugin's errors (evhost dlq list, logs), or delete the group of a retired plugin (XGROUP DESTROY)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_stats::GroupStats;

    fn stream(length: u64, group: Option<(u64, u64)>) -> StreamStats {
        StreamStats {
            stream: "events:A".into(),
            length,
            first_entry: None,
            first_time: None,
            last_entry: None,
            last_time: None,
            groups: group
                .map(|(lag, idle_ms)| GroupStats {
                    group: "p".into(),
                    consumers: 1,
                    pending: 1,
                    lag: Some(lag),
                    last_delivered: "0-0".into(),
                    oldest_pending: None,
                    oldest_pending_idle_ms: Some(idle_ms),
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn long_streams_and_groups_that_fall_behind_are_warnings() {
        assert_eq!(retention(&[stream(10, None)]).level, Level::Ok);
        let long = retention(&[stream(LONG_STREAM + 1, None)]);
        assert_eq!(long.level, Level::Warning);
        assert!(long.fix.contains("--retain-len"), "{long:?}");
        assert_eq!(backlog(&[stream(10, Some((5, 1000)))]).level, Level::Ok);
        let lagging = backlog(&[stream(10, Some((LAGGING + 1, 0)))]);
        assert_eq!(lagging.level, Level::Warning);
        assert!(lagging.found.contains("p on events:A"), "{lagging:?}");
        let stalled = backlog(&[stream(10, Some((0, 2 * 3600 * 1000)))]);
        assert!(stalled.found.contains("over an hour"), "{stalled:?}");
    }
}
