//! A private `redis-server` process: free loopback port, temporary directory, killed on drop.
//!
//! Used by `evhost bench` (which measures against a server of its own) and by the tests (one
//! server per test). Shaped after redis-rs's `redis-test` helper. `cluster.rs` builds a local
//! Redis Cluster of such servers.

mod cluster;

pub use cluster::RedisCluster;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RedisProcessError {
    /// The binary is not installed.
    #[error(
        "redis-server is not installed: install it (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: `brew install redis`)"
    )]
    NotInstalled,
    /// Starting it failed.
    #[error("cannot start redis-server: {0}")]
    Spawn(std::io::Error),
    /// It did not answer `PING` in time.
    #[error("redis-server did not come up; its log:\n{0}")]
    NotReady(String),
    /// The temporary directory could not be created.
    #[error("cannot create a directory for redis-server: {0}")]
    TempDir(std::io::Error),
    /// A local cluster could not be formed.
    #[error("cannot form a Redis Cluster: {0}")]
    Cluster(String),
}

/// A running `redis-server` owned by this process.
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

/// A free loopback port. For a cluster node (`cluster_bus`), one of at most 55535 whose
/// cluster-bus port (the port + 10000) is free too.
fn free_port(cluster_bus: bool) -> Result<u16, RedisProcessError> {
    for _ in 0..200 {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(RedisProcessError::Spawn)?;
        let port = listener
            .local_addr()
            .map_err(RedisProcessError::Spawn)?
            .port();
        if !cluster_bus {
            return Ok(port);
        }
        if port <= 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    Err(RedisProcessError::Spawn(std::io::Error::other(
        "no free loopback port of at most 55535 with its cluster-bus port free",
    )))
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
    // `-NOAUTH`: up, but with a password (`--requirepass`).
    matches!(stream.read(&mut reply), Ok(n) if reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"))
}

/// Starts `redis-server` on `port` with its files in `dir`.
fn spawn(port: u16, dir: &Path, extra: &[String]) -> Result<Child, RedisProcessError> {
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
        Ok(child) => Ok(child),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Err(RedisProcessError::NotInstalled)
        }
        Err(err) => Err(RedisProcessError::Spawn(err)),
    }
}

/// Waits until the server started in `dir` answers on `port`; false if it exited or took
/// over 10 s.
///
/// A `PING` alone is not enough: when two servers race for one free port, the loser exits on
/// its failed bind, and until then the winner answers its `PING` too. Only the server's own
/// log, in its own directory, says that it is the one listening.
fn wait_up(child: &mut Child, port: u16, dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = dir.join("redis.log");
    while Instant::now() < deadline {
        let ready = std::fs::read_to_string(&log)
            .is_ok_and(|text| text.contains("Ready to accept connections"));
        if ready && answers_ping(port) {
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
    /// Starts a fresh server with extra configuration (e.g.
    /// `["--appendonly", "yes", "--appendfsync", "always"]`) and waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// When `redis-server` is missing or does not come up within 10 s (the error includes the
    /// server's log).
    pub fn start_with(extra: &[&str]) -> Result<Self, RedisProcessError> {
        Self::start_where(extra, false)
    }

    /// Starts a server on a port fit for a cluster node (see [`free_port`]).
    fn start_where(extra: &[&str], cluster_bus: bool) -> Result<Self, RedisProcessError> {
        let extra: Vec<String> = extra.iter().map(|arg| arg.to_string()).collect();
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("evhost-redis-")
                .tempdir()
                .map_err(RedisProcessError::TempDir)?;
            let port = free_port(cluster_bus)?;
            let mut child = spawn(port, dir.path(), &extra)?;
            if wait_up(&mut child, port, dir.path()) {
                return Ok(RedisServer {
                    child,
                    port,
                    extra,
                    dir,
                });
            }
            // Exited (probably lost the port race) or hung: try another port.
            last_log = std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
        }
        Err(RedisProcessError::NotReady(last_log))
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
    /// # Errors
    ///
    /// When it does not come back.
    pub fn crash_and_restart(&mut self) -> Result<(), RedisProcessError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..50 {
            // A fresh log, so that only the new process's line says it is ready.
            let _ = std::fs::remove_file(self.dir.path().join("redis.log"));
            let mut child = spawn(self.port, self.dir.path(), &self.extra)?;
            if wait_up(&mut child, self.port, self.dir.path()) {
                self.child = child;
                return Ok(());
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        Err(RedisProcessError::NotReady(log))
    }

    /// Kills the server with SIGKILL (a crash), leaving it down until [`RedisServer::restart`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a killed server again on its port and directory (reloading its append-only
    /// file); a running one is crashed first.
    ///
    /// # Errors
    ///
    /// When it does not come back.
    pub fn restart(&mut self) -> Result<(), RedisProcessError> {
        self.crash_and_restart()
    }

    /// Stops the server process (SIGSTOP): it neither answers nor closes its connections,
    /// like a node cut off by the network, until [`RedisServer::resume`].
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent.
    pub fn pause(&self) -> Result<(), RedisProcessError> {
        self.signal("-STOP")
    }

    /// Lets a paused server go on (SIGCONT).
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent.
    pub fn resume(&self) -> Result<(), RedisProcessError> {
        self.signal("-CONT")
    }

    /// Sends `signal` to the server process (by its pid, with `kill`).
    fn signal(&self, signal: &str) -> Result<(), RedisProcessError> {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .map_err(RedisProcessError::Spawn)?;
        if status.success() {
            Ok(())
        } else {
            Err(RedisProcessError::Spawn(std::io::Error::other(format!(
                "kill {signal} {} failed",
                self.child.id()
            ))))
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server process in bytes, when the OS tells (Linux).
    pub fn rss_bytes(&self) -> Option<u64> {
        crate::process_rss_bytes(self.child.id())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
