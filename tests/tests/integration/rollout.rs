//! Safe rollouts under load, with a real watcher, real files and a real redis-server: a shadow
//! candidate that differs on some events, a failing canary rolled back by itself, a clean
//! canary promoted, the rollback command, and candidates that cannot serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use evhost::broker::{Broker, EntryId};
use evhost::event::{Event, PARTITION_KEY};
use evhost::host::{FileState, HostOptions, PluginStatus};
use evhost::keyspace::Keyspace;
use evhost::rollout::{Mode, TransitionKind};
use evhost_tests::guests::{PROBE, PROBE_V2};
use evhost_tests::{
    KEYS, RedisServer, TestHost, events_of, fast_options, journal, metric, redis_broker, wait_for,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);
const PLUGIN: &str = "roller";
const EVENT_TYPE: &str = "ProbeRoll";

/// A plugin directory with the live version: `roll.wasm` (the probe named `roller`, version
/// 1, on `ProbeRoll`).
fn plugin_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = dir.path().join("roll.wasm");
    std::fs::write(
        dir.path().join("roll.toml"),
        format!(
            "[config]\nname = \"{PLUGIN}\"\nsubscriptions = \"{EVENT_TYPE}\"\nversion = \"1\"\n"
        ),
    )
    .expect("write sidecar");
    std::fs::write(&wasm, PROBE).expect("write plugin");
    (dir, wasm)
}

/// Writes the candidate `roll.next.wasm` (`bytes`), version 2 with the extra `config` lines
/// and the `rollout` table, sidecar first, each through a rename.
fn write_candidate(dir: &Path, bytes: &[u8], config: &str, rollout: &str) -> PathBuf {
    let sidecar = format!(
        "[config]\nname = \"{PLUGIN}\"\nsubscriptions = \"{EVENT_TYPE}\"\nversion = \"2\"\n{config}\n[rollout]\n{rollout}\n"
    );
    let temporary = dir.join(".candidate.tmp");
    std::fs::write(&temporary, sidecar).expect("write candidate sidecar");
    std::fs::rename(&temporary, dir.join("roll.next.toml")).expect("move sidecar");
    let wasm = dir.join("roll.next.wasm");
    std::fs::write(&temporary, bytes).expect("write candidate");
    std::fs::rename(&temporary, &wasm).expect("move candidate");
    wasm
}

fn status_of(host: &TestHost, file: &Path) -> Option<PluginStatus> {
    let file = file.display().to_string();
    host.host
        .plugin_statuses()
        .into_iter()
        .find(|status| status.file == file)
}

async fn wait_state(host: &TestHost, file: &Path, state: FileState) -> PluginStatus {
    wait_for(
        &format!("{} to be {state:?}", file.display()),
        TIMEOUT,
        || async { status_of(host, file).is_some_and(|status| status.state == state) },
    )
    .await;
    status_of(host, file).expect("status")
}

/// Publishes event `n` of key `key` (`{"action": "echo", "n": n}`) into its partition of
/// `layout`.
async fn publish_echo(broker: &dyn Broker, layout: Keyspace, n: u64, key: &str) -> Event {
    let mut event = Event::new(
        EVENT_TYPE,
        "test",
        json!({"action": "echo", "n": n, "key": key})
            .to_string()
            .into_bytes(),
    );
    event.set_extension(PARTITION_KEY, key.to_string());
    broker
        .add(&event.stream_in(layout), &event.to_fields())
        .await
        .expect("XADD");
    event
}

/// Publishes `count` events from `first` on, keys `k0`..`k{keys-1}` in turn, spread over
/// about `over` (load while the rollout runs); returns them in publish order.
async fn publish_under_load(
    broker: Arc<dyn Broker>,
    layout: Keyspace,
    first: u64,
    count: u64,
    keys: u64,
    over: Duration,
) -> Vec<Event> {
    let pause = over / u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    let mut events = Vec::new();
    for n in first..first + count {
        events.push(publish_echo(broker.as_ref(), layout, n, &format!("k{}", n % keys)).await);
        tokio::time::sleep(pause).await;
    }
    events
}

/// The journal records of the plugin in every partition of `layout`, each partition's in
/// commit order.
async fn journals(broker: &dyn Broker, layout: Keyspace) -> Vec<BTreeMap<String, String>> {
    if !layout.is_partitioned() {
        return journal(broker, PLUGIN).await;
    }
    let mut records = Vec::new();
    for keyspace in layout.each_partition() {
        for entry in broker
            .range(
                &keyspace.journal(PLUGIN),
                EntryId::ZERO,
                EntryId::MAX,
                1_000_000,
            )
            .await
            .expect("XRANGE journal")
        {
            records.push(
                entry
                    .fields
                    .into_iter()
                    .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
                    .collect(),
            );
        }
    }
    records
}

/// The versions that committed each event's journal record, by event id.
async fn handled_by(broker: &dyn Broker, layout: Keyspace) -> BTreeMap<String, Vec<String>> {
    let mut handled: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in journals(broker, layout).await {
        handled
            .entry(record["event_id"].clone())
            .or_default()
            .push(record["version"].clone());
    }
    handled
}

/// Waits until every one of `events` has a journal record; returns who handled each.
async fn wait_all_handled(
    broker: &dyn Broker,
    layout: Keyspace,
    events: &[Event],
) -> BTreeMap<String, Vec<String>> {
    wait_for(
        &format!("{} events handled", events.len()),
        TIMEOUT,
        || async {
            let handled = handled_by(broker, layout).await;
            events.iter().all(|event| handled.contains_key(&event.id))
        },
    )
    .await;
    handled_by(broker, layout).await
}

/// Asserts every event was committed exactly once.
fn assert_once(handled: &BTreeMap<String, Vec<String>>, events: &[Event]) {
    for event in events {
        let versions = &handled[&event.id];
        assert_eq!(versions.len(), 1, "event {} handled {versions:?}", event.id);
    }
    assert_eq!(handled.len(), events.len(), "no other event was handled");
}

async fn start(server: &RedisServer) -> (Arc<dyn Broker>, TestHost, tempfile::TempDir, PathBuf) {
    let (broker, host, dir, live, _) = start_in(server, None).await;
    (broker, host, dir, live)
}

/// A host watching [`plugin_dir`], on `partitions` partitions (`None`: the single layout).
async fn start_in(
    server: &RedisServer,
    partitions: Option<u32>,
) -> (
    Arc<dyn Broker>,
    TestHost,
    tempfile::TempDir,
    PathBuf,
    Keyspace,
) {
    let broker: Arc<dyn Broker> = redis_broker(server).await;
    let layout = evhost::partition::resolve(broker.as_ref(), partitions.and_then(NonZeroU32::new))
        .await
        .expect("partition count");
    let options = HostOptions {
        keyspace: layout,
        ..fast_options("roll-1")
    };
    let (dir, live) = plugin_dir();
    let host = TestHost::start_watching(broker.clone(), options, dir.path()).await;
    wait_state(&host, &live, FileState::Running).await;
    (broker, host, dir, live, layout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_candidate_is_compared_on_every_event_and_commits_nothing() {
    let server = RedisServer::start();
    let (broker, host, dir, live) = start(&server).await;
    let candidate = write_candidate(
        dir.path(),
        PROBE_V2,
        "tamper_every = \"10\"",
        "mode = \"shadow\"",
    );
    let row = wait_state(&host, &candidate, FileState::Running).await;
    assert!(row.candidate, "{row:?}");
    let events = publish_under_load(broker.clone(), KEYS, 0, 200, 20, Duration::from_secs(2)).await;
    let handled = wait_all_handled(broker.as_ref(), KEYS, &events).await;
    assert_once(&handled, &events);
    assert!(
        handled
            .values()
            .all(|versions| versions == &["1".to_string()]),
        "only the live version commits in shadow mode"
    );
    let echoed = events_of(broker.as_ref(), "ProbeEchoed").await;
    assert_eq!(echoed.len(), 200, "one publish per event, the live one");
    assert!(
        echoed
            .iter()
            .all(|event| !String::from_utf8_lossy(&event.data).contains("tampered")),
        "no publish of the candidate was committed"
    );
    wait_for("every event compared", TIMEOUT, || async {
        status_of(&host, &live)
            .and_then(|status| status.rollout)
            .is_some_and(|rollout| rollout.compared >= 200)
    })
    .await;
    let rollout = status_of(&host, &live)
        .and_then(|status| status.rollout)
        .expect("rollout");
    assert_eq!(rollout.mode, Mode::Shadow);
    assert_eq!(
        (rollout.compared, rollout.mismatches),
        (200, 20),
        "{rollout:?}"
    );
    assert_eq!(rollout.agreement_pct, Some(90.0));
    assert_eq!(rollout.candidate.calls, 200);
    assert_eq!(rollout.live.calls, 200);
    assert!(
        rollout.live.p99_ms > 0.0 && rollout.candidate.p99_ms > 0.0,
        "{rollout:?}"
    );
    let mismatch = &rollout.recent_mismatches[0];
    assert!(
        mismatch.diff.contains("- live:      publish")
            && mismatch.diff.contains("+ candidate: publish")
            && mismatch.diff.contains("tampered"),
        "{}",
        mismatch.diff
    );
    assert!(!mismatch.event_id.is_empty() && !mismatch.entry_id.is_empty());
    assert_eq!(
        metric(
            &host,
            &format!("evhost_rollout_mismatches_total{{plugin=\"{PLUGIN}\",version=\"2\"}}")
        ),
        20
    );
    assert_eq!(
        metric(
            &host,
            &format!(
                "evhost_rollout_calls_total{{plugin=\"{PLUGIN}\",version=\"2\",role=\"candidate\",outcome=\"ok\"}}"
            )
        ),
        200
    );
    assert_eq!(
        metric(
            &host,
            &format!("evhost_plugin_echoes_total{{plugin=\"{PLUGIN}\"}}")
        ),
        200,
        "the shadow's own metrics are not recorded"
    );
    // Removing the candidate file calls the rollout off.
    std::fs::remove_file(&candidate).expect("remove the candidate");
    wait_for("the rollout to end", TIMEOUT, || async {
        status_of(&host, &live).is_some_and(|status| status.rollout.is_none())
    })
    .await;
    let transitions = status_of(&host, &live).expect("status").transitions;
    let last = transitions.last().expect("a transition");
    assert_eq!(last.kind, TransitionKind::Aborted, "{transitions:?}");
    assert_eq!(last.reason, "its candidate file was removed");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_rolls_back_by_itself_and_loses_doubles_or_reorders_nothing() {
    failing_canary(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_on_a_partitioned_keyspace_rolls_back_the_same_way() {
    failing_canary(Some(4)).await;
}

/// A canary that fails every event, on `partitions` partitions, under load.
async fn failing_canary(partitions: Option<u32>) {
    let server = RedisServer::start();
    let (broker, host, dir, live, layout) = start_in(&server, partitions).await;
    let candidate = write_candidate(
        dir.path(),
        PROBE_V2,
        "action = \"fail\"",
        "mode = \"canary\"\nshare_pct = 40\nmin_calls = 10\nwindow_ms = 60000",
    );
    wait_state(&host, &candidate, FileState::Running).await;
    let events =
        publish_under_load(broker.clone(), layout, 0, 300, 20, Duration::from_secs(3)).await;
    let handled = wait_all_handled(broker.as_ref(), layout, &events).await;
    assert_once(&handled, &events);
    assert!(
        handled
            .values()
            .all(|versions| versions == &["1".to_string()]),
        "every event the candidate failed was handled by the live version"
    );
    let row = wait_state(&host, &candidate, FileState::Retired).await;
    assert!(row.candidate);
    let status = status_of(&host, &live).expect("status");
    assert!(status.rollout.is_none(), "rolled back");
    let rolled_back = status
        .transitions
        .iter()
        .find(|transition| transition.kind == TransitionKind::RolledBack)
        .expect("a rollback");
    assert!(
        rolled_back
            .reason
            .starts_with("automatic: failure rate 100.0% over"),
        "{rolled_back:?}"
    );
    assert_eq!(
        metric(
            &host,
            &format!(
                "evhost_rollout_transitions_total{{plugin=\"{PLUGIN}\",transition=\"rolled-back\"}}"
            )
        ),
        1
    );
    // No dead letter: the candidate's failures went to the live version, not to the DLQ.
    for keyspace in layout.each_partition() {
        let dead = broker
            .range(
                &keyspace.dead_letters(PLUGIN),
                EntryId::ZERO,
                EntryId::MAX,
                10,
            )
            .await
            .expect("XRANGE");
        assert!(dead.is_empty(), "{dead:?}");
    }
    // Each key's events were committed in their order.
    let publish_order: BTreeMap<String, u64> = events
        .iter()
        .map(|event| {
            let data: serde_json::Value = serde_json::from_slice(&event.data).expect("json");
            (event.id.clone(), data["n"].as_u64().expect("n"))
        })
        .collect();
    let mut last_of_key: BTreeMap<u64, u64> = BTreeMap::new();
    for record in journals(broker.as_ref(), layout).await {
        let n = publish_order[&record["event_id"]];
        let key = n % 20;
        if let Some(previous) = last_of_key.insert(key, n) {
            assert!(
                previous < n,
                "key k{key}: event {n} committed after {previous}"
            );
        }
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_canary_is_promoted_after_its_clean_windows() {
    let server = RedisServer::start();
    let (broker, host, dir, live) = start(&server).await;
    let candidate = write_candidate(
        dir.path(),
        PROBE_V2,
        "",
        "mode = \"canary\"\nshare_pct = 50\nmin_calls = 5\nwindow_ms = 400\npromote = \"auto\"\nclean_windows = 2",
    );
    wait_state(&host, &candidate, FileState::Running).await;
    let mut events = Vec::new();
    let mut next = 0;
    // Load until the promotion (bounded: 150 rounds of 20 events).
    for _ in 0..150 {
        events.extend(
            publish_under_load(
                broker.clone(),
                KEYS,
                next,
                20,
                20,
                Duration::from_millis(100),
            )
            .await,
        );
        next += 20;
        let promoted = status_of(&host, &live).is_some_and(|status| {
            status.version.as_deref() == Some("2") && status.rollout.is_none()
        });
        if promoted {
            break;
        }
    }
    let status = status_of(&host, &live).expect("status");
    assert_eq!(status.version.as_deref(), Some("2"), "promoted: {status:?}");
    let promoted = status.transitions.last().expect("transition");
    assert_eq!(promoted.kind, TransitionKind::Promoted);
    assert_eq!(
        promoted.reason,
        "automatic: 2 clean window(s) of 400 ms in a row"
    );
    assert_eq!(
        status.previous_versions.len(),
        1,
        "version 1 is kept for a rollback"
    );
    assert_ne!(
        status.file_sha256, status.sha256,
        "roll.wasm holds version 1, version 2 runs"
    );
    // After the promotion every event goes to version 2.
    let after = publish_under_load(
        broker.clone(),
        KEYS,
        next,
        40,
        20,
        Duration::from_millis(200),
    )
    .await;
    events.extend(after.iter().cloned());
    let handled = wait_all_handled(broker.as_ref(), KEYS, &events).await;
    assert_once(&handled, &events);
    let before: Vec<&String> = events[..events.len() - 40]
        .iter()
        .flat_map(|event| &handled[&event.id])
        .collect();
    assert!(
        before.iter().any(|version| *version == "1")
            && before.iter().any(|version| *version == "2"),
        "the canary shared the keys before the promotion"
    );
    assert!(
        after
            .iter()
            .all(|event| handled[&event.id] == ["2".to_string()])
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollback_command_returns_to_the_previous_version_at_once() {
    let server = RedisServer::start();
    let (broker, host, _dir, live) = start(&server).await;
    let refused = host
        .host
        .roll_back(PLUGIN, "test")
        .expect_err("nothing to roll back to");
    assert!(
        refused.to_string().contains("no earlier version"),
        "{refused}"
    );
    // Hot swap to version 2 (the same sidecar: the probe built as version 2).
    std::fs::write(
        live.with_extension("toml"),
        format!("[config]\nname = \"{PLUGIN}\"\nsubscriptions = \"{EVENT_TYPE}\"\n"),
    )
    .expect("sidecar");
    std::fs::write(&live, PROBE_V2).expect("swap");
    wait_for("version 2 to serve", TIMEOUT, || async {
        status_of(&host, &live).is_some_and(|status| status.version.as_deref() == Some("2"))
    })
    .await;
    let before =
        publish_under_load(broker.clone(), KEYS, 0, 30, 5, Duration::from_millis(300)).await;
    wait_all_handled(broker.as_ref(), KEYS, &before).await;
    let load = tokio::spawn(publish_under_load(
        broker.clone(),
        KEYS,
        30,
        100,
        5,
        Duration::from_secs(1),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let transition = host
        .host
        .roll_back(PLUGIN, "test rollback")
        .expect("rolled back");
    assert_eq!(transition.kind, TransitionKind::RolledBack);
    assert!(
        transition.from.starts_with("2 ") && transition.to.starts_with("1 "),
        "{transition:?}"
    );
    let during = load.await.expect("publisher");
    let after =
        publish_under_load(broker.clone(), KEYS, 130, 20, 5, Duration::from_millis(200)).await;
    let all: Vec<Event> = before
        .iter()
        .chain(&during)
        .chain(&after)
        .cloned()
        .collect();
    let handled = wait_all_handled(broker.as_ref(), KEYS, &all).await;
    assert_once(&handled, &all);
    assert!(
        before
            .iter()
            .all(|event| handled[&event.id] == ["2".to_string()])
    );
    assert!(
        after
            .iter()
            .all(|event| handled[&event.id] == ["1".to_string()])
    );
    let status = status_of(&host, &live).expect("status");
    assert_eq!(status.version.as_deref(), Some("1"));
    assert_eq!(
        status.file_sha256.as_deref(),
        Some(evhost::plugin::sha256_hex(PROBE_V2).as_str()),
        "the file still holds version 2, and says so"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_cannot_serve_is_refused_and_the_live_version_goes_on() {
    let server = RedisServer::start();
    let (broker, host, dir, live) = start(&server).await;
    let broken = write_candidate(dir.path(), b"\0asm not really", "", "mode = \"canary\"");
    let row = wait_state(&host, &broken, FileState::Failed).await;
    assert!(row.error.is_some(), "{row:?}");
    // A candidate of a plugin that does not run.
    let stranger = dir.path().join("other.next.wasm");
    std::fs::write(
        dir.path().join("other.next.toml"),
        "[config]\nname = \"stranger\"\nsubscriptions = \"Nothing\"\n",
    )
    .expect("sidecar");
    std::fs::write(&stranger, PROBE).expect("stranger");
    let row = wait_state(&host, &stranger, FileState::Failed).await;
    let error = row.error.expect("error");
    assert!(error.contains("which does not run here"), "{error}");
    assert!(status_of(&host, &live).expect("status").rollout.is_none());
    let events =
        publish_under_load(broker.clone(), KEYS, 0, 30, 5, Duration::from_millis(300)).await;
    let handled = wait_all_handled(broker.as_ref(), KEYS, &events).await;
    assert_once(&handled, &events);
    assert!(
        handled
            .values()
            .all(|versions| versions == &["1".to_string()])
    );
    host.stop().await;
}
