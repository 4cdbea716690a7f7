//! The operator commands on a Redis Cluster of 3 primaries and 3 replicas, reached through its
//! seeds as a user would give them (`--redis` with every node, separated by commas).

use std::time::{Duration, Instant};

use super::redis_server::RedisCluster;
use super::*;

/// A keyspace without partitions is refused with the command that fixes it; after
/// `evhost init`, publish (one event and `--file`), history, stats (with the node serving each
/// partition), a host's dead letters through `dlq`, replay, tail, the admin endpoint and the
/// demo all work across the cluster's nodes.
#[test]
fn operator_commands_work_on_a_cluster() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let refused = evhost_at(&url, &["publish", "AuctionEnded", r#"{"auction_id":"a0"}"#]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("Redis Cluster") && stderr.contains("evhost init --partitions"),
        "{stderr}"
    );
    let stdout = stdout_of(&evhost_at(&url, &["init", "--partitions", "6"]));
    assert!(stdout.contains("has 6 partition(s)"), "{stdout}");

    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    for (name, bytes) in evhost::artifacts::examples() {
        if name == "audit" || name == "payment" {
            std::fs::write(plugins.join(format!("{name}.wasm")), bytes).expect("write plugin");
        }
    }
    let host = RunningHost::start_at(&url, &plugins);

    for auction in ["a1", "a2", "a3"] {
        let data =
            format!(r#"{{"auction_id":"{auction}","winning_bidder_id":"b1","winning_price":10}}"#);
        stdout_of(&evhost_at(
            &url,
            &["publish", "AuctionEnded", &data, "--key", auction],
        ));
    }
    let file = dir.path().join("events.jsonl");
    std::fs::write(
        &file,
        "{\"type\":\"OrderPlaced\",\"data\":{\"order\":1}}\n{\"type\":\"OrderPlaced\",\"data\":{\"order\":2}}\n",
    )
    .expect("write events");
    let stdout = stdout_of(&evhost_at(
        &url,
        &["publish", "--file", file.to_str().expect("utf-8 path")],
    ));
    assert!(stdout.contains("published 2 event(s)"), "{stdout}");
    // Payment rejects an auction without a price: a dead letter in its partition.
    stdout_of(&evhost_at(
        &url,
        &[
            "publish",
            "AuctionEnded",
            r#"{"auction_id":"bad"}"#,
            "--key",
            "bad",
        ],
    ));

    let history = json_lines(&stdout_of(&evhost_at(
        &url,
        &["history", "AuctionEnded", "--json"],
    )));
    let auctions: Vec<&str> = history
        .iter()
        .map(|line| line["data"]["auction_id"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(auctions, ["a1", "a2", "a3", "bad"], "{history:?}");
    let orders = json_lines(&stdout_of(&evhost_at(
        &url,
        &["history", "OrderPlaced", "--json"],
    )));
    assert_eq!(orders.len(), 2, "{orders:?}");
    // Seeds may also be given one `--redis` each.
    let seeds: Vec<String> = cluster.nodes()[..2].iter().map(|node| node.url()).collect();
    let repeated = evhost()
        .args(["history", "OrderPlaced", "--json"])
        .args(["--redis", &seeds[0], "--redis", &seeds[1]])
        .output()
        .expect("run evhost history");
    assert_eq!(json_lines(&stdout_of(&repeated)).len(), 2);

    let primaries: Vec<String> = cluster
        .primary_ports()
        .expect("the primaries")
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let stats = json_lines(&stdout_of(&evhost_at(
        &url,
        &["stats", "--partitions", "--json"],
    )));
    let nodes = stats[0]["nodes"].as_array().expect("nodes").clone();
    assert_eq!(nodes.len(), 6, "{stats:?}");
    for node in &nodes {
        let node = node.as_str().expect("a node per partition");
        assert!(primaries.iter().any(|primary| primary == node), "{node}");
    }

    let mut letters = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while letters.is_empty() && Instant::now() < deadline {
        let output = evhost_at(&url, &["dlq", "list", "--plugin", "payment", "--json"]);
        letters = serde_json::from_str::<Vec<serde_json::Value>>(&stdout_of(&output))
            .expect("a JSON list");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(letters.len(), 1, "payment's dead letter: {letters:?}");
    assert_eq!(letters[0]["reason"], "rejected", "{letters:?}");

    let summary = replay_to_audit_at(&url, "AuctionEnded");
    assert_eq!(summary["queued"], 4, "{summary}");
    assert_eq!(summary["finished"], true, "{summary}");

    let statuses = plugin_statuses(&host.admin);
    assert!(handled_by(&statuses, "audit") >= 4, "{statuses:?}");

    let mut command = evhost();
    command
        .args(["tail", "Auction*", "--json", "--count", "1"])
        .args(["--discovery-interval-ms", "100", "--redis", &url])
        .stdout(Stdio::piped());
    let (mut child, lines) = spawn_with_log(command);
    let line = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("tail says what it follows");
    assert!(line.contains("following"), "{line}");
    stdout_of(&evhost_at(
        &url,
        &[
            "publish",
            "AuctionEnded",
            r#"{"auction_id":"a4","winning_bidder_id":"b1","winning_price":10}"#,
            "--key",
            "a4",
        ],
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("tail did not print the event");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .expect("read stdout");
    assert!(status.success(), "{status:?}\n{stdout}");
    let events = json_lines(&stdout);
    assert_eq!(events[0]["data"]["auction_id"], "a4", "{stdout}");
    drop(host);

    // The demo runs its saga on the cluster's partitions, keyed by bidder and auction (its
    // payment count covers the keyspace's earlier payments too).
    let demo = stdout_of(&evhost_at(
        &url,
        &[
            "demo",
            "--auctions",
            "3",
            "--bidders",
            "2",
            "--pace-ms",
            "5",
        ],
    ));
    for expected in [
        "BidderRegistered 2, AuctionEnded 3, PaymentProcessed 3",
        "succeeded, 1 failed",
        "exceeds the maximum amount",
        "Welcome, Ada Lovelace!",
        "in the journals of 6 partitions",
        "0 pending or unread",
    ] {
        assert!(
            demo.contains(expected),
            "demo output lacks {expected:?}:\n{demo}"
        );
    }
}

/// `evhost bench --cluster` measures one node and a local cluster of three primaries on the
/// same partitioned work, and reports both with CPU per event.
#[test]
fn bench_compares_one_node_with_a_cluster() {
    let output = evhost()
        .args(["bench", "--cluster", "--events", "2000", "--json"])
        .output()
        .expect("run evhost bench --cluster");
    let report: serde_json::Value = serde_json::from_str(&stdout_of(&output)).expect("JSON");
    assert_eq!(report["primaries"], 3, "{report}");
    assert_eq!(report["partitions"], 6, "{report}");
    for contender in ["node", "cluster"] {
        for figure in ["per_sec", "host_cpu_us", "redis_cpu_us"] {
            let value = report[contender][figure].as_f64().unwrap_or(-1.0);
            assert!(value > 0.0, "{contender}.{figure} = {value}: {report}");
        }
    }
}
