//! Crash tests of the real `evhost` binary under load, against a real `redis-server` with an
//! append-only file fsynced on every write: the host killed with SIGKILL and restarted, Redis
//! crashed and restarted, a second host taking over a dead one's pending entries. Afterwards
//! every `AuctionEnded` produced exactly one `PaymentProcessed`, nothing is pending and no
//! dead letter exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../src/redis_server.rs"]
mod redis_server;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis_server::RedisServer;

/// Auctions published per test.
const AUCTIONS: usize = 20_000;
/// Publishing pace: this many events every 10 ms (2,500 events/s).
const PER_TICK: usize = 25;

/// The names of the keys the tests look at: the single layout, as the hosts under test use.
const KEYS: evhost::Keyspace = evhost::Keyspace::single();

/// A directory with the example plugins and a compile cache.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new(env!("CARGO_BIN_EXE_evhost"))
            .args(["examples", "--out"])
            .arg(dir.path().join("plugins"))
            .stdout(Stdio::null())
            .status()
            .expect("evhost examples");
        assert!(status.success());
        Workspace { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `evhost run` as consumer `consumer`, logging to `<consumer>-<n>.log`.
    fn host(&self, server: &RedisServer, consumer: &str, claim_idle_ms: u64, n: usize) -> Child {
        self.host_with(server, consumer, claim_idle_ms, n, &[])
    }

    /// [`Workspace::host`] with more arguments for `evhost run`.
    fn host_with(
        &self,
        server: &RedisServer,
        consumer: &str,
        claim_idle_ms: u64,
        n: usize,
        extra: &[&str],
    ) -> Child {
        let log =
            std::fs::File::create(self.path(&format!("{consumer}-{n}.log"))).expect("log file");
        Command::new(env!("CARGO_BIN_EXE_evhost"))
            .args(["run", "--redis", &server.url(), "--consumer", consumer])
            .args([
                "--metrics-addr",
                "127.0.0.1:0",
                "--retry-interval-ms",
                "100",
            ])
            .args([
                "--claim-idle-ms",
                &claim_idle_ms.to_string(),
                "--discovery-interval-ms",
                "200",
            ])
            .arg("--plugins")
            .arg(self.path("plugins"))
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .args(extra)
            .env(
                "EVHOST_LOG",
                "warn,evhost::host=info,evhost::lease=info,evhost::relay=info",
            )
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn evhost run")
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.dir.path()).expect("dir").flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "log") {
                let content = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = content.lines().rev().take(15).collect();
                text.push_str(&format!("--- {} (last lines)\n", path.display()));
                for line in tail.into_iter().rev() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }
}

fn connect(url: &str) -> Option<redis::Connection> {
    let client = redis::Client::open(url).ok()?;
    client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()
}

/// Publishes `AUCTIONS` auctions in the seed format at a steady pace, retrying each one until
/// Redis takes it (Redis may be down for a moment).
fn start_publisher(url: String, done: Arc<AtomicBool>) -> JoinHandle<()> {
    start_publishing(url, AUCTIONS, done)
}

/// Publishes `auctions` auctions to `events:AuctionEnded`, as [`start_publisher`].
fn start_publishing(url: String, auctions: usize, done: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conn = None;
        for n in 0..auctions {
            let payload = format!(
                r#"{{"auction_id":"a-{n}","winning_bidder_id":"b-{}","winning_price":{}}}"#,
                n % 50,
                10 + n % 900
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if conn.is_none() {
                    conn = connect(&url);
                }
                let sent = conn.as_mut().map(|conn| {
                    redis::cmd("XADD")
                        .arg(KEYS.event_stream("AuctionEnded"))
                        .arg("*")
                        .arg("payload")
                        .arg(&payload)
                        .query::<String>(conn)
                });
                match sent {
                    Some(Ok(_)) => break,
                    _ => {
                        conn = None;
                        assert!(
                            Instant::now() < deadline,
                            "could not publish auction {n} for 30 s"
                        );
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            if n % PER_TICK == PER_TICK - 1 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        done.store(true, Ordering::SeqCst);
    })
}

/// Waits until every auction was paid for and nothing is pending; then checks exactly-once.
fn assert_exactly_once(server: &RedisServer, workspace: &Workspace) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut conn = connect(&server.url()).expect("connect");
    loop {
        let payments: usize = redis::cmd("XLEN")
            .arg(KEYS.event_stream("PaymentProcessed"))
            .query(&mut conn)
            .unwrap_or(0);
        let pending: u64 = ["events:AuctionEnded", "events:PaymentProcessed"]
            .iter()
            .map(|stream| pending_of(&mut conn, stream))
            .sum();
        if payments >= AUCTIONS && pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not done after 180 s: {payments} payments, {pending} pending or unread\n{}",
            workspace.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every auction paid exactly once.
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(KEYS.event_stream("PaymentProcessed"))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .expect("XRANGE");
    let mut auctions = HashSet::new();
    for (_, fields) in &entries {
        let data = &fields
            .iter()
            .find(|(name, _)| name == "data")
            .expect("data field")
            .1;
        let data: serde_json::Value = serde_json::from_str(data).expect("JSON");
        let auction = data["auction_id"].as_str().expect("auction id").to_string();
        assert!(
            auctions.insert(auction.clone()),
            "auction {auction} paid twice"
        );
    }
    assert_eq!(auctions.len(), AUCTIONS, "every auction paid");
    let letters: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", KEYS.dead_letters_prefix()))
        .query(&mut conn)
        .expect("KEYS");
    assert!(letters.is_empty(), "no dead letters: {letters:?}");
}

/// Waits until the host created the groups of the saga, so that no auction precedes them.
fn wait_for_groups(server: &RedisServer, workspace: &Workspace) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn = connect(&server.url()).expect("connect");
    for (stream, group) in [
        ("events:AuctionEnded", "payment"),
        ("events:PaymentProcessed", "notification"),
    ] {
        loop {
            let groups: Vec<redis::Value> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(stream)
                .query(&mut conn)
                .unwrap_or_default();
            let found = groups.iter().any(|info| matches!(info, redis::Value::Array(fields) if fields.iter().any(|field| matches!(field, redis::Value::BulkString(name) if name == group.as_bytes()))));
            if found {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the host did not create {group} on {stream}\n{}",
                workspace.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("evhost did not stop within 20 s of SIGTERM");
}

fn aof_server() -> RedisServer {
    RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
}

/// The host is killed with SIGKILL and restarted 12 times while 20,000 auctions arrive:
/// nothing is lost, nothing is paid twice.
#[test]
fn host_killed_under_load_loses_nothing_and_duplicates_nothing() {
    let server = aof_server();
    let workspace = Workspace::new();
    let done = Arc::new(AtomicBool::new(false));
    let mut kills = 0;
    let mut host = workspace.host(&server, "chaos", 2_000, 0);
    wait_for_groups(&server, &workspace);
    let publisher = start_publisher(server.url(), done.clone());
    while !done.load(Ordering::SeqCst) || kills < 12 {
        std::thread::sleep(Duration::from_millis(500 + (kills as u64 * 137) % 700));
        host.kill().expect("SIGKILL");
        let _ = host.wait();
        kills += 1;
        host = workspace.host(&server, "chaos", 2_000, kills);
    }
    publisher.join().expect("publisher");
    assert!(kills >= 10, "killed {kills} times");
    assert_exactly_once(&server, &workspace);
    stop(host);
}

/// Redis crashes (SIGKILL) and restarts from its append-only file twice while 20,000 auctions
/// arrive; the host reconnects by itself.
#[test]
fn redis_restarted_under_load_loses_nothing() {
    let mut server = aof_server();
    let workspace = Workspace::new();
    let done = Arc::new(AtomicBool::new(false));
    let host = workspace.host(&server, "survivor", 2_000, 0);
    wait_for_groups(&server, &workspace);
    let publisher = start_publisher(server.url(), done.clone());
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(2_500));
        server.crash_and_restart();
    }
    publisher.join().expect("publisher");
    assert_exactly_once(&server, &workspace);
    stop(host);
}

/// A host dies for good under load; a second host with another consumer name, started later,
/// takes over its pending entries once they are idle long enough.
#[test]
fn a_second_host_takes_over_a_dead_hosts_pending_entries() {
    let server = aof_server();
    let workspace = Workspace::new();
    let done = Arc::new(AtomicBool::new(false));
    let mut first = workspace.host(&server, "first", 1_000, 0);
    wait_for_groups(&server, &workspace);
    let publisher = start_publisher(server.url(), done.clone());
    std::thread::sleep(Duration::from_millis(3_000));
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let second = workspace.host(&server, "second", 1_000, 0);
    publisher.join().expect("publisher");
    assert_exactly_once(&server, &workspace);
    let mut conn = connect(&server.url()).expect("connect");
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(KEYS.event_stream("AuctionEnded"))
        .arg("payment")
        .arg("-")
        .arg("+")
        .arg(10)
        .arg("first")
        .query(&mut conn)
        .expect("XPENDING");
    assert!(pending.is_empty(), "nothing left with the dead host");
    stop(second);
}

/// The entries of `stream`, as (id, fields).
fn entries(conn: &mut redis::Connection, stream: &str) -> Vec<(String, Vec<(String, String)>)> {
    redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(conn)
        .expect("XRANGE")
}

/// The sum of the `pending` of every group of `stream`.
fn pending_of(conn: &mut redis::Connection, stream: &str) -> u64 {
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(conn)
        .unwrap_or_default();
    groups
        .iter()
        .map(|group| match group {
            redis::Value::Array(fields) => fields
                .chunks(2)
                .filter_map(|pair| match pair {
                    [redis::Value::BulkString(key), redis::Value::Int(value)]
                        if key == b"pending" =>
                    {
                        Some(*value as u64)
                    }
                    _ => None,
                })
                .sum::<u64>(),
            _ => 0,
        })
        .sum()
}

/// Three hosts on 8 partitions while 5,000 auctions arrive on the plain `events:AuctionEnded`
/// stream (moved into partitions by the relay): one host is killed with SIGKILL, another
/// stopped with SIGSTOP past its lease and then resumed. The survivors take the partitions
/// over, the stalled host's commits are refused: every auction is paid exactly once, nothing
/// stays pending, every outbox is drained.
#[test]
fn partitioned_hosts_survive_a_kill_and_a_stall() {
    const PARTITION_AUCTIONS: usize = 5_000;
    let server = aof_server();
    let workspace = Workspace::new();
    let status = Command::new(env!("CARGO_BIN_EXE_evhost"))
        .args(["init", "--partitions", "8", "--redis", &server.url()])
        .stdout(Stdio::null())
        .status()
        .expect("evhost init");
    assert!(status.success());
    let layout = evhost::Keyspace::partitioned(std::num::NonZeroU32::new(8).expect("8"));
    let extra = [
        "--ingress-key",
        "AuctionEnded=auction_id",
        "--lease-ttl-ms",
        "1500",
    ];
    let mut killed = workspace.host_with(&server, "part-a", 1_000, 0, &extra);
    let stalled = workspace.host_with(&server, "part-b", 1_000, 0, &extra);
    let survivor = workspace.host_with(&server, "part-c", 1_000, 0, &extra);
    let mut conn = connect(&server.url()).expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hosts: Vec<String> = redis::cmd("ZRANGE")
            .arg("evhost:hosts")
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .expect("ZRANGE");
        let leases: Vec<String> = redis::cmd("KEYS")
            .arg("evhost:{p*}:lease")
            .query(&mut conn)
            .expect("KEYS");
        if hosts.len() == 3 && leases.len() == 8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 hosts holding 8 leases: {hosts:?} {leases:?}\n{}",
            workspace.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = Arc::new(AtomicBool::new(false));
    let publisher = start_publishing(server.url(), PARTITION_AUCTIONS, done.clone());
    std::thread::sleep(Duration::from_millis(1_000));
    killed.kill().expect("SIGKILL");
    let _ = killed.wait();
    std::thread::sleep(Duration::from_millis(500));
    let signal = |name: &str| {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(stalled.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("STOP");
    std::thread::sleep(Duration::from_millis(4_000));
    signal("CONT");
    publisher.join().expect("publisher");

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut payments = 0;
        let mut pending = pending_of(&mut conn, "events:AuctionEnded");
        let mut outboxes = 0;
        for keyspace in layout.each_partition() {
            payments += redis::cmd("XLEN")
                .arg(keyspace.event_stream("PaymentProcessed"))
                .query::<usize>(&mut conn)
                .unwrap_or(0);
            for event_type in ["AuctionEnded", "PaymentProcessed"] {
                pending += pending_of(&mut conn, &keyspace.event_stream(event_type));
            }
            outboxes += redis::cmd("XLEN")
                .arg(keyspace.outbox().expect("outbox"))
                .query::<usize>(&mut conn)
                .unwrap_or(0);
        }
        if payments >= PARTITION_AUCTIONS && pending == 0 && outboxes == 0 {
            break;
        }
        if Instant::now() >= deadline {
            let mut stuck = String::new();
            for keyspace in layout.each_partition() {
                let outbox = keyspace.outbox().expect("outbox");
                let summary: redis::Value = redis::cmd("XPENDING")
                    .arg(&outbox)
                    .arg(evhost::relay::GROUP)
                    .query(&mut conn)
                    .unwrap_or(redis::Value::Nil);
                let lease: Option<String> = redis::cmd("GET")
                    .arg(keyspace.lease())
                    .query(&mut conn)
                    .unwrap_or(None);
                stuck.push_str(&format!(
                    "{outbox} held by {lease:?}: pending {summary:?}\n"
                ));
            }
            let relay_lines: String = ["part-a-0.log", "part-b-0.log", "part-c-0.log"]
                .iter()
                .flat_map(|log| {
                    std::fs::read_to_string(workspace.path(log))
                        .unwrap_or_default()
                        .lines()
                        .filter(|line| line.contains("relay") || line.contains("lease"))
                        .map(|line| format!("{log}: {line}\n"))
                        .collect::<Vec<_>>()
                })
                .collect();
            panic!(
                "not done after 180 s: {payments} payments, {pending} pending, {outboxes} in outboxes\n{stuck}{relay_lines}\n{}",
                workspace.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut auctions = HashSet::new();
    for keyspace in layout.each_partition() {
        for (_, fields) in entries(&mut conn, &keyspace.event_stream("PaymentProcessed")) {
            let data = &fields
                .iter()
                .find(|(name, _)| name == "data")
                .expect("data field")
                .1;
            let data: serde_json::Value = serde_json::from_str(data).expect("JSON");
            let auction = data["auction_id"].as_str().expect("auction id").to_string();
            assert!(
                auctions.insert(auction.clone()),
                "auction {auction} paid twice"
            );
        }
    }
    assert_eq!(auctions.len(), PARTITION_AUCTIONS, "every auction paid");
    let letters: Vec<String> = redis::cmd("KEYS")
        .arg("evhost:{p*}:dlq:*")
        .query(&mut conn)
        .expect("KEYS");
    assert!(letters.is_empty(), "no dead letters: {letters:?}");
    let log = std::fs::read_to_string(workspace.path("part-b-0.log")).unwrap_or_default();
    assert!(
        log.contains("lease lost") || log.contains("lost the partition"),
        "the stalled host noticed it lost partitions:\n{}",
        workspace.logs()
    );
    stop(stalled);
    stop(survivor);
}
