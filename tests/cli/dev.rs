//! `evhost dev` on projects made by `evhost new`: it builds the project, runs it on the
//! embedded broker and sends `event.json`, whose `Pong` it prints; a saved change of the
//! handler is built, swapped in and sent again, and the new version's publish is printed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::{evhost, lines_of, stdout_of, stop_with_sigterm, wait_for_line};

/// Scaffolds `name` in `lang`, runs `evhost dev` on it (with `env`), waits for the `Pong`,
/// then replaces `from` by `to` in `handler` (relative to the project) and waits for the
/// swapped version's `Pang`, which finds the state of the first.
fn edit_and_see_the_swap(
    name: &str,
    lang: &str,
    handler: &str,
    (from, to): (&str, &str),
    env: &[(&str, PathBuf)],
    first_build: Duration,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join(name);
    stdout_of(
        &evhost()
            .args(["new", name, "--lang", lang, "--dir"])
            .arg(&project)
            .output()
            .expect("run evhost new"),
    );
    let mut command = evhost();
    command
        .arg("dev")
        .arg(&project)
        .arg("--send")
        .arg(project.join("event.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn evhost dev");
    let lines = lines_of(child.stdout.take().expect("stdout"));
    let mut log = String::new();
    // The handlers' output and dev's own lines come from two tasks, in either order: a line
    // printed before the one waited for is found in the log.
    let mut wait = |needle: &str, timeout: Duration| {
        if let Some(line) = log.lines().find(|line| line.contains(needle)) {
            return line.to_string();
        }
        wait_for_line(&lines, needle, timeout, &mut log)
    };
    wait("[dev] watching the sources", first_build);
    let pong = wait("published Pong", Duration::from_secs(60));
    assert!(pong.contains(r#""count":1"#), "{pong}");
    let handler = project.join(handler);
    let source = std::fs::read_to_string(&handler).expect("the handler's source");
    assert_eq!(
        source.matches(from).count(),
        1,
        "{from} in {}",
        handler.display()
    );
    std::fs::write(&handler, source.replace(from, to)).expect("edit the handler");
    wait(&format!("[dev] {name} swapped"), first_build);
    let pang = wait("published Pang", Duration::from_secs(60));
    assert!(pang.contains(r#""count":2"#), "state carried over: {pang}");
    // SIGTERM stops it as Ctrl-C would: the host stops and its work folder is removed.
    stop_with_sigterm(&mut child, Duration::from_secs(15));
}

#[test]
fn dev_builds_runs_and_swaps_a_c_project_on_save() {
    edit_and_see_the_swap(
        "dev-c",
        "c",
        "handler.c",
        (
            r#"evhost_publish_json("Pong""#,
            r#"evhost_publish_json("Pang""#,
        ),
        &[],
        Duration::from_secs(60),
    );
}

#[test]
fn dev_builds_runs_and_swaps_a_rust_project_on_save() {
    // The target directory the Rust scaffold tests share, so that the crates build once.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("wasm-guests")
        .join("scaffold-rust");
    edit_and_see_the_swap(
        "dev-rust",
        "rust",
        "src/lib.rs",
        (r#""Pong","#, r#""Pang","#),
        &[("CARGO_TARGET_DIR", target)],
        Duration::from_secs(600),
    );
}
