//! A private `redis-server` per test: free loopback port, temporary directory, killed on drop.
//!
//! Wraps [`evhost::redis_process::RedisServer`]: when `redis-server` is not installed, the
//! test fails with a message saying how to install it; it never skips.

use std::ops::{Deref, DerefMut};

/// A running `redis-server` owned by the test.
#[derive(Debug)]
pub struct RedisServer(evhost::redis_process::RedisServer);

impl RedisServer {
    /// Starts a fresh server.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing or does not come up (with its log).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a fresh server with extra configuration.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_with(extra: &[&str]) -> Self {
        match evhost::redis_process::RedisServer::start_with(extra) {
            Ok(server) => RedisServer(server),
            Err(err) => panic!("{err}; these tests need a real redis-server"),
        }
    }

    /// Crashes the server (SIGKILL) and restarts it on the same port and directory.
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn crash_and_restart(&mut self) {
        if let Err(err) = self.0.crash_and_restart() {
            panic!("{err}");
        }
    }
}

impl Deref for RedisServer {
    type Target = evhost::redis_process::RedisServer;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for RedisServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A local Redis Cluster owned by the test (see [`evhost::redis_process::RedisCluster`]).
#[derive(Debug)]
pub struct RedisCluster(evhost::redis_process::RedisCluster);

impl RedisCluster {
    /// Starts 3 primaries with a replica each (append-only file on), with extra configuration.
    ///
    /// # Panics
    ///
    /// When `redis-server` or `redis-cli` is missing or the cluster does not form (with why).
    pub fn start_with(extra: &[&str]) -> Self {
        match evhost::redis_process::RedisCluster::start(3, 1, extra) {
            Ok(cluster) => RedisCluster(cluster),
            Err(err) => panic!("{err}; these tests need a real redis-server and redis-cli"),
        }
    }

    /// Starts 3 primaries with a replica each.
    ///
    /// # Panics
    ///
    /// As [`RedisCluster::start_with`].
    pub fn start() -> Self {
        Self::start_with(&[])
    }
}

impl Deref for RedisCluster {
    type Target = evhost::redis_process::RedisCluster;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for RedisCluster {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
