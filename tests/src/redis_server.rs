//! A private `redis-server` per test: free loopback port, temporary directory, killed on drop.
//!
//! Shaped after redis-rs's `redis-test` helper. When `redis-server` is not installed the test
//! fails with a message saying how to install it; it never skips.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` owned by the test.
pub struct RedisServer {
    /// The server process; killed (by its pid) on drop.
    child: Child,
    /// The loopback port it listens on.
    port: u16,
    /// Its working directory and log file, removed on drop.
    _dir: tempfile::TempDir,
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

impl RedisServer {
    /// Starts a fresh server and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing or does not come up within 10 s (the panic message
    /// includes the server's log).
    pub fn start() -> Self {
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("evhost-redis-")
                .tempdir()
                .expect("create a temporary directory");
            let port = free_port();
            let log = dir.path().join("redis.log");
            let child = Command::new("redis-server")
                .arg("--port")
                .arg(port.to_string())
                .arg("--bind")
                .arg("127.0.0.1")
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--protected-mode",
                    "yes",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                    "redis-server is not installed, and these tests need a real one: \
                     install it (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: \
                     `brew install redis`) and run the tests again"
                ),
                Err(err) => panic!("cannot start redis-server: {err}"),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if answers_ping(port) {
                    return RedisServer {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: probably lost the port race; try another port
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
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
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
