//! The `evhost` binary, run as a user would: `demo`, `publish`, `examples` and `run`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../src/redis_server.rs"]
mod redis_server;

mod c_plugin;
mod cache;
mod cluster;
mod console;
mod dev;
mod json;
mod python_trial;
mod rollout;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
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

/// The names of the keys the tests look at: the single layout, as the hosts under test use.
pub(crate) const KEYS: evhost::Keyspace = evhost::Keyspace::single();

/// Spawns `command` with its stderr read line by line on a thread of its own (its stdout is
/// the caller's choice).
fn spawn_with_log(mut command: Command) -> (std::process::Child, Receiver<String>) {
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn evhost");
    let stderr = child.stderr.take().expect("stderr");
    (child, lines_of(stderr))
}

/// The lines `reader` gives, read by a thread of their own.
fn lines_of(reader: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    lines_rx
}

/// Collects `lines` into `log` until one contains `needle`, and returns that line.
///
/// # Panics
///
/// After `timeout`, with the log so far.
fn wait_for_line(
    lines: &Receiver<String>,
    needle: &str,
    timeout: Duration,
    log: &mut String,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?} within {timeout:?}:\n{log}"
        );
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            log.push_str(&line);
            log.push('\n');
            if line.contains(needle) {
                return line;
            }
        }
    }
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

/// A wrong password is refused with the URL shown redacted: the password never appears.
#[test]
fn a_wrong_password_is_refused_without_showing_it() {
    let server = RedisServer::start_with(&["--requirepass", "right-pass"]);
    let wrong = format!("redis://default:wrong-pass@127.0.0.1:{}", server.port());
    let output = evhost()
        .args(["publish", "AuctionEnded", r#"{"auction_id":"a1"}"#])
        .args(["--redis", &wrong])
        .output()
        .expect("run evhost publish");
    assert!(!output.status.success(), "a wrong password is refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("wrong-pass"),
        "the password leaks: {stderr}"
    );
    assert!(
        stderr.contains("redis://default:***@127.0.0.1"),
        "the URL is shown redacted: {stderr}"
    );
}

/// `evhost doctor` on a Redis that would lose events prints each danger with its fix and exits
/// with 3, so that it can gate a deployment; `--json` gives the same findings.
#[test]
fn doctor_exits_with_3_on_a_danger_and_prints_the_fix() {
    let server =
        RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru", "--maxmemory", "50mb"]);
    let url = format!("redis://127.0.0.1:{}", server.port());
    let output = evhost()
        .args(["doctor", "--redis", &url])
        .output()
        .expect("run evhost doctor");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("danger eviction")
            && stdout.contains("CONFIG SET maxmemory-policy noeviction"),
        "{stdout}"
    );
    let output = evhost()
        .args(["doctor", "--json", "--redis", &url])
        .output()
        .expect("run evhost doctor --json");
    assert_eq!(output.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let levels: Vec<(&str, &str)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|finding| {
            (
                finding["check"].as_str().unwrap_or_default(),
                finding["level"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(levels.contains(&("eviction", "danger")), "{levels:?}");
    assert!(levels.contains(&("version", "ok")), "{levels:?}");
}

/// `evhost run --strict` refuses to start on a danger in the Redis settings.
#[test]
fn run_strict_refuses_a_redis_that_would_lose_events() {
    let server =
        RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru", "--maxmemory", "50mb"]);
    let plugins = tempfile::tempdir().expect("plugin dir");
    let output = evhost()
        .args([
            "run",
            "--strict",
            "--no-watch",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--redis", &format!("redis://127.0.0.1:{}", server.port())])
        .arg("--plugins")
        .arg(plugins.path())
        .output()
        .expect("run evhost run --strict");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--strict")
            && stderr.contains("not starting")
            && stderr.contains("doctor: danger"),
        "{stderr}"
    );
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
    let mut command = evhost();
    command
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
        .stdout(Stdio::null());
    let (mut child, lines) = spawn_with_log(command);
    let mut log = String::new();
    wait_for_line(&lines, "evhost running", Duration::from_secs(30), &mut log);
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
    while xrange_len(&server, &KEYS.event_stream("NotificationSent")) < 1 {
        assert!(
            Instant::now() < deadline,
            "no NotificationSent; log so far:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = stop_with_sigterm(&mut child, Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
}

/// Sends SIGTERM to `child` (an evhost this test started) and waits up to `timeout` for it to
/// exit; kills it and panics when it does not.
fn stop_with_sigterm(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::process::ExitStatus {
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(kill.success());
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("evhost did not stop within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

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

/// `--config evhost.toml` supplies flags (here the Redis URL and a source), a flag overrides
/// the file, and an unknown key is a usage error naming the key and the file.
#[test]
fn config_file_supplies_flags_and_rejects_unknown_keys() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("evhost.toml");
    std::fs::write(
        &config,
        format!(
            "redis = \"{}\"\n[publish]\nsource = \"from-config\"\n",
            server.url()
        ),
    )
    .expect("write evhost.toml");
    let output = evhost()
        .args(["--config", config.to_str().expect("utf-8 path")])
        .args(["publish", "ConfigProbe", r#"{"n":1}"#])
        .output()
        .expect("run evhost publish");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = evhost()
        .env("EVHOST_CONFIG", &config)
        .args([
            "publish",
            "ConfigProbe",
            r#"{"n":2}"#,
            "--source",
            "from-flag",
        ])
        .output()
        .expect("run evhost publish");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(KEYS.event_stream("ConfigProbe"))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .expect("XRANGE");
    let sources: Vec<&str> = entries
        .iter()
        .filter_map(|(_, fields)| {
            fields
                .iter()
                .find(|(name, _)| name == "source")
                .map(|(_, value)| value.as_str())
        })
        .collect();
    assert_eq!(sources, ["from-config", "from-flag"]);

    std::fs::write(&config, "[run]\nbatchsize = 7\n").expect("write evhost.toml");
    let output = evhost()
        .args(["--config", config.to_str().expect("utf-8 path")])
        .args(["run", "--plugins", "."])
        .output()
        .expect("run evhost run");
    assert_eq!(output.status.code(), Some(2), "usage error exit code");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`run.batchsize`") && stderr.contains("evhost.toml"),
        "{stderr}"
    );
}

// ---- Operator commands: history, tail, stats, plugins, replay, publish --file ----

/// Runs `evhost` with `args` against `server` and returns its output.
fn evhost_on(server: &RedisServer, args: &[&str]) -> std::process::Output {
    evhost_at(&server.url(), args)
}

/// Runs `evhost` with `args` against the Redis at `url` and returns its output.
fn evhost_at(url: &str, args: &[&str]) -> std::process::Output {
    evhost()
        .args(args)
        .args(["--redis", url])
        .output()
        .expect("run evhost")
}

/// Stdout of a successful run (panics with stderr otherwise).
fn stdout_of(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Writes the example plugins into `<dir>/plugins` with `evhost examples`; returns that folder.
fn examples_in(dir: &std::path::Path) -> std::path::PathBuf {
    let plugins = dir.join("plugins");
    let status = evhost()
        .args(["examples", "--out"])
        .arg(&plugins)
        .stdout(Stdio::null())
        .status()
        .expect("evhost examples");
    assert!(status.success(), "evhost examples: {status:?}");
    plugins
}

/// The `--expect` lines of `evhost test` results: each event's outcome and publishes.
fn expectations_of(results: &[serde_json::Value]) -> Vec<String> {
    results
        .iter()
        .map(|result| {
            serde_json::json!({"outcome": result["outcome"], "publishes": result["publishes"]})
                .to_string()
        })
        .collect()
}

/// Parses every stdout line as JSON.
fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

fn redis_conn(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .expect("url")
        .get_connection()
        .expect("connect")
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

/// A host started with `evhost run` on a directory; killed on drop.
struct RunningHost {
    child: std::process::Child,
    admin: String,
}

impl RunningHost {
    fn start(server: &RedisServer, plugins: &std::path::Path) -> Self {
        Self::start_at(&server.url(), plugins)
    }

    /// A host on the Redis at `url`.
    fn start_at(url: &str, plugins: &std::path::Path) -> Self {
        Self::launch(url, plugins, false)
    }

    /// A host on the Redis at `url` that watches its plugin directory.
    fn start_watching(url: &str, plugins: &std::path::Path) -> Self {
        Self::launch(url, plugins, true)
    }

    fn launch(url: &str, plugins: &std::path::Path, watch: bool) -> Self {
        let mut command = evhost();
        command
            .args(["run", "--redis", url, "--metrics-addr", "127.0.0.1:0"])
            .args(["--consumer", "cli-test", "--block-ms", "100"])
            .args([
                "--discovery-interval-ms",
                "100",
                "--retry-interval-ms",
                "100",
            ])
            .arg("--plugins")
            .arg(plugins)
            .stdout(Stdio::null());
        if !watch {
            command.arg("--no-watch");
        }
        let (child, lines) = spawn_with_log(command);
        let mut log = String::new();
        let line = wait_for_line(&lines, "evhost running", Duration::from_secs(60), &mut log);
        let start = line.find("http://").expect("admin address in the log");
        let end = line[start..].find("/metrics").expect("admin path") + start;
        let admin = line[start..end].to_string();
        RunningHost { child, admin }
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `evhost replay TYPE --plugin audit --from -` waiting up to 30 s, and its JSON summary.
fn replay_to_audit(server: &RedisServer, event_type: &str) -> serde_json::Value {
    replay_to_audit_at(&server.url(), event_type)
}

/// [`replay_to_audit`] on the Redis at `url`.
fn replay_to_audit_at(url: &str, event_type: &str) -> serde_json::Value {
    let args = [
        "replay",
        event_type,
        "--plugin",
        "audit",
        "--from",
        "-",
        "--wait-secs",
        "30",
        "--json",
    ];
    serde_json::from_str(&stdout_of(&evhost_at(url, &args))).expect("JSON summary")
}

/// Waits up to `timeout` for `check`.
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `/api/plugins` statuses of a running host, by `evhost plugins list --json`.
fn plugin_statuses(admin: &str) -> Vec<serde_json::Value> {
    let output = evhost()
        .args(["plugins", "list", "--json", "--admin", admin])
        .output()
        .expect("run evhost plugins list");
    let value: serde_json::Value =
        serde_json::from_str(&stdout_of(&output)).expect("JSON plugin list");
    value.as_array().expect("array").clone()
}

fn handled_by(statuses: &[serde_json::Value], plugin: &str) -> u64 {
    statuses
        .iter()
        .find(|status| status["name"] == plugin)
        .and_then(|status| status["stats"]["handled"].as_u64())
        .unwrap_or_else(|| panic!("no stats for {plugin}: {statuses:?}"))
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

/// Unreachable Redis or host: exit 1 with what to do; bad arguments: exit 2.
#[test]
fn operator_commands_say_what_to_do_and_use_the_documented_exit_codes() {
    for args in [
        &["history", "A"][..],
        &["stats"][..],
        &["tail"][..],
        &["replay", "A", "--plugin", "p", "--from", "-"][..],
    ] {
        let output = evhost()
            .args(args)
            .args(["--redis", "redis://127.0.0.1:1"])
            .output()
            .expect("run evhost");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("cannot reach Redis at redis://127.0.0.1:1")
                && stderr.contains("is redis-server running?"),
            "{args:?}: {stderr}"
        );
    }
    let output = evhost()
        .args(["plugins", "list", "--admin", "http://127.0.0.1:1"])
        .output()
        .expect("run evhost plugins list");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is `evhost run` running?") && stderr.contains("--metrics-addr"),
        "{stderr}"
    );
    for args in [
        &["history", "A", "--count", "many"][..],
        &["tail", "--filter", "novalue"][..],
        &["replay", "A", "--plugin", "p"][..],
        &["history", "A", "--from", "2026-13-45"][..],
        &["stats", "[unclosed"][..],
        &["publish", "A"][..],
        &["plugins", "frobnicate"][..],
    ] {
        let output = evhost()
            .args(args)
            .args(["--redis", "redis://127.0.0.1:1"])
            .output()
            .expect("run evhost");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
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
