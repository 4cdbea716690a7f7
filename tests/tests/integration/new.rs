//! `evhost new`: a project scaffolded in each language builds with its one `build.sh`, loads
//! into a host unchanged and handles its test event (`event.json`) on a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use evhost::broker::Broker;
use evhost::plugin::PluginSettings;
use evhost_tests::script_build::{self, Built, Toolchain};
use evhost_tests::{
    PluginSpec, RedisServer, TestHost, events_of, fast_options, redis_broker, wait_for,
};
use serde_json::Value;

/// The templates of `evhost new`, a module of the binary, compiled here too (its unit tests
/// run with the binary's).
#[allow(dead_code)]
#[path = "../../../host/src/scaffold.rs"]
mod scaffold;

use scaffold::Language;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Scaffolds `name` in `language` into a temporary directory and builds it with its
/// `build.sh`; returns the component and the test event's data.
///
/// (C projects need the `evhost` binary to build: `tests/cli/c_plugin.rs` tests them.)
async fn scaffold_and_build(
    name: &'static str,
    language: Language,
    toolchain: Toolchain,
) -> (Built, Vec<u8>) {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("temp dir");
        let project = dir.path().join(name);
        scaffold::create(name, language, &project).expect("scaffold");
        let built = script_build::build_project(name, &project, toolchain, &[]);
        let event = std::fs::read(project.join("event.json")).expect("event.json");
        (built, event)
    })
    .await
    .expect("the build task did not panic")
}

/// Loads the component as `plugins/<name>.wasm` would be (no sidecar), sends it the test event
/// and checks the `Pong` and the key-value counter.
async fn handles_its_test_event(name: &str, built: &Built, event: &[u8]) {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let started = Instant::now();
    let host = TestHost::start(
        broker.clone(),
        fast_options(&format!("{name}-host")),
        vec![PluginSpec {
            origin: format!("test:{name}.wasm"),
            bytes: built.bytes(),
            settings: PluginSettings::default(),
        }],
    )
    .await;
    eprintln!(
        "{name}: loaded in {:.1} s ({} bytes)",
        started.elapsed().as_secs_f64(),
        built.bytes().len()
    );
    let ping = evhost::Event::new("Ping", "test", event.to_vec());
    broker
        .add(
            &ping.stream_in(evhost::Keyspace::single()),
            &ping.to_fields(),
        )
        .await
        .expect("XADD");
    wait_for(&format!("the Pong of {name}"), TIMEOUT, || async {
        !events_of(broker.as_ref(), "Pong").await.is_empty()
    })
    .await;
    let pong = events_of(broker.as_ref(), "Pong").await.remove(0);
    assert_eq!(pong.source, name);
    assert_eq!(pong.extension("causationid"), Some(ping.id.as_str()));
    let data: Value = serde_json::from_slice(&pong.data).expect("JSON");
    let sent: Value = serde_json::from_slice(event).expect("event.json is JSON");
    assert_eq!(data["from"], name);
    assert_eq!(data["message"], sent["message"]);
    assert_eq!(data["count"], 1);
    let counter = broker
        .get(&evhost_tests::KEYS.kv_key(name, "pings"))
        .await
        .expect("GET");
    assert_eq!(counter.as_deref(), Some(&b"1"[..]));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_scaffold_builds_loads_and_handles_its_event() {
    let (built, event) = scaffold_and_build("hello-rust", Language::Rust, Toolchain::Rust).await;
    handles_its_test_event("hello-rust", &built, &event).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_scaffold_builds_loads_and_handles_its_event() {
    let (built, event) =
        scaffold_and_build("hello-python", Language::Python, Toolchain::Python).await;
    handles_its_test_event("hello-python", &built, &event).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_scaffold_builds_loads_and_handles_its_event() {
    let (built, event) = scaffold_and_build("hello-js", Language::Js, Toolchain::JavaScript).await;
    handles_its_test_event("hello-js", &built, &event).await;
}

/// Every file of the repository's `wit/` folder is copied, unchanged, into each project.
#[test]
fn scaffolds_carry_the_whole_wit_world() {
    fn wit_files(dir: &Path, root: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("list wit/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                wit_files(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    let root = script_build::workspace_root();
    let mut files = Vec::new();
    wit_files(&root.join("wit"), &root, &mut files);
    assert!(files.len() >= 6, "{files:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    for language in [Language::Rust, Language::Python, Language::Js, Language::C] {
        let project = dir.path().join(format!("{language:?}").to_lowercase());
        scaffold::create("complete", language, &project).expect("scaffold");
        for file in &files {
            assert_eq!(
                std::fs::read_to_string(project.join(file)).ok(),
                std::fs::read_to_string(root.join(file)).ok(),
                "{language:?}: {}",
                file.display()
            );
        }
    }
}
