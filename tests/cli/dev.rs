//! `evhost dev` on projects made by `evhost new`: it builds the project, runs it on the
//! embedded broker and sends `event.json`, whose `Pong` it prints; a saved change of the
//! handler is built, swapped in and sent again, and the new version's publish is printed; what
//! a broken version dead-lettered is re-driven to the fix.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{evhost, lines_of, stdout_of, stop_with_sigterm};

/// `evhost dev` running on a project scaffolded by `evhost new`, and what it printed.
struct DevSession {
    project: PathBuf,
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line printed, for failure messages.
    log: String,
    /// Lines printed that no wait returned yet.
    unseen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl DevSession {
    /// Scaffolds `name` in `lang` and runs `evhost dev` on it (with `env`), sending its
    /// `event.json` after every build that goes live; waits until it watches the sources.
    fn start(name: &str, lang: &str, env: &[(&str, PathBuf)], first_build: Duration) -> Self {
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
        let mut session = DevSession {
            project,
            child,
            lines,
            log: String::new(),
            unseen: Vec::new(),
            _dir: dir,
        };
        session.wait("[dev] watching the sources", first_build);
        session
    }

    /// The first line printed that contains `needle` and no earlier wait returned. The
    /// handlers' output and dev's own lines come from two tasks, in either order: a line
    /// printed before the one waited for is kept for a later wait.
    fn wait(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(index) = self.unseen.iter().position(|line| line.contains(needle)) {
            return self.unseen.remove(index);
        }
        let deadline = Instant::now() + timeout;
        loop {
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} within {timeout:?}:\n{}",
                self.log
            );
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.log.push_str(&line);
                self.log.push('\n');
                if line.contains(needle) {
                    return line;
                }
                self.unseen.push(line);
            }
        }
    }

    /// Replaces the one `from` by `to` in `file` (relative to the project).
    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.project.join(file);
        let source = std::fs::read_to_string(&path).expect("the handler's source");
        assert_eq!(
            source.matches(from).count(),
            1,
            "{from} in {}",
            path.display()
        );
        std::fs::write(&path, source.replace(from, to)).expect("edit the handler");
    }

    /// SIGTERM stops it as Ctrl-C would: the host stops and its work folder is removed.
    fn stop(mut self) {
        stop_with_sigterm(&mut self.child, Duration::from_secs(15));
    }
}

impl Drop for DevSession {
    /// A failed test does not leave its `evhost dev` running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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
    let mut dev = DevSession::start(name, lang, env, first_build);
    let pong = dev.wait("published Pong", Duration::from_secs(60));
    assert!(pong.contains(r#""count":1"#), "{pong}");
    dev.edit(handler, from, to);
    dev.wait(&format!("[dev] {name} swapped"), first_build);
    let pang = dev.wait("published Pang", Duration::from_secs(60));
    assert!(pang.contains(r#""count":2"#), "state carried over: {pang}");
    dev.stop();
}

/// A broken version dead-letters what it gets; the fix, once swapped in, is handed those
/// events again: nothing sent while the fix was being built is left behind.
#[test]
fn dev_redrives_what_a_broken_version_dead_lettered() {
    let mut dev = DevSession::start("dev-fix", "c", &[], Duration::from_secs(60));
    dev.wait("published Pong", Duration::from_secs(60));
    // Every event is rejected (dead-lettered at once) by the broken version.
    let (good, broken) = ("if (!json_is_object(data, len)) {", "if (1) {");
    dev.edit("handler.c", good, broken);
    dev.wait("[dev] dev-fix swapped", Duration::from_secs(60));
    dev.wait("reject on events:Ping", Duration::from_secs(30));
    dev.edit("handler.c", broken, good);
    dev.wait("[dev] dev-fix swapped", Duration::from_secs(60));
    let redriven = dev.wait("[dev] re-drove", Duration::from_secs(10));
    assert!(
        redriven.contains("re-drove 1 dead-lettered event"),
        "{redriven}"
    );
    // The re-driven ping and the one sent after the swap are both answered by the fix.
    let first = dev.wait("published Pong", Duration::from_secs(30));
    let second = dev.wait("published Pong", Duration::from_secs(30));
    let counts = [first, second].map(|line| {
        ["\"count\":2", "\"count\":3"]
            .iter()
            .position(|count| line.contains(count))
            .unwrap_or_else(|| panic!("a second or third ping: {line}"))
    });
    assert_ne!(counts[0], counts[1], "two distinct pings answered");
    dev.stop();
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
