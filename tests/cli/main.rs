//! The `evhost` binary, run as a user would, one module per area; this file holds what they
//! share: running `evhost`, reading its output and log, and a host started with `evhost run`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../src/redis_server.rs"]
mod redis_server;

mod c_plugin;
mod cache;
mod cluster;
mod console;
mod dev;
mod events;
mod json;
mod operating;
mod plugin_tools;
mod python_trial;
mod redelivery;
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
