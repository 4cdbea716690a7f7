//! Builds plugins that are not Rust crates of this workspace (Python, JavaScript, scaffolded
//! projects) by running their own `build.sh`, once per content: the component is cached as
//! `<target>/wasm-guests/<name>-<hash>.wasm`, where the hash covers every input file of the
//! project and the WIT it builds against.
//!
//! Test binaries run in parallel processes: builds of one toolchain are serialised by a file
//! lock, and a component only appears under its final name by an atomic rename. A missing
//! toolchain (no `python3`, no `npm`, no network to PyPI or npm) fails the test with the reason,
//! never skips it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest time one `build.sh` may run (a first build downloads its toolchain).
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Longest wait for another process building with the same toolchain.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Folders of a project that are build tools or outputs, not inputs.
const IGNORED_DIRS: &[&str] = &["node_modules", ".venv", "target", "__pycache__"];

/// The toolchain a project's `build.sh` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// componentize-py from PyPI, in a virtualenv shared by all Python builds of the run.
    Python,
    /// ComponentizeJS from npm, installed by `npm ci` into the project's `node_modules`.
    JavaScript,
    /// cargo and the `wasm32-wasip2` target, with a target directory shared by Rust builds.
    Rust,
}

impl Toolchain {
    fn label(self) -> &'static str {
        match self {
            Toolchain::Python => "python",
            Toolchain::JavaScript => "javascript",
            Toolchain::Rust => "rust",
        }
    }

    /// The program that must exist, and what the build needs besides it.
    fn requirement(self) -> (&'static str, &'static str) {
        match self {
            Toolchain::Python => (
                "python3",
                "python3 with the venv module and network access to PyPI (componentize-py)",
            ),
            Toolchain::JavaScript => (
                "npm",
                "Node.js 18+ with npm and network access to the npm registry (ComponentizeJS)",
            ),
            Toolchain::Rust => (
                "cargo",
                "cargo with the wasm32-wasip2 target and network access to crates.io",
            ),
        }
    }

    /// Environment of the build: shared tool folders under `guests`.
    fn env(self, guests: &Path) -> Vec<(&'static str, PathBuf)> {
        match self {
            Toolchain::Python => vec![("VENV", guests.join("venv-componentize-py"))],
            Toolchain::JavaScript => Vec::new(),
            Toolchain::Rust => vec![("CARGO_TARGET_DIR", guests.join("scaffold-rust"))],
        }
    }
}

/// The workspace root (holds `wit/` and `plugins/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace root")
        .to_path_buf()
}

/// `<target>/wasm-guests`, where the workspace's Wasm guests are built.
pub fn guests_dir() -> PathBuf {
    PathBuf::from(env!("EVHOST_TARGET_DIR")).join("wasm-guests")
}

/// Appends every input file under `dir` (sorted, relative names and contents) to `out`.
fn hash_inputs(root: &Path, dir: &Path, out: &mut Vec<u8>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !IGNORED_DIRS.contains(&name) {
                hash_inputs(root, &path, out);
            }
        } else if !name.ends_with(".wasm") {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            out.extend_from_slice(relative.to_string_lossy().as_bytes());
            out.push(0);
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
    }
}

/// Hash of a project's inputs: its files plus the extra folders (e.g. the shared `wit/`).
fn input_hash(project: &Path, extra: &[PathBuf]) -> String {
    let mut inputs = Vec::new();
    hash_inputs(project, project, &mut inputs);
    for dir in extra {
        hash_inputs(dir, dir, &mut inputs);
    }
    evhost::plugin::sha256_hex(&inputs)[..16].to_string()
}

/// Holds an exclusive lock on a file until dropped.
struct BuildLock(File);

impl BuildLock {
    /// Takes the lock of `path`, waiting at most [`LOCK_TIMEOUT`].
    fn acquire(path: &Path) -> Self {
        let file = File::create(path)
            .unwrap_or_else(|err| panic!("cannot create the lock {}: {err}", path.display()));
        let deadline = Instant::now() + LOCK_TIMEOUT;
        loop {
            match file.try_lock() {
                Ok(()) => return BuildLock(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    assert!(
                        Instant::now() < deadline,
                        "another process held {} for more than {LOCK_TIMEOUT:?}",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(std::fs::TryLockError::Error(err)) => {
                    panic!("cannot lock {}: {err}", path.display())
                }
            }
        }
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// The last `limit` bytes of a log file, for failure messages.
fn tail(path: &Path, limit: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let start = text.len().saturating_sub(limit);
    let start = (start..text.len())
        .find(|index| text.is_char_boundary(*index))
        .unwrap_or(text.len());
    text[start..].to_string()
}

/// Runs `build.sh <output>` in `project` with a bounded run time; panics with its log on
/// failure.
fn run_build(project: &Path, toolchain: Toolchain, output: &Path, log: &Path) {
    let (program, needs) = toolchain.requirement();
    if let Err(err) = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        panic!(
            "cannot build the {} plugin {}: `{program}` cannot be run ({err}). It needs {needs}.",
            toolchain.label(),
            project.display()
        );
    }
    let log_file =
        File::create(log).unwrap_or_else(|err| panic!("cannot create {}: {err}", log.display()));
    let mut command = Command::new("bash");
    command
        .arg(project.join("build.sh"))
        .arg(output)
        .current_dir(project)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone the log handle"))
        .stderr(log_file)
        // Flags of the test build must not leak into a guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("VIRTUAL_ENV");
    for (key, value) in toolchain.env(&guests_dir()) {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run bash {}/build.sh: {err}", project.display()));
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{}/build.sh did not finish within {BUILD_TIMEOUT:?}; log {}:\n{}",
                    project.display(),
                    log.display(),
                    tail(log, 4000)
                );
            }
            Err(err) => panic!("cannot wait for {}/build.sh: {err}", project.display()),
        }
    };
    assert!(
        status.success() && output.is_file(),
        "building the {} plugin {} failed ({status}). It needs {needs}. Log {}:\n{}",
        toolchain.label(),
        project.display(),
        log.display(),
        tail(log, 4000)
    );
}

/// A built component and how it was obtained.
#[derive(Debug, Clone)]
pub struct Built {
    /// The component file, `<target>/wasm-guests/<name>-<hash>.wasm`.
    pub path: PathBuf,
    /// Build time when this call built it; `None` when it came from the cache.
    pub build_time: Option<Duration>,
}

impl Built {
    /// The component bytes.
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", self.path.display()))
    }
}

/// Builds the project in `project` with its `build.sh` unless a component of the same inputs
/// (its files and the folders `extra_inputs`) exists; returns the component's path.
pub fn build_project(
    name: &str,
    project: &Path,
    toolchain: Toolchain,
    extra_inputs: &[PathBuf],
) -> Built {
    let guests = guests_dir();
    std::fs::create_dir_all(&guests)
        .unwrap_or_else(|err| panic!("cannot create {}: {err}", guests.display()));
    let hash = input_hash(project, extra_inputs);
    let path = guests.join(format!("{name}-{hash}.wasm"));
    if path.is_file() {
        return Built {
            path,
            build_time: None,
        };
    }
    let _lock = BuildLock::acquire(&guests.join(format!("{}.lock", toolchain.label())));
    if path.is_file() {
        // Another process built it while this one waited.
        return Built {
            path,
            build_time: None,
        };
    }
    let temporary = guests.join(format!("{name}-{hash}.tmp{}.wasm", std::process::id()));
    let log = guests.join(format!("{name}-{hash}.log"));
    let started = Instant::now();
    run_build(project, toolchain, &temporary, &log);
    let elapsed = started.elapsed();
    std::fs::rename(&temporary, &path).unwrap_or_else(|err| {
        panic!(
            "cannot rename {} to {}: {err}",
            temporary.display(),
            path.display()
        )
    });
    eprintln!(
        "built {} in {:.1} s ({} bytes)",
        path.display(),
        elapsed.as_secs_f64(),
        std::fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0)
    );
    Built {
        path,
        build_time: Some(elapsed),
    }
}

/// Builds the example plugin `plugins/<name>` (against the workspace's `wit/`).
pub fn example_plugin(name: &str, toolchain: Toolchain) -> Built {
    let root = workspace_root();
    build_project(
        name,
        &root.join("plugins").join(name),
        toolchain,
        &[root.join("wit")],
    )
}

/// The Python example `plugins/fraud-check`, built with componentize-py.
pub fn fraud_check() -> Built {
    example_plugin("fraud-check", Toolchain::Python)
}

/// The JavaScript example `plugins/webhook-formatter`, built with ComponentizeJS.
pub fn webhook_formatter() -> Built {
    example_plugin("webhook-formatter", Toolchain::JavaScript)
}
