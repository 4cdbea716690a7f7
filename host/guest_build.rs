//! Shared by the build scripts of `evhost` and `evhost-tests`: compiles guest crates of this
//! workspace to `wasm32-wasip2` components and writes a Rust file embedding them.
//!
//! Guests are built once into `<target>/wasm-guests` (release profile, no debug info: small and
//! fast), then copied into `OUT_DIR` so that the embedded bytes never change under a running
//! build. A guest built with extra environment variables (a variant) gets a target directory of
//! its own, so variants never rebuild each other.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Wasm target of plugins.
pub const TARGET: &str = "wasm32-wasip2";

/// A guest crate to build.
pub struct Guest {
    /// Name of the generated constant, e.g. `PAYMENT`.
    pub constant: &'static str,
    /// Cargo package name, e.g. `evhost-plugin-payment`.
    pub package: &'static str,
    /// Crate directory relative to the workspace root, e.g. `plugins/payment`.
    pub dir: &'static str,
    /// Environment variables of the build (read by the guest with `option_env!`).
    pub env: &'static [(&'static str, &'static str)],
}

/// The workspace root: the ancestor of the crate being built that holds `wit/` and `sdk/`.
pub fn workspace_root() -> PathBuf {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("wit").is_dir() && dir.join("sdk").is_dir())
        .map(Path::to_path_buf)
        .expect("the workspace root (with wit/ and sdk/) is an ancestor of this crate")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `<root>/target`.
pub fn target_root(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"))
}

/// Makes sure the `wasm32-wasip2` standard library is installed: rustup does not always add
/// the targets of `rust-toolchain.toml` to a toolchain that was installed before, so a fresh
/// clone would otherwise fail here. Runs `rustup target add` when rustup manages the toolchain.
fn ensure_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let installed = sysroot
        .as_ref()
        .is_some_and(|root| root.join("lib/rustlib").join(TARGET).is_dir());
    if installed {
        return;
    }
    println!("cargo:warning=the {TARGET} target is missing; running `rustup target add {TARGET}`");
    match Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => println!("cargo:warning=`rustup target add {TARGET}` failed ({status})"),
        Err(err) => {
            println!("cargo:warning=cannot run rustup ({err}); install the {TARGET} target")
        }
    }
}

/// Runs one `cargo build` for `guests` (which share the same `env`) into `target_dir`.
fn cargo_build(root: &Path, target_dir: &Path, guests: &[&Guest]) {
    ensure_target();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir)
        // Flags meant for the host build must not leak into the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        // Small components: no debug info (the host's release profile keeps line tables).
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    if let Some(first) = guests.first() {
        for (key, value) in first.env {
            cmd.env(key, value);
        }
    }
    for guest in guests {
        cmd.arg("-p").arg(guest.package);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|err| panic!("cannot run cargo to build the plugins: {err}"));
    if !status.success() {
        panic!(
            "building the Wasm plugins failed (see the cargo output above). \
             If the {TARGET} target is missing, run: rustup target add {TARGET}"
        );
    }
}

/// Builds `guests` and writes `OUT_DIR/<output>` with one `pub const <CONSTANT>: &[u8]` per
/// guest plus `pub const ALL: &[(&str, &[u8])]` (constant name, bytes).
pub fn build(guests: &[Guest], output: &str) {
    let root = workspace_root();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_root = target_root(&root);

    for dir in ["wit", "sdk"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for guest in guests {
        for part in ["src", "Cargo.toml"] {
            println!(
                "cargo:rerun-if-changed={}",
                root.join(guest.dir).join(part).display()
            );
        }
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    // One cargo invocation per distinct environment.
    let mut variants: Vec<(String, Vec<&Guest>)> = Vec::new();
    for guest in guests {
        let suffix: String = guest
            .env
            .iter()
            .map(|(key, value)| format!("-{}-{value}", key.to_lowercase()))
            .collect();
        match variants
            .iter_mut()
            .find(|(existing, _)| *existing == suffix)
        {
            Some((_, members)) => members.push(guest),
            None => variants.push((suffix, vec![guest])),
        }
    }

    let mut code =
        String::from("// Generated by the build script: Wasm components of the guest crates.\n\n");
    let mut all = String::from(
        "/// Every guest, as (constant name, component bytes).\npub const ALL: &[(&str, &[u8])] = &[\n",
    );
    for (suffix, members) in &variants {
        let target_dir = target_root.join(format!("wasm-guests{suffix}"));
        cargo_build(&root, &target_dir, members);
        for guest in members {
            let file = format!("{}.wasm", guest.package.replace('-', "_"));
            let built = target_dir.join(TARGET).join("release").join(&file);
            let copy = out_dir.join(format!("{}{suffix}.wasm", guest.package));
            std::fs::copy(&built, &copy).unwrap_or_else(|err| {
                panic!(
                    "cannot copy {} to {}: {err}",
                    built.display(),
                    copy.display()
                )
            });
            let _ = writeln!(
                code,
                "/// The `{}` component ({}{}).\npub const {}: &[u8] = include_bytes!({:?});",
                guest.package,
                guest.dir,
                if suffix.is_empty() {
                    String::new()
                } else {
                    format!(", built with {:?}", guest.env)
                },
                guest.constant,
                copy.display().to_string()
            );
            let _ = writeln!(all, "    ({:?}, {}),", guest.constant, guest.constant);
        }
    }
    all.push_str("];\n");
    code.push_str(&all);
    std::fs::write(out_dir.join(output), code)
        .unwrap_or_else(|err| panic!("cannot write {output}: {err}"));
}
