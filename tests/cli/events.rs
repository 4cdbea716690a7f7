//! Publishing and reading events: `publish` (one, a file, partitioned), `history`, `stats`
//! and `tail`.

use super::*;

/// `evhost publish` appends one event and prints its id; invalid JSON is a usage error.
#[test]
fn publish_prints_the_event_id_and_rejects_bad_json() {
    let server = RedisServer::start();
    let output = evhost()
        .args([
            "publish",
            "AuctionEnded",
            r#"{"auction_id":"a1","winning_bidder_id":"b1","winning_price":5}"#,
        ])
        .args(["--redis", &server.url()])
        .output()
        .expect("run evhost publish");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert_eq!(id.len(), 36, "a UUID on stdout: {id:?}");
    assert_eq!(xrange_len(&server, &KEYS.event_stream("AuctionEnded")), 1);

    let output = evhost()
        .args([
            "publish",
            "AuctionEnded",
            "{not json",
            "--redis",
            &server.url(),
        ])
        .output()
        .expect("run evhost publish");
    assert_eq!(output.status.code(), Some(2), "usage error exit code");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not valid JSON"), "{stderr}");
    assert_eq!(
        xrange_len(&server, &KEYS.event_stream("AuctionEnded")),
        1,
        "nothing published"
    );
}

/// `publish --file` publishes every line and prints the count; `history` lists them as a
/// table and as JSON lines, newest first with `--reverse`, and ranges by time.
#[test]
fn publish_file_then_history_shows_the_events() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("events.jsonl");
    std::fs::write(
        &file,
        "{\"type\":\"OrderPlaced\",\"data\":{\"order\":1,\"workflow_id\":\"wf-1\"}}\n\n{\"type\":\"OrderPlaced\",\"data\":{\"order\":2}}\n{\"type\":\"OrderShipped\",\"data\":{\"order\":1}}\n",
    )
    .expect("write events");
    let file_arg = file.to_str().expect("utf-8 path");
    let stdout = stdout_of(&evhost_on(
        &server,
        &[
            "publish",
            "--file",
            file_arg,
            "--correlation-id",
            "import-1",
        ],
    ));
    assert!(stdout.contains("published 3 event(s)"), "{stdout}");
    let typed = dir.path().join("typed.jsonl");
    std::fs::write(&typed, "{\"order\":3}\n").expect("write events");
    let stdout = stdout_of(&evhost_on(
        &server,
        &[
            "publish",
            "OrderPlaced",
            "--file",
            typed.to_str().expect("utf-8"),
        ],
    ));
    assert!(stdout.contains("published 1 event(s)"), "{stdout}");
    assert_eq!(xrange_len(&server, &KEYS.event_stream("OrderPlaced")), 3);
    assert_eq!(xrange_len(&server, &KEYS.event_stream("OrderShipped")), 1);

    // A bad line publishes nothing and is a usage error naming the line.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"type\":\"OrderPlaced\",\"data\":{}}\n{oops\n").expect("write");
    let output = evhost_on(
        &server,
        &["publish", "--file", bad.to_str().expect("utf-8")],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.jsonl:2"));
    assert_eq!(
        xrange_len(&server, &KEYS.event_stream("OrderPlaced")),
        3,
        "nothing published"
    );

    let table = stdout_of(&evhost_on(&server, &["history", "OrderPlaced"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "header and three events:\n{table}");
    assert!(
        lines[0].starts_with("ENTRY") && lines[0].contains("EVENT ID"),
        "{table}"
    );
    assert!(
        lines[1].contains("OrderPlaced") && lines[1].contains(r#""order":1"#),
        "{table}"
    );
    assert!(lines[3].contains(r#""order":3"#), "{table}");

    let events = json_lines(&stdout_of(&evhost_on(
        &server,
        &["history", "OrderPlaced", "--json"],
    )));
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["type"], "OrderPlaced");
    assert_eq!(events[0]["data"]["workflow_id"], "wf-1");
    assert_eq!(events[0]["extensions"]["correlationid"], "import-1");
    assert_eq!(events[0]["stream"], "events:OrderPlaced");
    assert!(
        events[0]["entry_id"]
            .as_str()
            .is_some_and(|id| id.contains('-'))
    );

    let newest = json_lines(&stdout_of(&evhost_on(
        &server,
        &[
            "history",
            "OrderPlaced",
            "--json",
            "--reverse",
            "--count",
            "1",
        ],
    )));
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0]["data"]["order"], 3);

    // Ranges by entry id and by RFC 3339 time.
    let second = events[1]["entry_id"].as_str().expect("entry id");
    let from_second = json_lines(&stdout_of(&evhost_on(
        &server,
        &["history", "OrderPlaced", "--json", "--from", second],
    )));
    assert_eq!(from_second.len(), 2);
    let future = json_lines(&stdout_of(&evhost_on(
        &server,
        &[
            "history",
            "OrderPlaced",
            "--json",
            "--from",
            "2999-01-01T00:00:00Z",
        ],
    )));
    assert!(future.is_empty());
    let past = json_lines(&stdout_of(&evhost_on(
        &server,
        &[
            "history",
            "OrderPlaced",
            "--json",
            "--to",
            "2000-01-01T00:00:00Z",
        ],
    )));
    assert!(past.is_empty());
    let output = evhost_on(&server, &["history", "OrderPlaced", "--from", "yesterday"]);
    assert_eq!(output.status.code(), Some(2), "bad --from is a usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("RFC 3339"));
}

/// `stats` shows length, first/last entry, and the pending and lag the test created for a
/// group; with no host running it says so in one line and still prints the Redis part.
#[test]
fn stats_shows_the_lag_and_pending_of_a_group() {
    let server = RedisServer::start();
    for n in 0..5 {
        stdout_of(&evhost_on(
            &server,
            &["publish", "StatsProbe", &format!("{{\"n\":{n}}}")],
        ));
    }
    let mut conn = redis_conn(&server);
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", "events:StatsProbe", "reader", "0"])
        .query(&mut conn)
        .expect("XGROUP CREATE");
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(&[
            "GROUP",
            "reader",
            "c1",
            "COUNT",
            "2",
            "STREAMS",
            "events:StatsProbe",
            ">",
        ])
        .query(&mut conn)
        .expect("XREADGROUP without ack");
    let no_host = "http://127.0.0.1:1";

    let report: serde_json::Value = serde_json::from_str(&stdout_of(&evhost_on(
        &server,
        &["stats", "Stats*", "--json", "--admin", no_host],
    )))
    .expect("JSON report");
    let stream = &report["streams"][0];
    assert_eq!(stream["stream"], "events:StatsProbe");
    assert_eq!(stream["length"], 5);
    assert!(stream["first_entry"].is_string() && stream["last_time"].is_string());
    let group = &stream["groups"][0];
    assert_eq!(group["group"], "reader");
    assert_eq!(group["consumers"], 1);
    assert_eq!(group["pending"], 2);
    assert_eq!(group["lag"], 3);
    assert!(group["oldest_pending_idle_ms"].is_u64(), "{report}");
    assert_eq!(group["oldest_pending"], stream["first_entry"]);
    assert!(report["plugins"].is_null());
    assert!(
        report["admin_error"]
            .as_str()
            .is_some_and(|error| error.contains("is `evhost run` running?")),
        "{report}"
    );

    let table = stdout_of(&evhost_on(&server, &["stats", "--admin", no_host]));
    let row = table
        .lines()
        .find(|line| line.starts_with("reader"))
        .unwrap_or_else(|| panic!("no group row:\n{table}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &columns[..5],
        ["reader", "events:StatsProbe", "1", "2", "3"],
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|line| line.starts_with("events:StatsProbe") && line.contains(" 5 ")),
        "{table}"
    );
    let admin_lines: Vec<&str> = table
        .lines()
        .filter(|line| line.contains("--metrics-addr"))
        .collect();
    assert_eq!(
        admin_lines.len(),
        1,
        "one line about the missing host:\n{table}"
    );
}

/// `tail` prints the events published after it started (not the ones before), follows a
/// stream created later, applies `--filter` and stops after `--count`.
#[test]
fn tail_prints_events_published_after_it_started() {
    let server = RedisServer::start();
    stdout_of(&evhost_on(
        &server,
        &["publish", "TailA", r#"{"k":"yes","n":0}"#],
    ));
    let mut command = evhost();
    command
        .args([
            "tail", "Tail*", "--json", "--count", "2", "--filter", "k=yes",
        ])
        .args(["--discovery-interval-ms", "100", "--redis", &server.url()])
        .stdout(Stdio::piped());
    let (mut child, lines) = spawn_with_log(command);
    let line = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("tail says what it follows");
    assert!(line.contains("following 1 stream(s)"), "{line}");
    for (event_type, data) in [
        ("TailA", r#"{"k":"no","n":1}"#),
        ("TailA", r#"{"k":"yes","n":2}"#),
        ("TailB", r#"{"k":"yes","n":3}"#),
    ] {
        stdout_of(&evhost_on(&server, &["publish", event_type, data]));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("tail did not exit after 2 events");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .expect("read stdout");
    assert!(status.success(), "{status:?}\n{stdout}");
    let events = json_lines(&stdout);
    let seen: Vec<(String, i64)> = events
        .iter()
        .map(|event| {
            (
                event["type"].as_str().expect("type").to_string(),
                event["data"]["n"].as_i64().expect("n"),
            )
        })
        .collect();
    assert_eq!(seen, [("TailA".to_string(), 2), ("TailB".to_string(), 3)]);
}

/// `evhost init --partitions 4` fixes the count: asking for another one again, or running a
/// host with another, is refused with both counts; `publish --key` writes into the key's
/// partition, and `history` reads every partition's stream, merged by time.
#[test]
fn partitions_are_fixed_once_and_followed_by_publish_and_history() {
    let server = RedisServer::start();
    let stdout = stdout_of(&evhost_on(&server, &["init", "--partitions", "4"]));
    assert!(stdout.contains("has 4 partition(s)"), "{stdout}");
    stdout_of(&evhost_on(&server, &["init", "--partitions", "4"]));
    for refused in [
        vec!["init", "--partitions", "8"],
        vec!["run", "--partitions", "8", "--plugins", "."],
    ] {
        let output = evhost_on(&server, &refused);
        assert_eq!(output.status.code(), Some(1), "{refused:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("has 4 partition(s)") && stderr.contains("not the 8 asked for"),
            "{refused:?}: {stderr}"
        );
    }
    let layout = evhost::Keyspace::partitioned(std::num::NonZeroU32::new(4).expect("4"));
    for auction in ["a1", "a2", "a3"] {
        let data = format!(r#"{{"auction_id":"{auction}"}}"#);
        stdout_of(&evhost_on(
            &server,
            &["publish", "AuctionEnded", &data, "--key", auction],
        ));
        let stream = layout.for_key(auction).event_stream("AuctionEnded");
        assert!(xrange_len(&server, &stream) >= 1, "{auction} in {stream}");
    }
    assert_eq!(xrange_len(&server, &KEYS.event_stream("AuctionEnded")), 0);
    let history = json_lines(&stdout_of(&evhost_on(
        &server,
        &["history", "AuctionEnded", "--json"],
    )));
    let auctions: Vec<&str> = history
        .iter()
        .map(|line| line["data"]["auction_id"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(auctions, ["a1", "a2", "a3"], "merged by time: {history:?}");
    // `stats` sums the partitions per type; `--partitions` shows each and its lease holder.
    let summed = json_lines(&stdout_of(&evhost_on(&server, &["stats", "--json"])));
    let streams = summed[0]["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 1, "{summed:?}");
    assert_eq!(streams[0]["stream"], "evhost:{p*}:events:AuctionEnded");
    assert_eq!(streams[0]["length"], 3);
    let each = json_lines(&stdout_of(&evhost_on(
        &server,
        &["stats", "--partitions", "--json"],
    )));
    let streams = each[0]["streams"].as_array().expect("streams");
    assert!(
        streams.len() > 1,
        "one row per partition's stream: {each:?}"
    );
    assert_eq!(
        each[0]["leases"],
        serde_json::json!([null, null, null, null])
    );

    // `replay` queues each partition's entries to the plugin's redrive stream there, and a host
    // (which found the streams `publish` registered) delivers them.
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    let (_, audit) = evhost::artifacts::examples()
        .into_iter()
        .find(|(name, _)| *name == "audit")
        .expect("the audit example");
    std::fs::write(plugins.join("audit.wasm"), audit).expect("write plugin");
    let _host = RunningHost::start(&server, &plugins);
    let mut conn = redis_conn(&server);
    wait_until(
        "audit's groups in the partitions",
        Duration::from_secs(30),
        || {
            ["a1", "a2", "a3"].iter().all(|auction| {
            let groups: Vec<std::collections::HashMap<String, redis::Value>> =
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(layout.for_key(auction).event_stream("AuctionEnded"))
                    .query(&mut conn)
                    .unwrap_or_default();
            groups.iter().any(|group| {
                matches!(group.get("name"), Some(redis::Value::BulkString(name)) if name == b"audit")
            })
        })
        },
    );
    let summary = replay_to_audit(&server, "AuctionEnded");
    assert_eq!(summary["queued"], 3, "{summary}");
    assert_eq!(summary["handled"], 3, "{summary}");
    assert_eq!(summary["finished"], true, "{summary}");
    for auction in ["a1", "a2", "a3"] {
        let redrive = layout.for_key(auction).redrive("audit");
        assert!(
            xrange_len(&server, &redrive) >= 1,
            "{auction} replayed in {redrive}"
        );
    }
    let replayed: usize = layout
        .each_partition()
        .map(|keyspace| xrange_len(&server, &keyspace.redrive("audit")))
        .sum();
    assert_eq!(replayed, 3);
}
