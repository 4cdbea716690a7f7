//! The `evhost` binary, run as a user would: `demo`, `publish`, `examples` and `run`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../src/redis_server.rs"]
mod redis_server;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis_server::RedisServer;

fn evhost() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evhost"));
    command
        .env_remove("REDIS_URL")
        .env_remove("EVHOST_LOG")
        .env_remove("RUST_LOG");
    command
}

fn xrange_len(server: &RedisServer, stream: &str) -> usize {
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let entries: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .expect("XRANGE");
    entries.len()
}

/// `evhost demo --auctions 3` needs no Redis (REDIS_URL points nowhere) and its summary shows
/// every step of the saga.
#[test]
fn demo_runs_the_saga_without_redis() {
    let output = evhost()
        .args(["demo", "--auctions", "3", "--pace-ms", "5"])
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .expect("run evhost demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for expected in [
        "in-memory broker",
        "Summary",
        "AuctionEnded 3",
        "PaymentProcessed 3",
        "payment        2 succeeded, 1 failed",
        "audit          ",
        "events_total: ",
        "0 pending or unread",
        "published PaymentProcessed",
        "published NotificationSent",
    ] {
        assert!(
            stdout.contains(expected),
            "demo output lacks {expected:?}:\n{stdout}"
        );
    }
}

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
    assert_eq!(xrange_len(&server, "events:AuctionEnded"), 1);

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
        xrange_len(&server, "events:AuctionEnded"),
        1,
        "nothing published"
    );
}

/// Without a reachable Redis, `evhost run` fails at once with advice.
#[test]
fn run_says_what_to_do_when_redis_is_unreachable() {
    let output = evhost()
        .args(["run", "--redis", "redis://127.0.0.1:1", "--plugins", "."])
        .output()
        .expect("run evhost run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach Redis at redis://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(stderr.contains("redis-server"), "{stderr}");
}

/// `evhost examples` + `evhost run` process a published auction on real Redis and exit 0 on
/// SIGTERM after finishing in-flight work.
#[test]
fn run_processes_events_and_stops_on_sigterm() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    let status = evhost()
        .args(["examples", "--out"])
        .arg(&plugins)
        .status()
        .expect("evhost examples");
    assert!(status.success());
    for name in ["payment", "notification", "audit", "metrics"] {
        assert!(plugins.join(format!("{name}.wasm")).is_file());
    }
    let mut child = evhost()
        .args([
            "run",
            "--redis",
            &server.url(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--consumer",
            "cli-test",
        ])
        .arg("--plugins")
        .arg(&plugins)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn evhost run");
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    while !log.contains("evhost running") {
        assert!(
            Instant::now() < deadline,
            "evhost run did not start:\n{log}"
        );
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(100)) {
            log.push_str(&line);
            log.push('\n');
        }
    }
    // Ready means groups exist; give the first discovery pass a moment to finish.
    std::thread::sleep(Duration::from_millis(500));
    let status = evhost()
        .args([
            "publish",
            "AuctionEnded",
            r#"{"auction_id":"a1","winning_bidder_id":"b1","winning_price":5}"#,
        ])
        .args(["--redis", &server.url()])
        .stdout(Stdio::null())
        .status()
        .expect("evhost publish");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while xrange_len(&server, "events:NotificationSent") < 1 {
        assert!(
            Instant::now() < deadline,
            "no NotificationSent; log so far:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "evhost did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
}

/// `evhost dlq` lists, shows and re-drives dead letters, with JSON output for scripts and
/// usage errors (exit code 2) that say what to do.
#[test]
fn dlq_lists_shows_and_redrives_dead_letters() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let dlq_id: String = redis::cmd("XADD")
        .arg("evhost:dlq:payment")
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
    assert_eq!(xrange_len(&server, "evhost:dlq:payment"), 0);
    assert_eq!(
        xrange_len(&server, "evhost:redrive:payment"),
        1,
        "moved to the plugin's own redrive stream"
    );
    assert_eq!(
        xrange_len(&server, "events:AuctionEnded"),
        0,
        "other groups never see it"
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
    for ratio in [&report["trivial"]["ratio"], &report["saga"]["ratio"]] {
        assert!(ratio.as_f64().is_some_and(|ratio| ratio > 0.0), "{report}");
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
