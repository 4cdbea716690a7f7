//! `evhost cache info` and `evhost cache prune` on a compile cache that `evhost test` filled,
//! beside an entry of another evhost build.

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
