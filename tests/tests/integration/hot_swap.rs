//! Hot swap with a real watcher, real files and a real redis-server: replace, break, remove and
//! re-add plugin files while events flow; nothing is lost, nothing is handled twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use evhost::broker::{Broker, EntryId};
use evhost::host::{FileState, PluginStatus};
use evhost::plugin::sha256_hex;
use evhost_tests::guests::{PROBE, PROBE_V2};
use evhost_tests::{
    RedisServer, TestHost, fast_options, journal, pending_count, publish, redis_broker, wait_for,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A plugin directory holding `swap.wasm` (the probe) and its sidecar naming it `swapper` on
/// `ProbeSwap` events.
fn plugin_dir(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = dir.path().join("swap.wasm");
    std::fs::write(
        dir.path().join("swap.toml"),
        "[config]\nname = \"swapper\"\nsubscriptions = \"ProbeSwap\"\n",
    )
    .expect("write sidecar");
    std::fs::write(&wasm, bytes).expect("write plugin");
    (dir, wasm)
}

fn status_of(host: &TestHost, file: &Path) -> Option<PluginStatus> {
    let file = file.display().to_string();
    host.host
        .plugin_statuses()
        .into_iter()
        .find(|status| status.file == file)
}

async fn wait_running(host: &TestHost, file: &Path, bytes: &[u8]) {
    let sha = sha256_hex(bytes);
    wait_for(
        &format!("{} to run {}", file.display(), &sha[..12]),
        TIMEOUT,
        || async {
            status_of(host, file).is_some_and(|status| {
                status.state == FileState::Running && status.sha256.as_deref() == Some(sha.as_str())
            })
        },
    )
    .await;
}

/// Journal records of `swapper` as (entry id, event id, version), in stream order.
async fn handled(broker: &dyn Broker) -> Vec<(EntryId, String, String)> {
    let mut records: Vec<(EntryId, String, String)> = journal(broker, "swapper")
        .await
        .into_iter()
        .map(|record| {
            (
                record["entry_id"].parse().expect("entry id"),
                record["event_id"].clone(),
                record["version"].clone(),
            )
        })
        .collect();
    records.sort();
    records
}

fn reloads(host: &TestHost, result: &str) -> u64 {
    let prefix = format!("evhost_plugin_reloads_total{{plugin=\"swapper\",result=\"{result}\"}} ");
    host.host
        .services()
        .metrics
        .render()
        .lines()
        .find_map(|line| {
            line.strip_prefix(&prefix)
                .and_then(|value| value.parse().ok())
        })
        .unwrap_or(0)
}

/// Under a steady stream of events (at least 20,000, and until a second after the last swap),
/// the plugin file is replaced v1 → v2 → v1 → v2 by writing over it: every event is handled
/// exactly once, by exactly one version, and in stream order the version changes exactly three
/// times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_lose_nothing_and_handle_nothing_twice() {
    const EVENTS: usize = 20_000;
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let (dir, wasm) = plugin_dir(PROBE);
    let mut options = fast_options("swap-host");
    options.consumer.batch_size = 100;
    let host = TestHost::start_watching(broker.clone(), options, dir.path()).await;
    wait_running(&host, &wasm, PROBE).await;

    // Publishing goes on until the swaps are done, however long a busy machine takes for them:
    // the last version must see events too.
    let swapped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let broker: Arc<dyn Broker> = broker.clone();
        let swapped = swapped.clone();
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(EVENTS);
            let mut tick = 0;
            while ids.len() < EVENTS || !swapped.load(std::sync::atomic::Ordering::SeqCst) {
                for n in 0..25 {
                    ids.push(
                        publish(broker.as_ref(), "ProbeSwap", json!({"n": tick * 25 + n}))
                            .await
                            .id,
                    );
                }
                tick += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ids
        })
    };
    for bytes in [PROBE_V2, PROBE, PROBE_V2] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        std::fs::write(&wasm, bytes).expect("replace the plugin");
        wait_running(&host, &wasm, bytes).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    swapped.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent = publisher.await.expect("publisher");
    wait_for("every event handled", Duration::from_secs(120), || async {
        journal(broker.as_ref(), "swapper").await.len() >= sent.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let records = handled(broker.as_ref()).await;
    let mut per_event: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, event_id, _) in &records {
        *per_event.entry(event_id.as_str()).or_default() += 1;
    }
    assert_eq!(per_event.len(), sent.len(), "every event handled");
    assert!(
        per_event.values().all(|count| *count == 1),
        "no event handled twice"
    );
    assert!(sent.iter().all(|id| per_event.contains_key(id.as_str())));
    let mut versions: Vec<&str> = records
        .iter()
        .map(|(_, _, version)| version.as_str())
        .collect();
    versions.dedup();
    assert_eq!(
        versions,
        ["1", "2", "1", "2"],
        "one switch per swap, never back and forth"
    );
    assert_eq!(
        pending_count(broker.as_ref(), "ProbeSwap", "swapper").await,
        0
    );
    // Writing over a file in place can be seen half-written: such a load fails and is retried
    // when the write completes, but never runs. Exactly the four complete files loaded.
    assert_eq!(reloads(&host, "ok"), 4, "initial load + three swaps");
    host.stop().await;
}

/// A broken file written over a running plugin fails to load with the path and the reason;
/// the old version keeps handling events; fixing the file loads it. Same bytes again, or a
/// second file claiming the same plugin name, do not disturb the running version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_never_replaces_a_working_version() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let (dir, wasm) = plugin_dir(PROBE);
    let host =
        TestHost::start_watching(broker.clone(), fast_options("broken-host"), dir.path()).await;
    wait_running(&host, &wasm, PROBE).await;

    std::fs::write(&wasm, b"\0asm this is not a component").expect("break the plugin");
    wait_for("the failed state", TIMEOUT, || async {
        status_of(&host, &wasm).is_some_and(|status| status.state == FileState::Failed)
    })
    .await;
    let status = status_of(&host, &wasm).expect("status");
    let error = status.error.expect("an error");
    assert!(
        error.contains("swap.wasm") && error.contains("not a valid WebAssembly component"),
        "{error}"
    );
    assert_eq!(status.version.as_deref(), Some("1"), "v1 still serving");
    let event = publish(broker.as_ref(), "ProbeSwap", json!({})).await;
    wait_for("v1 to handle the event", TIMEOUT, || async {
        handled(broker.as_ref())
            .await
            .iter()
            .any(|(_, id, version)| *id == event.id && version == "1")
    })
    .await;

    // A component of the wrong world (a core module is not a component at all; an empty file
    // is the truncated copy case).
    std::fs::write(&wasm, b"").expect("truncate");
    wait_for("the second failure", TIMEOUT, || async {
        reloads(&host, "failed") >= 2
    })
    .await;
    assert_eq!(
        status_of(&host, &wasm).and_then(|status| status.version),
        Some("1".to_string()),
        "v1 still serving"
    );

    std::fs::write(&wasm, PROBE_V2).expect("fix the plugin");
    wait_running(&host, &wasm, PROBE_V2).await;
    let event = publish(broker.as_ref(), "ProbeSwap", json!({})).await;
    wait_for("v2 to handle the event", TIMEOUT, || async {
        handled(broker.as_ref())
            .await
            .iter()
            .any(|(_, id, version)| *id == event.id && version == "2")
    })
    .await;
    // Same bytes again: no reload.
    let ok_before = reloads(&host, "ok");
    std::fs::write(&wasm, PROBE_V2).expect("rewrite the same bytes");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        reloads(&host, "ok"),
        ok_before,
        "identical bytes are not reloaded"
    );
    // A copy seen half-written fails, and the complete file (the running version's bytes)
    // brings the file back to running without a reload.
    let failed_before = reloads(&host, "failed");
    std::fs::write(&wasm, b"").expect("truncate");
    wait_for("the truncated copy to fail", TIMEOUT, || async {
        reloads(&host, "failed") > failed_before
    })
    .await;
    std::fs::write(&wasm, PROBE_V2).expect("complete the copy");
    wait_running(&host, &wasm, PROBE_V2).await;
    assert_eq!(
        reloads(&host, "ok"),
        ok_before,
        "the running version's bytes are not reloaded"
    );
    assert_eq!(
        status_of(&host, &wasm).and_then(|status| status.error),
        None
    );

    // Another file describing the same plugin name is refused; the original keeps running.
    let twin = dir.path().join("twin.wasm");
    std::fs::copy(dir.path().join("swap.toml"), dir.path().join("twin.toml"))
        .expect("copy sidecar");
    std::fs::write(&twin, PROBE).expect("write twin");
    wait_for("the twin to be refused", TIMEOUT, || async {
        status_of(&host, &twin).is_some_and(|status| status.state == FileState::Failed)
    })
    .await;
    let error = status_of(&host, &twin)
        .and_then(|status| status.error)
        .unwrap_or_default();
    assert!(error.contains("already used"), "{error}");
    assert_eq!(
        status_of(&host, &wasm)
            .and_then(|status| status.version)
            .as_deref(),
        Some("2")
    );
    host.stop().await;
}

/// Removing the file stops the plugin's consumers; events keep arriving and wait in Redis;
/// adding the file back handles the backlog, each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_then_add_back_handles_the_backlog() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let (dir, wasm) = plugin_dir(PROBE);
    let host =
        TestHost::start_watching(broker.clone(), fast_options("remove-host"), dir.path()).await;
    wait_running(&host, &wasm, PROBE).await;

    let publisher = {
        let broker: Arc<dyn Broker> = broker.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..300 {
                ids.push(
                    publish(broker.as_ref(), "ProbeSwap", json!({"n": n}))
                        .await
                        .id,
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    std::fs::remove_file(&wasm).expect("remove the plugin");
    wait_for("the plugin to be unloaded", TIMEOUT, || async {
        status_of(&host, &wasm).is_none()
    })
    .await;
    let sent = publisher.await.expect("publisher");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let while_removed = handled(broker.as_ref()).await.len();
    assert!(
        while_removed < sent.len(),
        "the removed plugin handled nothing more"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        handled(broker.as_ref()).await.len(),
        while_removed,
        "no consumer runs while removed"
    );

    std::fs::write(&wasm, PROBE).expect("add the plugin back");
    wait_for("the backlog", TIMEOUT, || async {
        handled(broker.as_ref()).await.len() >= sent.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let records = handled(broker.as_ref()).await;
    let mut ids: Vec<&str> = records.iter().map(|(_, id, _)| id.as_str()).collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = sent.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "every event handled exactly once");
    assert_eq!(
        pending_count(broker.as_ref(), "ProbeSwap", "swapper").await,
        0
    );
    host.stop().await;
}

/// Deploy tools write a temporary file and rename it into place; a slow copy of a file fires
/// many change events while it is incomplete. Both end with the right version running, and no
/// incomplete file is ever counted as a successful load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_rename_and_slow_copy_end_with_the_right_version() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let (dir, wasm) = plugin_dir(PROBE);
    let host =
        TestHost::start_watching(broker.clone(), fast_options("deploy-host"), dir.path()).await;
    wait_running(&host, &wasm, PROBE).await;

    let temporary = dir.path().join(".swap.wasm.tmp");
    std::fs::write(&temporary, PROBE_V2).expect("write the temporary file");
    std::fs::rename(&temporary, &wasm).expect("rename into place");
    wait_running(&host, &wasm, PROBE_V2).await;
    let ok_after_rename = reloads(&host, "ok");

    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&wasm).expect("open for a slow copy");
        for chunk in PROBE.chunks(PROBE.len() / 6 + 1) {
            file.write_all(chunk).expect("write a chunk");
            file.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    wait_running(&host, &wasm, PROBE).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        reloads(&host, "ok"),
        ok_after_rename + 1,
        "only the complete file loaded"
    );
    let event = publish(broker.as_ref(), "ProbeSwap", json!({})).await;
    wait_for("v1 to handle the event", TIMEOUT, || async {
        handled(broker.as_ref())
            .await
            .iter()
            .any(|(_, id, version)| *id == event.id && version == "1")
    })
    .await;
    host.stop().await;
}

/// Compiled components are cached on disk by content: a second host with the same cache
/// directory loads them from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_are_cached_on_disk() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let cache = tempfile::tempdir().expect("cache dir");
    let (dir, wasm) = plugin_dir(PROBE);
    let mut options = fast_options("cache-host");
    options.cache_dir = Some(cache.path().to_path_buf());
    let host = TestHost::start_watching(broker.clone(), options.clone(), dir.path()).await;
    wait_running(&host, &wasm, PROBE).await;
    host.stop().await;
    let cached: Vec<String> = std::fs::read_dir(cache.path())
        .expect("cache dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(
        cached[0].starts_with(&sha256_hex(PROBE)) && cached[0].ends_with(".cwasm"),
        "{cached:?}"
    );

    // A corrupt cache entry is ignored (recompiled), never fatal.
    std::fs::write(cache.path().join(&cached[0]), b"garbage").expect("corrupt the entry");
    let host = TestHost::start_watching(broker.clone(), options, dir.path()).await;
    wait_running(&host, &wasm, PROBE).await;
    let event = publish(broker.as_ref(), "ProbeSwap", json!({})).await;
    wait_for("the event", TIMEOUT, || async {
        handled(broker.as_ref())
            .await
            .iter()
            .any(|(_, id, _)| *id == event.id)
    })
    .await;
    host.stop().await;
}

/// Every `evhost_plugin_reloads_total` sample, summed over plugins and results.
fn all_reloads(host: &TestHost) -> u64 {
    host.host
        .services()
        .metrics
        .render()
        .lines()
        .filter(|line| line.starts_with("evhost_plugin_reloads_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Counts inotify events of any kind (opens and read-only closes included) on the `.wasm` and
/// `.toml` files of `dir`: what the host does to its plugin files.
fn count_file_events(
    dir: &Path,
) -> (
    notify::RecommendedWatcher,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    use notify::Watcher as _;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            for path in &event.paths {
                if matches!(
                    path.extension().and_then(|ext| ext.to_str()),
                    Some("wasm" | "toml")
                ) {
                    record
                        .lock()
                        .unwrap()
                        .push(format!("{:?} {}", event.kind, path.display()));
                }
            }
        }
    })
    .expect("test watcher");
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .expect("watch the plugin directory");
    (watcher, seen)
}

/// After a hot add, swaps of two files and a file that fails to load, an idle host opens no
/// plugin file, counts no reload and logs nothing. (The host's own reads used to wake its
/// watcher: every reload caused the next, 8-10 a second, and the broken file logged an ERROR
/// each time.) The same broken bytes written again are not loaded or logged again; other
/// broken bytes are, once.
#[tokio::test(flavor = "current_thread")]
async fn an_idle_host_reads_no_plugin_file_and_logs_nothing() {
    let logs = evhost_tests::LogCapture::start();
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let (dir, wasm) = plugin_dir(PROBE);
    let host =
        TestHost::start_watching(broker.clone(), fast_options("idle-host"), dir.path()).await;
    wait_running(&host, &wasm, PROBE).await;

    let added = dir.path().join("added.wasm");
    std::fs::write(
        dir.path().join("added.toml"),
        "[config]\nname = \"added\"\nsubscriptions = \"ProbeAdded\"\n",
    )
    .expect("write sidecar");
    std::fs::write(&added, PROBE).expect("hot add");
    wait_running(&host, &added, PROBE).await;
    std::fs::write(&added, PROBE_V2).expect("swap the added file");
    wait_running(&host, &added, PROBE_V2).await;
    std::fs::write(&wasm, PROBE_V2).expect("swap the first file");
    wait_running(&host, &wasm, PROBE_V2).await;
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm not a component").expect("write a broken file");
    wait_for("the broken file to fail", TIMEOUT, || async {
        status_of(&host, &broken).is_some_and(|status| status.state == FileState::Failed)
    })
    .await;
    // Past the debounce time of the last write and the reload it caused.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (_watcher, events) = count_file_events(dir.path());
    let reloads_before = all_reloads(&host);
    let lines_before = logs.lines().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events_seen = events.lock().unwrap().clone();
    assert!(
        events_seen.is_empty(),
        "an idle host touched its plugin files {} times in 2 s: {:?}",
        events_seen.len(),
        &events_seen[..events_seen.len().min(10)]
    );
    assert_eq!(all_reloads(&host), reloads_before, "no reload while idle");
    let new_lines = logs.lines()[lines_before..].to_vec();
    assert!(new_lines.is_empty(), "an idle host logged: {new_lines:?}");
    assert_eq!(
        logs.lines_with("broken.wasm").len(),
        1,
        "the broken file is logged once"
    );

    // The same broken bytes again: read (it may have changed), but neither loaded nor logged.
    std::fs::write(&broken, b"\0asm not a component").expect("rewrite the same broken bytes");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        all_reloads(&host),
        reloads_before,
        "same broken bytes: no reload"
    );
    assert_eq!(
        logs.lines_with("broken.wasm").len(),
        1,
        "nor a second log line"
    );
    // Other broken bytes: one more failure, one more line, then quiet again.
    std::fs::write(&broken, b"still not a component").expect("break it differently");
    wait_for("the second failure", TIMEOUT, || async {
        all_reloads(&host) > reloads_before
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(all_reloads(&host), reloads_before + 1);
    assert_eq!(logs.lines_with("broken.wasm").len(), 2);
    host.stop().await;
}
