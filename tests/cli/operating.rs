//! Running and operating a host: `demo`, `run` (Redis unreachable, a wrong password,
//! `--strict`, SIGTERM), `doctor`, the configuration file, and the exit codes and hints of the
//! operator commands.

use super::*;

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
