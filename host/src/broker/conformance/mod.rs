//! The consumer-group conformance suite: the same cases, run against every [`Broker`].
//!
//! Each case takes a broker and a prefix, creates streams and keys only under that prefix, and
//! panics with a message naming the stream and what differed when the broker does not behave
//! like Redis 7. [`run_all`] gives every case a prefix of its own that is unique to the run, so
//! the suite can run again and again against the same Redis without cleaning up.
//!
//! A broker's test module runs the whole suite with
//! `conformance::run_all(&broker).await` in a `#[tokio::test]`; a failing case can be run alone
//! by calling its function with any prefix not used before.
//!
//! Timing: sleeps and block times stay at or under 200 ms, and every wait is bounded, so a broker
//! that never wakes a blocked reader fails within seconds instead of hanging.

mod delivery;
mod reads;
mod streams;
mod values;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{
    Broker, BrokerError, Commit, Delivered, EntryId, Fields, GroupInfo, GroupReader, GroupStart,
    Op, ReadFrom, Settlement, StreamEntry,
};

/// Upper bound for any single case step that waits: a broken wake-up fails instead of hanging.
const GUARD: Duration = Duration::from_secs(2);
/// Block time of reads that are expected to be woken up early.
const WAKE_BLOCK: Duration = Duration::from_millis(200);
/// Delay before the entry that wakes a blocked reader is added.
const WAKE_DELAY: Duration = Duration::from_millis(50);
/// Block time of reads that are expected to time out empty.
const EMPTY_BLOCK: Duration = Duration::from_millis(150);
/// How much earlier than its block time a timed-out read may return (clock granularity).
const EMPTY_SLACK: Duration = Duration::from_millis(30);
/// Idle time required by claims in [`delivery::claim`].
const CLAIM_IDLE: Duration = Duration::from_millis(50);

/// Runs every case, each under a fresh prefix unique to this run. The prefix is a Redis
/// Cluster hash tag, so that on a cluster every key of a case lies in one slot (as every key
/// of one partition does) while the cases spread over the nodes.
pub async fn run_all(broker: &dyn Broker) {
    let run = run_prefix();
    let prefix = |case: &str| format!("{{{run}:{case}}}:");
    streams::group_creation(broker, &prefix("group_creation")).await;
    reads::read_new_once(broker, &prefix("read_new_once")).await;
    reads::backlog_read(broker, &prefix("backlog_read")).await;
    reads::fan_out(broker, &prefix("fan_out")).await;
    reads::load_sharing(broker, &prefix("load_sharing")).await;
    delivery::ack(broker, &prefix("ack")).await;
    delivery::redelivery(broker, &prefix("redelivery")).await;
    reads::blocking_read(broker, &prefix("blocking_read")).await;
    delivery::commit_atomicity(broker, &prefix("commit_atomicity")).await;
    delivery::no_group(broker, &prefix("no_group")).await;
    delivery::claim(broker, &prefix("claim")).await;
    streams::range_and_len(broker, &prefix("range_and_len")).await;
    streams::streams_by_prefix(broker, &prefix("streams_by_prefix")).await;
    streams::keys(broker, &prefix("keys")).await;
    delivery::settlements(broker, &prefix("settlements")).await;
    delivery::claim_by_id(broker, &prefix("claim_by_id")).await;
    reads::follow(broker, &prefix("follow")).await;
    values::read_checks(broker, &prefix("read_checks")).await;
    values::counters(broker, &prefix("counters")).await;
    values::get_many(broker, &prefix("get_many")).await;
    values::once_only(broker, &prefix("once_only")).await;
    values::leases(broker, &prefix("leases")).await;
    values::members(broker, &prefix("members")).await;
    streams::trim(broker, &prefix("trim")).await;
}

/// A prefix no earlier run used: process id, wall clock and a counter.
fn run_prefix() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    format!("conformance:{}-{nanos}-{run}", std::process::id())
}

/// The value of `result`, or a panic naming `what` failed.
#[track_caller]
fn ok<T>(what: &str, result: Result<T, BrokerError>) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{what}: unexpected broker error: {err}"),
    }
}

#[track_caller]
fn assert_no_group(result: Result<(), BrokerError>, stream: &str, what: &str) {
    match result {
        Err(BrokerError::NoGroup {
            stream: named,
            group,
        }) => {
            assert_eq!(named, stream, "{what}: NoGroup names the stream");
            assert_eq!(group, "nope", "{what}: NoGroup names the group");
        }
        other => panic!("{stream}: {what} of a missing group must fail with NoGroup: {other:?}"),
    }
}

/// Fields of the `n`th test entry, with a value that is not UTF-8.
fn numbered(n: usize) -> Fields {
    vec![
        ("n".to_string(), n.to_string().into_bytes()),
        ("bytes".to_string(), vec![0, 0xff, 0xfe, 0x80]),
    ]
}

async fn add_n(broker: &dyn Broker, stream: &str, count: usize) -> Vec<EntryId> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        ids.push(ok("add", broker.add(stream, &numbered(n)).await));
    }
    ids
}

async fn open_reader(broker: &dyn Broker) -> Box<dyn GroupReader> {
    ok("reader", broker.reader().await)
}

async fn commit_ok(broker: &dyn Broker, ops: Vec<Op>) {
    ok(
        "commit",
        broker
            .commit(&Commit {
                ops,
                settlements: Vec::new(),
            })
            .await,
    );
}

async fn group_info(broker: &dyn Broker, stream: &str, group: &str) -> GroupInfo {
    let groups = ok("groups", broker.groups(stream).await);
    match groups.into_iter().find(|info| info.name == group) {
        Some(info) => info,
        None => panic!("{stream}: groups() does not list group {group:?}"),
    }
}

async fn read_new(
    reader: &mut dyn GroupReader,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
) -> Vec<Delivered> {
    let read = reader.read(
        stream,
        group,
        consumer,
        ReadFrom::New { block: None },
        count,
    );
    ok(
        &format!("{stream}: read new as {group}/{consumer}"),
        read.await,
    )
}

async fn read_pending(
    reader: &mut dyn GroupReader,
    stream: &str,
    group: &str,
    consumer: &str,
    after: EntryId,
    count: usize,
) -> Vec<Delivered> {
    let read = reader.read(stream, group, consumer, ReadFrom::Pending { after }, count);
    ok(
        &format!("{stream}: read pending as {group}/{consumer}"),
        read.await,
    )
}

/// What a blocking read in another task answers, how long it took, and the reader back.
type ReadOutcome = (
    Result<Vec<Delivered>, BrokerError>,
    Duration,
    Box<dyn GroupReader>,
);

/// Starts a blocking read of new entries (group `g`, consumer `c`) in another task.
fn spawn_read(
    mut reader: Box<dyn GroupReader>,
    stream: &str,
    block: Duration,
) -> tokio::task::JoinHandle<ReadOutcome> {
    let stream = stream.to_string();
    tokio::spawn(async move {
        let started = Instant::now();
        let result = reader
            .read(&stream, "g", "c", ReadFrom::New { block: Some(block) }, 10)
            .await;
        (result, started.elapsed(), reader)
    })
}

async fn join_read(read: tokio::task::JoinHandle<ReadOutcome>, stream: &str) -> ReadOutcome {
    match tokio::time::timeout(GUARD, read).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => panic!("{stream}: the blocking read task failed: {err}"),
        Err(_) => panic!("{stream}: a blocking read did not return within {GUARD:?}"),
    }
}

fn add_op(stream: &str, n: usize) -> Op {
    Op::Add {
        stream: stream.to_string(),
        fields: numbered(n),
    }
}

fn set_op(key: &str, value: &[u8]) -> Op {
    Op::Set {
        key: key.to_string(),
        value: value.to_vec(),
    }
}

/// A commit acknowledging `ids` of `group`, whoever holds them: settlements without ops.
fn acks(stream: &str, group: &str, ids: &[EntryId]) -> Commit {
    Commit {
        ops: Vec::new(),
        settlements: ids
            .iter()
            .map(|id| Settlement {
                stream: stream.to_string(),
                group: group.to_string(),
                consumer: "c".to_string(),
                id: *id,
                ops: Vec::new(),
                expects: Vec::new(),
            })
            .collect(),
    }
}

async fn ack_ok(broker: &dyn Broker, stream: &str, group: &str, ids: &[EntryId]) {
    let report = ok("commit", broker.commit(&acks(stream, group, ids)).await);
    assert!(
        report.skipped.is_empty(),
        "{stream}: an acknowledgement is never skipped: {report:?}"
    );
}

fn ids_of(delivered: &[Delivered]) -> Vec<EntryId> {
    delivered.iter().map(|d| d.entry.id).collect()
}

fn entry_ids(entries: &[StreamEntry]) -> Vec<EntryId> {
    entries.iter().map(|entry| entry.id).collect()
}

fn deliveries_of(delivered: &[Delivered]) -> Vec<u32> {
    delivered.iter().map(|d| d.deliveries).collect()
}
