//! The plugin author's tools: `plugins check`, `new`, `test --expect`, and `bench`.

use super::*;

/// `plugins check` prints a good component's describe() without Redis or a host, and explains
/// why a corrupt file would not load (exit 1).
#[test]
fn plugins_check_describes_good_files_and_rejects_corrupt_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = evhost()
        .args(["examples", "--out"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .expect("evhost examples");
    assert!(status.success());
    let payment = dir.path().join("payment.wasm");
    let output = evhost()
        .args(["plugins", "check"])
        .arg(&payment)
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .expect("run evhost plugins check");
    let text = stdout_of(&output);
    assert!(text.contains("is a valid evhost plugin"), "{text}");
    assert!(text.contains("name           payment"), "{text}");
    assert!(text.contains("subscriptions  AuctionEnded"), "{text}");
    let output = evhost()
        .args(["plugins", "check", "--json"])
        .arg(&payment)
        .output()
        .expect("run evhost plugins check");
    let info: serde_json::Value = serde_json::from_str(&stdout_of(&output)).expect("JSON");
    assert_eq!(info["name"], "payment");
    assert_eq!(info["subscriptions"][0], "AuctionEnded");
    assert_eq!(info["sha256"].as_str().map(str::len), Some(64));

    let corrupt = dir.path().join("corrupt.wasm");
    let mut bytes = std::fs::read(&payment).expect("read payment");
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, bytes).expect("write corrupt");
    let output = evhost()
        .args(["plugins", "check"])
        .arg(&corrupt)
        .output()
        .expect("run evhost plugins check");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("corrupt.wasm is not a valid WebAssembly component"),
        "{stderr}"
    );
}

/// `evhost new` writes a project with the WIT world and a build script, refuses a bad name
/// (usage error, exit code 2) and a non-empty directory.
#[test]
fn new_scaffolds_a_project_and_refuses_bad_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("greeter");
    let output = evhost()
        .args(["new", "greeter", "--lang", "js", "--dir"])
        .arg(&project)
        .output()
        .expect("run evhost new");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in [
        "wit/plugin.wit",
        "build.sh",
        "src/plugin.js",
        "package-lock.json",
        "README.md",
    ] {
        assert!(project.join(file).is_file(), "{file} missing");
    }
    let again = evhost()
        .args(["new", "greeter", "--dir"])
        .arg(&project)
        .output()
        .expect("run evhost new again");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let bad = evhost()
        .args(["new", "Bad.Name", "--dir"])
        .arg(dir.path().join("bad"))
        .output()
        .expect("run evhost new with a bad name");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid plugin name"));
}

/// `evhost test` runs a plugin on events without Redis: seeded key-value state, outcomes and
/// effects printed one JSON object per event, and `--expect` passing on matching results and
/// failing, with the field named, on a difference.
#[test]
fn test_runs_a_plugin_on_events_and_checks_expected_results() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, notification) = evhost::artifacts::examples()
        .into_iter()
        .find(|(name, _)| *name == "notification")
        .expect("the notification example");
    let plugin = dir.path().join("notification.wasm");
    std::fs::write(&plugin, notification).expect("write plugin");
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"type":"PaymentProcessed","data":{"auction_id":"a1","bidder_id":"b1","amount":120,"status":"succeeded"}}"#,
            "\n",
            r#"{"type":"BidderRegistered","data":{"bidder_id":"b2","name":"Bo","email":"bo@example.com"}}"#,
            "\n",
            r#"{"type":"PaymentProcessed","data":{"auction_id":"a2","bidder_id":"b2","amount":7,"status":"succeeded"}}"#,
            "\n",
            r#"{"type":"PaymentProcessed","data":"not an object"}"#,
            "\n",
        ),
    )
    .expect("write events");
    let kv = dir.path().join("kv.json");
    std::fs::write(
        &kv,
        r#"{"bidder:b1": {"name": "Ada", "email": "ada@example.com"}}"#,
    )
    .expect("write kv");
    let run = |extra: &[&str]| {
        let mut command = evhost();
        command
            .arg("test")
            .arg(&plugin)
            .arg("--events")
            .arg(&events)
            .arg("--kv")
            .arg(&kv)
            .arg("--json")
            .args(extra);
        command.output().expect("run evhost test")
    };
    let results = json_lines(&stdout_of(&run(&[])));
    assert_eq!(results.len(), 4, "{results:?}");
    let outcomes: Vec<&str> = results
        .iter()
        .map(|result| result["outcome"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(outcomes, ["handled", "handled", "handled", "rejected"]);
    // The seeded bidder, then the one registered by the second event, are found.
    let recipients: Vec<&str> = [0, 2]
        .iter()
        .map(|n| {
            results[*n]["publishes"][0]["data"]["recipient"]
                .as_str()
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(recipients, ["ada@example.com", "bo@example.com"]);
    assert_eq!(results[1]["kv"][0]["op"], "set");
    assert_eq!(results[1]["kv"][0]["key"], "bidder:b2");
    assert_eq!(results[3]["event"], "test-4");
    // The metric samples a call changed.
    let (_, metrics) = evhost::artifacts::examples()
        .into_iter()
        .find(|(name, _)| *name == "metrics")
        .expect("the metrics example");
    let metrics_plugin = dir.path().join("metrics.wasm");
    std::fs::write(&metrics_plugin, metrics).expect("write plugin");
    let counted = json_lines(&stdout_of(
        &evhost()
            .arg("test")
            .arg(&metrics_plugin)
            .arg("--events")
            .arg(&events)
            .arg("--json")
            .output()
            .expect("run evhost test"),
    ));
    assert_eq!(
        counted[1]["metrics"],
        serde_json::json!([
            r#"evhost_plugin_events_total{plugin="metrics",type="BidderRegistered"} 1.0"#
        ]),
        "{counted:?}"
    );
    let samples = counted[2]["metrics"].as_array().expect("samples");
    assert!(
        samples.contains(&serde_json::json!(
            r#"evhost_plugin_events_total{plugin="metrics",type="PaymentProcessed"} 2.0"#
        )) && samples
            .iter()
            .all(|sample| !sample.to_string().contains("_bucket")),
        "{samples:?}"
    );

    let expect = dir.path().join("expected.jsonl");
    let expected = expectations_of(&results);
    std::fs::write(&expect, expected.join("\n")).expect("write expectations");
    let matching = run(&["--expect", expect.to_str().expect("utf-8 path")]);
    assert!(
        matching.status.success(),
        "{}",
        String::from_utf8_lossy(&matching.stderr)
    );

    let mut wrong = expected.clone();
    wrong[3] = r#"{"outcome": "handled"}"#.to_string();
    std::fs::write(&expect, wrong.join("\n")).expect("write expectations");
    let differing = run(&["--expect", expect.to_str().expect("utf-8 path")]);
    assert_eq!(differing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&differing.stderr);
    assert!(
        stderr
            .contains(r#"event 4 (PaymentProcessed): outcome: expected "handled", got "rejected""#)
            && stderr.contains("1 result(s) differ"),
        "{stderr}"
    );
}

/// `evhost bench` runs every measurement against a private redis-server it starts itself and
/// reports them as JSON (small sizes here; the figures are only meaningful in release builds).
#[test]
fn bench_runs_every_measurement_and_reports_json() {
    let output = evhost()
        .args([
            "bench",
            "--events",
            "2000",
            "--saga-events",
            "300",
            "--rates",
            "2000",
        ])
        .args([
            "--latency-secs",
            "1",
            "--swaps",
            "2",
            "--memory-events",
            "2000",
            "--hot-key-events",
            "300",
            "--hot-key-lanes",
            "4",
            "--saga-concurrency",
            "3",
            "--saga-partitioned",
            "--partitions",
            "4",
            "--json",
        ])
        .output()
        .expect("run evhost bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    // Every auction was drained with payment and notification handling three events at a time,
    // partitioned by auction and bidder.
    assert_eq!(report["saga_concurrency"], 3, "{report}");
    assert_eq!(report["saga_partitioned"], true, "{report}");
    // The saga also ran on 4 partitions, drained in every one.
    assert_eq!(report["saga_partitions"]["partitions"], 4, "{report}");
    assert!(
        report["saga_partitions"]["ratio"]
            .as_f64()
            .is_some_and(|ratio| ratio > 0.0),
        "{report}"
    );
    for ratio in [&report["trivial"]["ratio"], &report["saga"]["ratio"]] {
        assert!(ratio.as_f64().is_some_and(|ratio| ratio > 0.0), "{report}");
    }
    // The hot key was counted exactly in both modes (the benchmark checks the totals).
    for rate in ["raw_per_sec", "get_set_per_sec", "increment_per_sec"] {
        assert!(
            report["hot_key"][rate]
                .as_f64()
                .is_some_and(|rate| rate > 0.0),
            "{report}"
        );
    }
    assert!(
        report["latency"][0]["evhost"]["samples"]
            .as_u64()
            .is_some_and(|n| n > 500),
        "{report}"
    );
    assert!(
        report["latency"][0]["raw"]["samples"]
            .as_u64()
            .is_some_and(|n| n > 500),
        "{report}"
    );
    assert_eq!(
        report["swap_ms"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert!(
        report["rss_rest_mib"].as_f64().is_some_and(|mib| mib > 1.0),
        "{report}"
    );
    assert!(
        report["rss_after_mib"]
            .as_f64()
            .is_some_and(|mib| mib > 1.0),
        "{report}"
    );
}
