//! A private `redis-server` per test: free loopback port, temporary directory, killed on drop.
//!
//! Shaped after redis-rs's `redis-test` helper. When `redis-server` is not installed the test
//! fails with a message saying how to install it; it never skips.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` owned by the test.
pub struct RedisServer {
    /// The server process; killed (by its pid) on drop.
    child: Child,
    /// The loopback port it listens on.
    port: u16,
    /// Extra configuration arguments, kept for restarts.
    extra: Vec<String>,
    /// Its working directory and log file, removed on drop.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .finish()
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("local address").port()
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 16];
    matches!(stream.read(&mut reply), Ok(n) if reply[..n].starts_with(b"+PONG"))
}

/// Starts `redis-server` on `port` with its files in `dir`.
fn spawn(port: u16, dir: &Path, extra: &[String]) -> Child {
    let child = Command::new("redis-server")
        .arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--protected-mode", "yes"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not installed, and these tests need a real one: \
             install it (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: \
             `brew install redis`) and run the tests again"
        ),
        Err(err) => panic!("cannot start redis-server: {err}"),
    }
}

/// Waits until the server on `port` answers; false if it exited or took over 10 s.
fn wait_up(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if answers_ping(port) {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl RedisServer {
    /// Starts a fresh server and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing or does not come up within 10 s (the panic message
    /// includes the server's log).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a fresh server with extra configuration, e.g.
    /// `["--appendonly", "yes", "--appendfsync", "always"]`.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|arg| arg.to_string()).collect();
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("evhost-redis-")
                .tempdir()
                .expect("create a temporary directory");
            let port = free_port();
            let mut child = spawn(port, dir.path(), &extra);
            if wait_up(&mut child, port) {
                return RedisServer {
                    child,
                    port,
                    extra,
                    dir,
                };
            }
            // Exited (probably lost the port race) or hung: try another port.
            last_log = std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start after 5 attempts; its last log:\n{last_log}");
    }

    /// The server's URL, `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL (a crash) and starts it again on the same port and
    /// directory, so that it reloads its append-only file if it has one.
    ///
    /// # Panics
    ///
    /// When it does not come back within 10 s.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..50 {
            let mut child = spawn(self.port, self.dir.path(), &self.extra);
            if wait_up(&mut child, self.port) {
                self.child = child;
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        panic!(
            "redis-server did not restart on port {}; its log:\n{log}",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
