//! Handing events to a plugin again: `dlq list|show|retry` and `replay`.

use super::*;

/// `evhost dlq` lists, shows and re-drives dead letters, with JSON output for scripts and
/// usage errors (exit code 2) that say what to do.
#[test]
fn dlq_lists_shows_and_redrives_dead_letters() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let dlq_id: String = redis::cmd("XADD")
        .arg(KEYS.dead_letters("payment"))
        .arg("*")
        .arg(&[
            ("plugin", "payment"),
            ("plugin_version", "0.1.0"),
            ("stream", "events:AuctionEnded"),
            ("entry_id", "1700000000000-0"),
            ("event_id", "e-1"),
            ("reason", "rejected"),
            ("error", "missing field `winning_price`"),
            ("attempts", "1"),
            ("time", "2026-11-24T18:00:00Z"),
            ("field:payload", r#"{"auction_id":"a1"}"#),
        ])
        .query(&mut conn)
        .expect("XADD");
    let run = |args: &[&str]| {
        evhost()
            .arg("dlq")
            .args(args)
            .args(["--redis", &server.url()])
            .output()
            .expect("run evhost dlq")
    };

    let output = run(&["list", "--plugin", "payment", "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let letters: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON list");
    assert_eq!(letters[0]["dlq_id"], dlq_id.as_str());
    assert_eq!(letters[0]["reason"], "rejected");
    assert_eq!(letters[0]["fields"][0][0], "payload");

    let output = run(&["show", "--plugin", "payment", &dlq_id]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success()
            && text.contains("missing field `winning_price`")
            && text.contains("payload = "),
        "{text}"
    );

    let output = run(&["purge", "--plugin", "payment"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "nothing selected is a usage error"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("--all"));
    let output = run(&["show", "--plugin", "payment", "not-an-id"]);
    assert_eq!(output.status.code(), Some(2));

    let output = run(&["retry", "--plugin", "payment", "--all", "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let moved: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(moved["redriven"], 1);
    assert_eq!(xrange_len(&server, &KEYS.dead_letters("payment")), 0);
    assert_eq!(
        xrange_len(&server, &KEYS.redrive("payment")),
        1,
        "moved to the plugin's own redrive stream"
    );
    assert_eq!(
        xrange_len(&server, &KEYS.event_stream("AuctionEnded")),
        0,
        "other groups never see it"
    );
}

/// With `audit` and `metrics` both subscribed to every type, `replay --plugin audit` delivers
/// the past events to audit again and never to metrics; `plugins list` and `stats` show the
/// running host's plugins and their counters.
#[test]
fn replay_reaches_only_the_named_plugin() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    for (name, bytes) in evhost::artifacts::examples() {
        if name == "audit" || name == "metrics" {
            std::fs::write(plugins.join(format!("{name}.wasm")), bytes).expect("write plugin");
        }
    }
    let host = RunningHost::start(&server, &plugins);
    // The consumers exist once their redrive streams do: the first discovery pass is over, so
    // the stream created below is read from its first entry.
    let mut conn = redis_conn(&server);
    wait_until("the consumers to start", Duration::from_secs(30), || {
        let exists: u64 = redis::cmd("EXISTS")
            .arg(&["evhost:redrive:audit", "evhost:redrive:metrics"])
            .query(&mut conn)
            .expect("EXISTS");
        exists == 2
    });
    for n in 0..3 {
        stdout_of(&evhost_on(
            &server,
            &["publish", "CliReplay", &format!("{{\"n\":{n}}}")],
        ));
    }
    wait_until(
        "both plugins to handle 3 events",
        Duration::from_secs(30),
        || {
            let statuses = plugin_statuses(&host.admin);
            handled_by(&statuses, "audit") == 3 && handled_by(&statuses, "metrics") == 3
        },
    );
    assert_eq!(xrange_len(&server, &KEYS.journal("audit")), 3);

    let list = stdout_of(
        &evhost()
            .args(["plugins", "--admin", &host.admin])
            .output()
            .expect("run evhost plugins"),
    );
    let audit_row = list
        .lines()
        .find(|line| line.starts_with("audit"))
        .unwrap_or_else(|| panic!("no audit row:\n{list}"));
    assert!(
        audit_row.contains("running") && audit_row.contains('*'),
        "{list}"
    );
    assert!(
        list.lines()
            .next()
            .is_some_and(|header| header.contains("SHA256")),
        "{list}"
    );

    let summary = replay_to_audit(&server, "CliReplay");
    assert_eq!(summary["queued"], 3, "{summary}");
    assert_eq!(summary["handled"], 3, "{summary}");
    assert_eq!(summary["dead_lettered"], 0, "{summary}");
    assert_eq!(summary["finished"], true, "{summary}");

    let journal = xrange_len(&server, &KEYS.journal("audit"));
    assert_eq!(journal, 6, "audit saw the three events again");
    // Give any (wrong) delivery to metrics time to happen before asserting it did not.
    std::thread::sleep(Duration::from_millis(500));
    let statuses = plugin_statuses(&host.admin);
    assert_eq!(
        handled_by(&statuses, "metrics"),
        3,
        "metrics never saw them again"
    );
    assert_eq!(handled_by(&statuses, "audit"), 6);
    let audit = statuses
        .iter()
        .find(|status| status["name"] == "audit")
        .expect("audit status");
    for quantile in ["p50_ms", "p99_ms"] {
        assert!(
            audit["stats"][quantile].as_f64().is_some_and(|ms| ms > 0.0),
            "{audit}"
        );
    }
    assert_eq!(xrange_len(&server, &KEYS.redrive("metrics")), 0);
    assert_eq!(
        xrange_len(&server, &KEYS.event_stream("CliReplay")),
        3,
        "the stream is unchanged"
    );

    let stats = stdout_of(&evhost_on(
        &server,
        &["stats", "CliReplay", "--admin", &host.admin],
    ));
    let audit_stats = stats
        .lines()
        .find(|line| line.starts_with("audit") && line.contains("running"))
        .unwrap_or_else(|| panic!("no audit plugin row:\n{stats}"));
    let columns: Vec<&str> = audit_stats.split_whitespace().collect();
    assert_eq!(
        &columns[..6],
        ["audit", "running", "6", "0", "0", "0"],
        "{stats}"
    );

    // A plugin without a group on the stream is refused, with the groups that exist.
    let output = evhost_on(
        &server,
        &["replay", "CliReplay", "--plugin", "payment", "--from", "-"],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no consumer group") && stderr.contains("audit"),
        "{stderr}"
    );
}
