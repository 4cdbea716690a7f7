//! Every `--json` output is JSON Lines: each line of stdout one JSON value, whatever the
//! subcommand, so that `jq` and scripts read them all the same way.

use std::process::Output;
use std::time::Duration;

use super::redis_server::RedisServer;
use super::{RunningHost, evhost, examples_in, json_lines, redis_conn, wait_until};

/// The JSON values of `output`'s stdout, each line parsed on its own (panics on a line that
/// is not JSON); `what` names the command in the message.
fn values_of(what: &str, output: &Output) -> Vec<serde_json::Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.trim().is_empty() || what == "rollout status",
        "{what}: no output; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    json_lines(&stdout)
}

#[test]
fn every_json_output_parses_line_by_line() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = examples_in(dir.path());
    let host = RunningHost::start(&server, &plugins);
    let admin = host.admin.as_str();
    for n in 0..3 {
        let data = format!(
            "{{\"auction_id\":\"a{n}\",\"winning_bidder_id\":\"b{n}\",\"winning_price\":{}}}",
            10 + n
        );
        let output = evhost()
            .args(["publish", "AuctionEnded", &data, "--redis", &url])
            .output()
            .expect("publish");
        assert!(output.status.success(), "{output:?}");
    }
    // A malformed entry, dead-lettered by payment.
    let mut conn = redis_conn(&server);
    let _: String = redis::cmd("XADD")
        .arg(super::KEYS.event_stream("AuctionEnded"))
        .arg("*")
        .arg("garbage")
        .arg("1")
        .query(&mut conn)
        .expect("XADD");
    let dlq_list = || {
        evhost()
            .args([
                "dlq", "list", "--plugin", "payment", "--json", "--redis", &url,
            ])
            .output()
            .expect("dlq list")
    };
    wait_until("a dead letter", Duration::from_secs(30), || {
        String::from_utf8_lossy(&dlq_list().stdout).contains("dlq_id")
    });
    let letters = values_of("dlq list", &dlq_list());
    let dlq_id = letters
        .iter()
        .flat_map(|value| {
            value
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![value.clone()])
        })
        .find_map(|letter| letter["dlq_id"].as_str().map(str::to_string))
        .expect("a dead letter id");

    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"type\":\"AuctionEnded\",\"data\":{\"auction_id\":\"x\",\"winning_bidder_id\":\"y\",\"winning_price\":1}}\n",
    )
    .expect("events");
    let payment = plugins.join("payment.wasm");
    let payment = payment.to_str().expect("path");
    let events = events.to_str().expect("path");
    let cache = dir.path().join("cache");
    let cache = cache.to_str().expect("path");
    let with_redis: Vec<(&str, Vec<&str>)> = vec![
        ("history", vec!["history", "AuctionEnded", "--json"]),
        ("stats", vec!["stats", "--json"]),
        (
            "dlq show",
            vec!["dlq", "show", "--plugin", "payment", &dlq_id, "--json"],
        ),
        ("doctor", vec!["doctor", "--json"]),
        (
            "replay",
            vec![
                "replay",
                "AuctionEnded",
                "--plugin",
                "audit",
                "--from",
                "-",
                "--no-wait",
                "--json",
            ],
        ),
        (
            "dlq retry",
            vec!["dlq", "retry", "--plugin", "payment", &dlq_id, "--json"],
        ),
        (
            "dlq purge",
            vec!["dlq", "purge", "--plugin", "payment", "--all", "--json"],
        ),
    ];
    for (what, args) in with_redis {
        let output = evhost()
            .args(&args)
            .args(["--redis", &url])
            .output()
            .expect("run evhost");
        values_of(what, &output);
    }
    let with_admin: Vec<(&str, Vec<&str>)> = vec![
        ("plugins list", vec!["plugins", "list", "--json"]),
        ("rollout status", vec!["rollout", "status", "--json"]),
    ];
    for (what, args) in with_admin {
        let output = evhost()
            .args(&args)
            .args(["--admin", admin])
            .output()
            .expect("run evhost");
        assert!(output.status.success(), "{what}: {output:?}");
        values_of(what, &output);
    }
    let alone: Vec<(&str, Vec<&str>)> = vec![
        ("plugins check", vec!["plugins", "check", payment, "--json"]),
        ("test", vec!["test", payment, "--events", events, "--json"]),
        (
            "cache info",
            vec!["cache", "info", "--cache-dir", cache, "--json"],
        ),
    ];
    for (what, args) in alone {
        let output = evhost().args(&args).output().expect("run evhost");
        assert!(output.status.success(), "{what}: {output:?}");
        values_of(what, &output);
    }
    drop(host);
}
