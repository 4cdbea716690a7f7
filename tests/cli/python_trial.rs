//! `evhost test --expect` on a Python plugin made by `evhost new --lang python`: the plugin's
//! CI loop without Redis, as with a Rust one (`test_runs_a_plugin_on_events_and_checks_
//! expected_results` in main.rs).
//!
//! The build needs python3 with venv and PyPI (componentize-py); without them it fails, with
//! the reason, and never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{evhost, expectations_of, json_lines, stdout_of};

/// The folder the workspace's test builds share: the componentize-py virtualenv (the
/// integration tests use the same) and a compile cache for these runs.
fn guests_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("wasm-guests")
}

#[test]
fn test_checks_the_expected_results_of_a_python_plugin() {
    let guests = guests_dir();
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("hello-py");
    stdout_of(
        &evhost()
            .args(["new", "hello-py", "--lang", "python", "--dir"])
            .arg(&project)
            .output()
            .expect("run evhost new"),
    );
    let plugin = dir.path().join("hello-py.wasm");
    let built = Command::new("bash")
        .arg(project.join("build.sh"))
        .arg(&plugin)
        .env("VENV", guests.join("venv-componentize-py"))
        .output()
        .expect("run build.sh (needs bash)");
    assert!(
        built.status.success(),
        "the Python build failed (it needs python3 with venv and network access to PyPI):\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"type":"Ping","data":{"message":"one"}}"#,
            "\n",
            r#"{"type":"Ping","data":{"message":"two"}}"#,
            "\n",
            r#"{"type":"Ping","data":"not an object"}"#,
            "\n",
        ),
    )
    .expect("events");
    let cache = guests.join("compile-cache-cli");
    let run = |extra: &[&str]| -> Output {
        evhost()
            .arg("test")
            .arg(&plugin)
            .arg("--events")
            .arg(&events)
            .arg("--json")
            .args(extra)
            .env("EVHOST_CACHE_DIR", &cache)
            .output()
            .expect("run evhost test")
    };
    let results = json_lines(&stdout_of(&run(&[])));
    let outcomes: Vec<&str> = results
        .iter()
        .map(|result| result["outcome"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(outcomes, ["handled", "handled", "rejected"], "{results:?}");
    assert_eq!(results[1]["publishes"][0]["type"], "Pong");
    assert_eq!(results[1]["publishes"][0]["data"]["message"], "two");

    let expect = dir.path().join("expected.jsonl");
    let expected = expectations_of(&results);
    std::fs::write(&expect, expected.join("\n")).expect("write expectations");
    let expect_arg = expect.to_str().expect("utf-8 path");
    let matching = run(&["--expect", expect_arg]);
    assert!(
        matching.status.success(),
        "{}",
        String::from_utf8_lossy(&matching.stderr)
    );
    let mut wrong = expected;
    wrong[0] = r#"{"outcome": "rejected"}"#.to_string();
    std::fs::write(&expect, wrong.join("\n")).expect("write expectations");
    let differing = run(&["--expect", expect_arg]);
    assert_eq!(differing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&differing.stderr);
    assert!(
        stderr.contains(r#"outcome: expected "rejected", got "handled""#)
            && stderr.contains("1 result(s) differ"),
        "{stderr}"
    );
}
