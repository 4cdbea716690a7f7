//! Test guest for the host's integration tests: does what each event's data asks.
//!
//! `describe()` reads the config: `name` (default `probe`), `version` (default `1`) and
//! `subscriptions` (comma-separated, default `Probe*`), so one component can be loaded as
//! several plugins.
//!
//! `handle()` first records the handling — key-value `handled:<event id>` set to the previous
//! count plus one (a decimal number), and a journal record `{event_id, entry_id, attempt,
//! stream, plugin, version}` — then parses the data as a JSON object (anything else is
//! rejected) and acts on its `action` field:
//!
//! | `action` | outcome |
//! |---|---|
//! | `"ok"` or absent | success |
//! | `"fail"` | retry error `asked to fail` (after `delay_ms` if given) |
//! | `"fail-until"`, `"attempts": n` | retry error while `attempt < n`, then success |
//! | `"reject"` | reject error |
//! | `"trap"` | panic |
//! | `"sandbox"` | tries the filesystem, environment, arguments and a TCP connection to `127.0.0.1:<port>` (`port` from the data, default 6379), and publishes `ProbeReport` with one `"denied: <error>"` or `"allowed: <detail>"` per try |
//! | `"publish"` | publishes an event of type `publish_type` with data `publish_data` |
//! | `"loop"` | loops forever (the host's deadline must stop it) |
//! | `"alloc"` | allocates memory until it runs out (a memory bomb) |
//! | `"recurse"` | recurses until the stack overflows |
//! | `"huge-publish"` | publishes `ProbeHuge` with `mib` MiB of data (default 4) and reports the host's answer by publishing `ProbeHugeResult` |
//! | `"print"` | writes `text` to stdout and stderr |
//! | `"configured"` | does what the config value `action` says (`ok`, `reject`, `fail`: a retry error, or `trap`; default `ok`) |
//! | `"echo"` | publishes `ProbeEchoed` with data `{"n": n}` (`n` from the data), or `{"n": n, "tampered": true}` when the config value `tamper_every` = k > 0 divides `n`, sets the key `echo:<n>` to `seen` and adds 1 to the counter `echoes_total`; then does what `"configured"` does |
//! | `"effects"` | buffers many effects, ignoring every error, then logs (`wasi:logging`, warn) `effects refused: <count>, first: <message>` and succeeds: `publishes` events of `publish_bytes` bytes of data to `publish_types` types (`ProbeFx0`...), `sets` key-value values `fx:<i>` (padded to `key_bytes` bytes) of `set_bytes` bytes, `deletes` of the keys `fx:<i>`, `journal` records of `journal_bytes` bytes (each count defaults to 0, each size to 1) |
//! | `"series"` | adds 1 to the counter `probe_series` with the label `id` = 0, 1, ... `count` - 1 (a fresh series each), ignoring errors, then logs (warn) `series refused: <count>, first: <message>` and succeeds |
//! | `"log"` | logs `text` through `wasi:logging` at `level` (`trace` ... `critical`, default `info`) with the context `context`, `repeat` times (default 1) |
//!
//! The key-value actions (`count`, `increment`, `cas`, `get-many`) are in `state.rs`.
//!
//! With the config value `panic_in_describe = "true"`, `describe()` panics; with
//! `hang_in_describe = "true"`, it loops forever (the host's describe deadline must stop it).
//!
//! Anything else is rejected. The records of a failed call are discarded by the host.

mod state;

use evhost_sdk::prelude::*;
use serde_json::{Map, Value};
use state::StateAction;

/// Name when the config sets none.
const DEFAULT_NAME: &str = "probe";
/// The version when the config has none: `1`, or the value of `EVHOST_PROBE_VERSION` at build
/// time (the tests build a second copy with `2` to swap between two different components).
const DEFAULT_VERSION: &str = match option_env!("EVHOST_PROBE_VERSION") {
    Some(version) => version,
    None => "1",
};
/// Subscriptions when the config sets none.
const DEFAULT_SUBSCRIPTIONS: &str = "Probe*";
/// The port the sandbox probe connects to when the event names none (Redis's default).
const DEFAULT_PROBE_PORT: u16 = 6379;

/// What an event asks the probe to do.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    /// Succeed.
    Ok,
    /// Retry error, with an optional delay.
    Fail { delay: Option<Duration> },
    /// Retry error until the delivery attempt reaches `attempts`.
    FailUntil { attempts: u32 },
    /// Reject error.
    Reject,
    /// Panic.
    Trap,
    /// Probe the sandbox (connecting to `127.0.0.1:<port>`) and publish `ProbeReport`.
    Sandbox { port: u16 },
    /// Publish `data` as an event of type `event_type`.
    Publish { event_type: String, data: Value },
    /// Loop forever.
    Loop,
    /// Allocate until memory runs out.
    Alloc,
    /// Recurse until the stack overflows.
    Recurse,
    /// Publish `mib` MiB and report what the host said.
    HugePublish { mib: usize },
    /// Write `text` to stdout and stderr.
    Print { text: String },
    /// Do what the config value `action` says.
    Configured,
    /// Publish `ProbeEchoed` (tampered with when the config says so), then do as `Configured`.
    Echo { n: u64 },
    /// Buffer many effects, ignoring errors, and log what was refused.
    Effects(EffectCounts),
    /// Start `count` metric series, ignoring errors, and log what was refused.
    Series { count: u64 },
    /// A key-value action (see `state.rs`).
    State(StateAction),
    /// Log through `wasi:logging`.
    Log {
        level: log::Level,
        context: String,
        text: String,
        repeat: u64,
    },
}

/// What the `effects` action buffers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct EffectCounts {
    publishes: u64,
    publish_bytes: usize,
    publish_types: u64,
    sets: u64,
    set_bytes: usize,
    key_bytes: usize,
    deletes: u64,
    journal: u64,
    journal_bytes: usize,
}

impl EffectCounts {
    fn parse(data: &Map<String, Value>) -> Self {
        let count = |name: &str| data.get(name).and_then(Value::as_u64).unwrap_or(0);
        let size = |name: &str| {
            data.get(name)
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(1)
        };
        EffectCounts {
            publishes: count("publishes"),
            publish_bytes: size("publish_bytes"),
            publish_types: count("publish_types").max(1),
            sets: count("sets"),
            set_bytes: size("set_bytes"),
            key_bytes: data
                .get("key_bytes")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0),
            deletes: count("deletes"),
            journal: count("journal"),
            journal_bytes: size("journal_bytes"),
        }
    }

    /// Does it all; returns the number of refused effects and the first refusal.
    fn run(&self) -> (u64, String) {
        let mut refused = 0;
        let mut first = String::new();
        let mut note = |result: Result<()>| {
            if let Err(err) = result {
                refused += 1;
                if first.is_empty() {
                    first = err.message().to_owned();
                }
            }
        };
        let key = |i: u64| {
            let mut key = format!("fx:{i}");
            while key.len() < self.key_bytes {
                key.push('k');
            }
            key
        };
        let data = "d".repeat(self.publish_bytes);
        for i in 0..self.publishes {
            let event_type = format!("ProbeFx{}", i % self.publish_types);
            note(publish_raw(&event_type, data.as_bytes(), "text/plain").map(|_| ()));
        }
        let value = "v".repeat(self.set_bytes);
        for i in 0..self.sets {
            note(kv::set(key(i), &value));
        }
        for i in 0..self.deletes {
            note(kv::delete(key(i)));
        }
        let record = "j".repeat(self.journal_bytes);
        for _ in 0..self.journal {
            note(journal::append(&[("fx", &record)]));
        }
        (refused, first)
    }
}

fn parse_level(level: Option<&str>) -> Result<log::Level> {
    Ok(match level.unwrap_or("info") {
        "trace" => log::Level::Trace,
        "debug" => log::Level::Debug,
        "info" => log::Level::Info,
        "warn" => log::Level::Warn,
        "error" => log::Level::Error,
        "critical" => log::Level::Critical,
        other => return Err(Error::reject(format!("unknown level {other:?}"))),
    })
}

/// Reads the action from the event's data object.
fn parse_action(data: &Map<String, Value>) -> Result<Action> {
    let action = match data.get("action") {
        None | Some(Value::Null) => "ok",
        Some(Value::String(action)) => action.as_str(),
        Some(other) => {
            return Err(Error::reject(format!(
                "action must be a string, got {other}"
            )));
        }
    };
    Ok(match action {
        "ok" => Action::Ok,
        "fail" => Action::Fail {
            delay: data
                .get("delay_ms")
                .and_then(Value::as_u64)
                .map(Duration::from_millis),
        },
        "fail-until" => {
            let attempts = data
                .get("attempts")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| Error::reject("fail-until needs a numeric `attempts`"))?;
            Action::FailUntil { attempts }
        }
        "reject" => Action::Reject,
        "trap" => Action::Trap,
        "loop" => Action::Loop,
        "alloc" => Action::Alloc,
        "recurse" => Action::Recurse,
        "huge-publish" => Action::HugePublish {
            mib: data
                .get("mib")
                .and_then(Value::as_u64)
                .and_then(|mib| usize::try_from(mib).ok())
                .unwrap_or(4),
        },
        "print" => Action::Print {
            text: data
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("hello from the probe")
                .to_owned(),
        },
        "configured" => Action::Configured,
        "echo" => Action::Echo {
            n: data.get("n").and_then(Value::as_u64).unwrap_or(0),
        },
        "effects" => Action::Effects(EffectCounts::parse(data)),
        "series" => Action::Series {
            count: data.get("count").and_then(Value::as_u64).unwrap_or(1),
        },
        "log" => Action::Log {
            level: parse_level(data.get("level").and_then(Value::as_str))?,
            context: data
                .get("context")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            text: data
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("hello from the probe")
                .to_owned(),
            repeat: data.get("repeat").and_then(Value::as_u64).unwrap_or(1),
        },
        "sandbox" => Action::Sandbox {
            port: match data.get("port") {
                None | Some(Value::Null) => DEFAULT_PROBE_PORT,
                Some(port) => port
                    .as_u64()
                    .and_then(|port| u16::try_from(port).ok())
                    .ok_or_else(|| Error::reject(format!("port must be a TCP port, got {port}")))?,
            },
        },
        "publish" => Action::Publish {
            event_type: data
                .get("publish_type")
                .and_then(Value::as_str)
                .filter(|event_type| !event_type.is_empty())
                .ok_or_else(|| Error::reject("publish needs a string `publish_type`"))?
                .to_owned(),
            data: data.get("publish_data").cloned().unwrap_or(Value::Null),
        },
        other => match StateAction::parse(other, data) {
            Some(state) => Action::State(state),
            None => return Err(Error::reject(format!("unknown action {other:?}"))),
        },
    })
}

/// The configured name, version and subscriptions.
fn identity() -> (String, String) {
    let name = config::get("name").unwrap_or_else(|| DEFAULT_NAME.to_owned());
    let version = config::get("version").unwrap_or_else(|| DEFAULT_VERSION.to_owned());
    (name, version)
}

/// Splits a comma-separated subscription list, dropping blanks.
fn parse_subscriptions(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|pattern| !pattern.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Counts the handling in the key-value store and journals it.
fn record_handling(event: &Event, delivery: &Delivery) -> Result<()> {
    let key = format!("handled:{}", event.id());
    let previous = kv::get(&key)?
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(0);
    kv::set(&key, (previous + 1).to_string())?;

    let (name, version) = identity();
    let attempt = delivery.attempt().to_string();
    journal::append(&[
        ("event_id", event.id()),
        ("entry_id", delivery.entry_id()),
        ("attempt", &attempt),
        ("stream", delivery.stream()),
        ("plugin", &name),
        ("version", &version),
    ])
}

/// `"allowed: <detail>"` or `"denied: <error>"`.
fn verdict<T, E: std::fmt::Display>(
    outcome: std::result::Result<T, E>,
    detail: impl FnOnce(T) -> String,
) -> Value {
    match outcome {
        Ok(value) => Value::String(format!("allowed: {}", detail(value))),
        Err(err) => Value::String(format!("denied: {err}")),
    }
}

/// `"allowed: <n> <what>"` for a non-zero count, `"denied: no <what>"` for zero.
fn count_verdict(count: usize, what: &str) -> Value {
    if count == 0 {
        Value::String(format!("denied: no {what}"))
    } else {
        Value::String(format!("allowed: {count} {what}"))
    }
}

/// Tries what a sandboxed plugin must not be able to do; the TCP connection goes to
/// `127.0.0.1:<port>`.
fn probe_sandbox(port: u16) -> Map<String, Value> {
    let mut report = Map::new();
    report.insert(
        "read_file".into(),
        verdict(std::fs::read_to_string("/etc/passwd"), |text| {
            format!("{} bytes of /etc/passwd", text.len())
        }),
    );
    report.insert(
        "read_dir".into(),
        verdict(std::fs::read_dir("/"), |entries| {
            format!("{} entries in /", entries.count())
        }),
    );
    report.insert(
        "write_file".into(),
        verdict(std::fs::write("/tmp/evhost-probe", "x"), |()| {
            "wrote /tmp/evhost-probe".to_owned()
        }),
    );
    report.insert(
        "env_home".into(),
        verdict(std::env::var("HOME"), |home| format!("HOME={home}")),
    );
    report.insert(
        "env_count".into(),
        count_verdict(std::env::vars().count(), "environment variables"),
    );
    report.insert(
        "args_count".into(),
        count_verdict(std::env::args().count(), "arguments"),
    );
    report.insert(
        "tcp_connect".into(),
        verdict(
            std::net::TcpStream::connect(("127.0.0.1", port)),
            |stream| match stream.peer_addr() {
                Ok(peer) => format!("connected to {peer}"),
                Err(_) => format!("connected to 127.0.0.1:{port}"),
            },
        ),
    );
    report
}

/// The test probe plugin.
pub struct Probe;

impl Plugin for Probe {
    fn describe() -> PluginInfo {
        if config::get("panic_in_describe").as_deref() == Some("true") {
            panic!("asked to panic in describe()");
        }
        if config::get("hang_in_describe").as_deref() == Some("true") {
            loop {
                std::hint::black_box(0u64);
            }
        }
        let (name, version) = identity();
        let subscriptions =
            config::get("subscriptions").unwrap_or_else(|| DEFAULT_SUBSCRIPTIONS.to_owned());
        PluginInfo::new(name, version).subscribe_all(parse_subscriptions(&subscriptions))
    }

    fn handle(event: Event, delivery: Delivery) -> Result<()> {
        record_handling(&event, &delivery)?;
        let data: Map<String, Value> = event.data_json()?;
        match parse_action(&data)? {
            Action::Ok => Ok(()),
            Action::Fail { delay } => {
                let err = Error::retry("asked to fail");
                Err(match delay {
                    Some(delay) => err.after(delay),
                    None => err,
                })
            }
            Action::FailUntil { attempts } if delivery.attempt() < attempts => {
                Err(Error::retry(format!(
                    "asked to fail until attempt {attempts} (this is attempt {})",
                    delivery.attempt()
                )))
            }
            Action::FailUntil { .. } => Ok(()),
            Action::Reject => Err(Error::reject("asked to reject")),
            Action::Trap => panic!("asked to trap (event {})", event.id()),
            Action::Sandbox { port } => {
                publish("ProbeReport", &probe_sandbox(port))?;
                Ok(())
            }
            Action::Publish { event_type, data } => {
                publish(&event_type, &data)?;
                Ok(())
            }
            Action::Loop => loop {
                std::hint::black_box(delivery.attempt());
            },
            Action::Alloc => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1024 * 1024]);
                    std::hint::black_box(&hoard);
                }
            }
            Action::Recurse => {
                std::hint::black_box(recurse(u64::from(delivery.attempt())));
                Ok(())
            }
            Action::HugePublish { mib } => {
                let big = "x".repeat(mib.saturating_mul(1024 * 1024));
                let answer = match publish("ProbeHuge", &big) {
                    Ok(id) => format!("published {id}"),
                    Err(err) => format!("refused: {}", err.message()),
                };
                publish("ProbeHugeResult", &serde_json::json!({ "answer": answer }))?;
                Ok(())
            }
            Action::Print { text } => {
                println!("{text}");
                eprintln!("{text} (stderr)");
                Ok(())
            }
            Action::Effects(counts) => {
                let (refused, first) = counts.run();
                log::warn(format!("effects refused: {refused}, first: {first}"));
                Ok(())
            }
            Action::Log {
                level,
                context,
                text,
                repeat,
            } => {
                log::set_context(context);
                for _ in 0..repeat {
                    log::log(level, &text);
                }
                Ok(())
            }
            Action::State(state) => state.run(&event),
            Action::Series { count } => {
                let mut refused = 0;
                let mut first = String::new();
                for id in 0..count {
                    if let Err(err) =
                        metrics::counter_add("probe_series", 1.0, &[("id", &id.to_string())])
                    {
                        refused += 1;
                        if first.is_empty() {
                            first = err.message().to_owned();
                        }
                    }
                }
                log::warn(format!("series refused: {refused}, first: {first}"));
                Ok(())
            }
            Action::Configured => configured(&event),
            Action::Echo { n } => {
                let tampered = config::get("tamper_every")
                    .and_then(|every| every.parse::<u64>().ok())
                    .is_some_and(|every| every > 0 && n % every == 0);
                let data = if tampered {
                    serde_json::json!({ "n": n, "tampered": true })
                } else {
                    serde_json::json!({ "n": n })
                };
                publish("ProbeEchoed", &data)?;
                kv::set(format!("echo:{n}"), "seen")?;
                // Counted once per event by the host, whoever else sees it.
                let _ = metrics::counter_add("echoes_total", 1.0, &[]);
                configured(&event)
            }
        }
    }
}

/// What the config value `action` says.
fn configured(event: &Event) -> Result<()> {
    match config::get("action").as_deref() {
        Some("reject") => Err(Error::reject("the config says reject")),
        Some("fail") => Err(Error::retry("the config says fail")),
        Some("trap") => panic!("the config says trap (event {})", event.id()),
        _ => Ok(()),
    }
}

/// Recurses without end (the result is never produced).
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(frame[0].wrapping_add(1)).wrapping_add(frame[63])
}

evhost_sdk::export_plugin!(Probe);

#[cfg(test)]
mod tests {
    use super::*;

    fn action(json: &str) -> Result<Action> {
        let data: Map<String, Value> =
            serde_json::from_str(json).expect("test data is a JSON object");
        parse_action(&data)
    }

    /// Every action parses; missing parameters and unknown actions are rejected.
    #[test]
    fn actions() {
        assert_eq!(action("{}"), Ok(Action::Ok));
        assert_eq!(
            action(r#"{"action": "fail"}"#),
            Ok(Action::Fail { delay: None })
        );
        assert_eq!(
            action(r#"{"action": "fail", "delay_ms": 250}"#),
            Ok(Action::Fail {
                delay: Some(Duration::from_millis(250))
            })
        );
        assert_eq!(
            action(r#"{"action": "fail-until", "attempts": 3}"#),
            Ok(Action::FailUntil { attempts: 3 })
        );
        assert_eq!(action(r#"{"action": "trap"}"#), Ok(Action::Trap));
        assert_eq!(
            action(r#"{"action": "sandbox"}"#),
            Ok(Action::Sandbox { port: 6379 })
        );
        assert_eq!(
            action(r#"{"action": "sandbox", "port": 7001}"#),
            Ok(Action::Sandbox { port: 7001 })
        );
        assert_eq!(
            action(
                r#"{"action": "publish", "publish_type": "ProbeEcho", "publish_data": {"n": 1}}"#
            ),
            Ok(Action::Publish {
                event_type: "ProbeEcho".into(),
                data: serde_json::json!({"n": 1})
            })
        );
        for bad in [
            r#"{"action": "fail-until"}"#,
            r#"{"action": "publish"}"#,
            r#"{"action": "dance"}"#,
            r#"{"action": 1}"#,
            r#"{"action": "sandbox", "port": 70000}"#,
        ] {
            assert!(action(bad).is_err_and(|err| err.is_reject()), "{bad}");
        }
    }

    /// Subscriptions are comma-separated, with blanks dropped.
    #[test]
    fn subscriptions() {
        assert_eq!(parse_subscriptions("Probe*"), ["Probe*"]);
        assert_eq!(parse_subscriptions(" A, B* ,,"), ["A", "B*"]);
    }

    /// Verdicts say allowed or denied.
    #[test]
    fn verdicts() {
        assert_eq!(
            verdict(Ok::<_, String>(3), |n| format!("{n} things")),
            "allowed: 3 things"
        );
        assert_eq!(
            verdict(Err::<(), _>("nope"), |()| String::new()),
            "denied: nope"
        );
        assert_eq!(count_verdict(0, "arguments"), "denied: no arguments");
        assert_eq!(count_verdict(2, "arguments"), "allowed: 2 arguments");
    }
}
