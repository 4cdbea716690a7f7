//! The compile cache and first loads: `evhost cache info` and `evhost cache prune` on a cache
//! that `evhost test` filled, beside an entry of another evhost build; `evhost bench
//! --first-load`.

use super::{evhost, examples_in, json_lines, stdout_of};

#[test]
fn the_cache_shows_its_entries_and_prunes_other_builds_then_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let plugins = examples_in(dir.path());
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        r#"{"type":"AuctionEnded","data":{"auction_id":"a1","winning_bidder_id":"b1","winning_price":10}}"#,
    )
    .expect("events");
    // Fills the cache with the payment plugin, compiled.
    stdout_of(
        &evhost()
            .arg("test")
            .arg(plugins.join("payment.wasm"))
            .arg("--events")
            .arg(&events)
            .env("EVHOST_CACHE_DIR", &cache)
            .output()
            .expect("evhost test"),
    );
    // An entry of another build: another engine hash in its name.
    std::fs::write(cache.join("0000-ffffffffffffffff.cwasm"), vec![0u8; 4096]).expect("stale");
    let cache_arg = cache.to_str().expect("path");
    let info = |extra: &[&str]| {
        let output = evhost()
            .args(["cache", "info", "--json", "--cache-dir", cache_arg])
            .args(extra)
            .output()
            .expect("evhost cache info");
        json_lines(&stdout_of(&output)).remove(0)
    };
    let before = info(&[]);
    assert_eq!(before["entries"], 2, "{before}");
    assert_eq!(
        (
            before["stale_entries"].as_u64(),
            before["stale_bytes"].as_u64()
        ),
        (Some(1), Some(4096))
    );
    let text = stdout_of(
        &evhost()
            .args(["cache", "info", "--cache-dir", cache_arg])
            .output()
            .expect("evhost cache info"),
    );
    assert!(
        text.contains("2 compiled component(s)") && text.contains("from another evhost build"),
        "{text}"
    );

    let prune = |extra: &[&str]| {
        let output = evhost()
            .args(["cache", "prune", "--json", "--cache-dir", cache_arg])
            .args(extra)
            .output()
            .expect("evhost cache prune");
        json_lines(&stdout_of(&output)).remove(0)
    };
    let pruned = prune(&[]);
    assert_eq!(
        (pruned["removed"].as_u64(), pruned["entries"].as_u64()),
        (Some(1), Some(1)),
        "{pruned}"
    );
    assert_eq!(pruned["freed_bytes"], 4096);
    let all = prune(&["--all"]);
    assert_eq!(
        (
            all["removed"].as_u64(),
            all["entries"].as_u64(),
            all["bytes"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "{all}"
    );
}

/// `evhost bench --first-load` times a component's first load from an empty cache on each
/// tier (quick, its optimised recompile, optimised first, cached) and a call on each tier's
/// code; one JSON line.
#[test]
fn bench_times_the_first_load_on_each_tier() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin = examples_in(dir.path()).join("audit.wasm");
    let output = evhost()
        .arg("bench")
        .arg("--first-load")
        .arg(&plugin)
        .arg("--json")
        .output()
        .expect("evhost bench --first-load");
    let report = json_lines(&stdout_of(&output)).remove(0);
    let loads = report["loads"].as_array().expect("loads");
    assert_eq!(loads.len(), 1, "{report}");
    let load = &loads[0];
    let size = std::fs::metadata(&plugin).expect("plugin file").len();
    assert_eq!(load["bytes"], size, "{report}");
    let figure = |name: &str| load[name].as_f64().unwrap_or(-1.0);
    for name in [
        "quick_ms",
        "optimized_ready_ms",
        "optimize_first_ms",
        "cached_ms",
        "quick_call_us",
        "optimized_call_us",
    ] {
        assert!(figure(name) > 0.0, "{name}: {report}");
    }
    assert!(
        figure("optimized_ready_ms") >= figure("quick_ms"),
        "the optimised code is ready after the quick code: {report}"
    );
}
