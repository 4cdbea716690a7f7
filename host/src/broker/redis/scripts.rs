//! The Lua scripts the Redis broker runs: each applies what must happen at once (a commit, a
//! move between partitions, a lease) in one step, with every key it touches in one slot.

use redis::Script;

/// Applies a [`Commit`] atomically; the layout of `KEYS` and `ARGV` is explained in the script.
const COMMIT_SCRIPT: &str = include_str!("../commit.lua");
/// Takes or renews lease `KEYS[1]` for owner `ARGV[1]` for `ARGV[2]` ms; returns 1 when the
/// owner holds it.
const ACQUIRE_LEASE_SCRIPT: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";
/// Deletes lease `KEYS[1]` if owner `ARGV[1]` holds it; returns 1 when it did.
const RELEASE_LEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";
/// Appends `ARGV[2..]` (field/value pairs) to stream `KEYS[1]` unless mark `KEYS[2]` exists,
/// creating the mark with a time to live of `ARGV[1]` ms; returns 1 when it appended.
const APPEND_ONCE_SCRIPT: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
  return 1
end
return 0
";
/// Scores member `ARGV[1]` of roll call `KEYS[1]` with the server's time plus `ARGV[2]` ms,
/// removes the members whose score passed, and returns how many remain; the roll call itself
/// expires with its last member.
const HEARTBEAT_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], latest[2])
return redis.call('ZCARD', KEYS[1])
";

/// The scripts, loaded by redis-rs on first use (and again after a `NOSCRIPT`).
pub(super) struct Scripts {
    /// [`COMMIT_SCRIPT`].
    pub commit: Script,
    /// [`APPEND_ONCE_SCRIPT`].
    pub append_once: Script,
    /// [`ACQUIRE_LEASE_SCRIPT`].
    pub acquire_lease: Script,
    /// [`RELEASE_LEASE_SCRIPT`].
    pub release_lease: Script,
    /// [`HEARTBEAT_SCRIPT`].
    pub heartbeat: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            commit: Script::new(COMMIT_SCRIPT),
            append_once: Script::new(APPEND_ONCE_SCRIPT),
            acquire_lease: Script::new(ACQUIRE_LEASE_SCRIPT),
            release_lease: Script::new(RELEASE_LEASE_SCRIPT),
            heartbeat: Script::new(HEARTBEAT_SCRIPT),
        }
    }
}
