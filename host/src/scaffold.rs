//! Plugin project templates for `evhost new`: a project in Rust, Python, JavaScript or C with the
//! evhost WIT world copied in, a handler of `Ping` events, a `build.sh` that produces
//! `<name>.wasm` in one command, a test event and a README.
//!
//! The templates live in `host/templates/` and are embedded in the binary, so a user with only
//! the `evhost` binary can start a plugin.

use std::path::{Path, PathBuf};

/// A language `evhost new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust with the evhost SDK (vendored into the project), built with cargo for
    /// `wasm32-wasip2`.
    Rust,
    /// Python, built with componentize-py (PyPI).
    Python,
    /// JavaScript, built with ComponentizeJS (npm).
    Js,
    /// C, built with clang and wasi-libc, `evhost bindgen c` and `evhost componentize`.
    C,
}

impl Language {
    /// The language's name as people write it: `Rust`, `Python`, `JavaScript`, `C`.
    pub fn display_name(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::Js => "JavaScript",
            Language::C => "C",
        }
    }
}

/// Why a project could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a plugin, package and file name.
    #[error(
        "invalid plugin name {0:?}: use 1 to 64 lower-case ASCII letters, digits, '-' or '_', starting with a letter"
    )]
    InvalidName(String),
    /// The target directory exists and is not empty.
    #[error("{0} already exists and is not empty")]
    NotEmpty(PathBuf),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The WIT world, as in the repository's `wit/` folder: (path relative to a project, contents).
pub(crate) const WIT: &[(&str, &str)] = &[
    ("wit/plugin.wit", include_str!("../../wit/plugin.wit")),
    (
        "wit/deps/config/store.wit",
        include_str!("../../wit/deps/config/store.wit"),
    ),
    (
        "wit/deps/config/world.wit",
        include_str!("../../wit/deps/config/world.wit"),
    ),
    (
        "wit/deps/keyvalue/atomics.wit",
        include_str!("../../wit/deps/keyvalue/atomics.wit"),
    ),
    (
        "wit/deps/keyvalue/batch.wit",
        include_str!("../../wit/deps/keyvalue/batch.wit"),
    ),
    (
        "wit/deps/keyvalue/store.wit",
        include_str!("../../wit/deps/keyvalue/store.wit"),
    ),
    (
        "wit/deps/keyvalue/world.wit",
        include_str!("../../wit/deps/keyvalue/world.wit"),
    ),
    (
        "wit/deps/logging/logging.wit",
        include_str!("../../wit/deps/logging/logging.wit"),
    ),
];

/// Files every project gets besides the WIT and its language's files.
const COMMON: &[(&str, &str)] = &[
    ("README.md", include_str!("../templates/README.md")),
    ("event.json", include_str!("../templates/event.json")),
];

const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    ("build.sh", include_str!("../templates/rust/build.sh")),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    // The SDK, vendored until it is published (its bindings read ../wit).
    (
        "evhost-sdk/Cargo.toml",
        include_str!("../templates/rust/evhost-sdk/Cargo.toml"),
    ),
    (
        "evhost-sdk/src/bindings.rs",
        include_str!("../../sdk/src/bindings.rs"),
    ),
    (
        "evhost-sdk/src/config.rs",
        include_str!("../../sdk/src/config.rs"),
    ),
    ("evhost-sdk/src/de.rs", include_str!("../../sdk/src/de.rs")),
    (
        "evhost-sdk/src/error.rs",
        include_str!("../../sdk/src/error.rs"),
    ),
    (
        "evhost-sdk/src/event.rs",
        include_str!("../../sdk/src/event.rs"),
    ),
    (
        "evhost-sdk/src/info.rs",
        include_str!("../../sdk/src/info.rs"),
    ),
    (
        "evhost-sdk/src/journal.rs",
        include_str!("../../sdk/src/journal.rs"),
    ),
    ("evhost-sdk/src/kv.rs", include_str!("../../sdk/src/kv.rs")),
    (
        "evhost-sdk/src/lib.rs",
        include_str!("../../sdk/src/lib.rs"),
    ),
    (
        "evhost-sdk/src/log.rs",
        include_str!("../../sdk/src/log.rs"),
    ),
    (
        "evhost-sdk/src/metrics.rs",
        include_str!("../../sdk/src/metrics.rs"),
    ),
    (
        "evhost-sdk/src/plugin.rs",
        include_str!("../../sdk/src/plugin.rs"),
    ),
    (
        "evhost-sdk/src/publish.rs",
        include_str!("../../sdk/src/publish.rs"),
    ),
    (
        ".gitignore",
        "/target/\n/Cargo.lock\n*.wasm\n*.wasm.partial\n",
    ),
];

const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("../templates/python/app.py")),
    ("build.sh", include_str!("../templates/python/build.sh")),
    (
        "requirements.txt",
        include_str!("../templates/python/requirements.txt"),
    ),
    (
        ".gitignore",
        ".venv/\n__pycache__/\n*.wasm\n*.wasm.partial\n",
    ),
];

const JS: &[(&str, &str)] = &[
    (
        "src/plugin.js",
        include_str!("../templates/js/src/plugin.js"),
    ),
    ("build.sh", include_str!("../templates/js/build.sh")),
    ("package.json", include_str!("../templates/js/package.json")),
    (
        "package-lock.json",
        include_str!("../templates/js/package-lock.json"),
    ),
    (".gitignore", "node_modules/\n*.wasm\n*.wasm.partial\n"),
];

const C: &[(&str, &str)] = &[
    ("handler.c", include_str!("../templates/c/handler.c")),
    // The helpers and the JSON reader of the C example plugin, shared as they are.
    (
        "evhost_util.h",
        include_str!("../../plugins/invoice/evhost_util.h"),
    ),
    ("json.c", include_str!("../../plugins/invoice/json.c")),
    ("json.h", include_str!("../../plugins/invoice/json.h")),
    ("build.sh", include_str!("../templates/c/build.sh")),
    (".gitignore", "*.wasm\n*.wasm.partial\n"),
];

impl Language {
    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Language::Rust => RUST,
            Language::Python => PYTHON,
            Language::Js => JS,
            Language::C => C,
        }
    }

    /// Values of the README placeholders: language, requirements, handler file.
    fn readme(self) -> [(&'static str, &'static str); 3] {
        let (language, requirements, source) = match self {
            Language::Rust => (
                "Rust",
                "Needs Rust with the `wasm32-wasip2` target (`rustup target add wasm32-wasip2`); \
                 crates come from crates.io. The first build takes about a minute.",
                "`src/lib.rs` (with the evhost SDK, vendored in `evhost-sdk/` until it is published)",
            ),
            Language::Python => (
                "Python",
                "Needs `python3` with `venv`. The first build creates `.venv` with the pinned \
                 componentize-py of `requirements.txt` from PyPI; a build takes 10–20 s and makes \
                 a component of about 18 MB.",
                "`app.py`",
            ),
            Language::Js => (
                "JavaScript",
                "Needs Node.js 18+ with npm. The first build installs the ComponentizeJS pinned \
                 in `package-lock.json` from npm (`npm ci`); a build takes about 20 s and makes a \
                 component of about 12 MB. ComponentizeJS has no `Intl` (`Intl.NumberFormat`, \
                 `toLocaleString` with a locale): such a call traps, so format by hand, as \
                 `formatThousands` in `src/plugin.js` does.",
                "`src/plugin.js`",
            ),
            Language::C => (
                "C",
                "Needs clang with the wasm32 target, wasm-ld and wasi-libc (Debian 12: `sudo \
                 apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32`) and the \
                 `evhost` binary on `PATH` (or `EVHOST=/path/to/evhost ./build.sh`): `evhost \
                 bindgen c` writes the bindings and `evhost componentize` makes the component. A \
                 build takes about a second and makes a component of about 200 KB.",
                "`handler.c` (with the small JSON reader `json.c`)",
            ),
        };
        [
            ("{{language}}", language),
            ("{{requirements}}", requirements),
            ("{{source}}", source),
        ]
    }
}

/// Checks that `name` works as plugin, crate, npm package and file name.
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let mut chars = name.chars();
    let valid = name.len() <= 64
        && chars.next().is_some_and(|first| first.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    if valid {
        Ok(())
    } else {
        Err(ScaffoldError::InvalidName(name.to_string()))
    }
}

/// Fills the placeholders of a template file.
fn render(template: &str, name: &str, readme: &[(&str, &str)]) -> String {
    let mut text = template.to_string();
    for (placeholder, value) in readme {
        text = text.replace(placeholder, value);
    }
    text.replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{name}}", name)
}

fn write(path: &Path, contents: &str) -> Result<(), ScaffoldError> {
    let io = |source| ScaffoldError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)?;
    if path.extension().is_some_and(|ext| ext == "sh") {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    Ok(())
}

/// Creates the project of plugin `name` in `language` in `dir` (created if missing; it must be
/// empty). Returns the files written, relative to `dir`.
///
/// # Errors
///
/// [`ScaffoldError`] for a bad name, a non-empty directory or a failed write.
pub fn create(name: &str, language: Language, dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    validate_name(name)?;
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(ScaffoldError::NotEmpty(dir.to_path_buf()));
    }
    let readme = language.readme();
    let mut written = Vec::new();
    for (file, template) in WIT.iter().chain(COMMON).chain(language.files()) {
        write(&dir.join(file), &render(template, name, &readme))?;
        written.push(PathBuf::from(file));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_suit_every_toolchain() {
        for good in ["a", "fraud-check", "my_plugin2"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "2fast", "Upper", "dot.ted", "sp ace", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholders_are_filled() {
        let readme = Language::Rust.readme();
        let text = render("{{name}} {{crate}} {{{name}}} {{language}}", "a-b", &readme);
        assert_eq!(text, "a-b a_b {a-b} Rust");
    }

    /// The C example's build script is the template's, so that the example builds the way a
    /// scaffolded project does.
    #[test]
    fn the_c_example_builds_like_a_scaffolded_project() {
        let readme = Language::C.readme();
        let rendered = render(include_str!("../templates/c/build.sh"), "invoice", &readme);
        assert_eq!(rendered, include_str!("../../plugins/invoice/build.sh"));
    }

    #[test]
    fn every_language_gets_wit_build_script_and_readme() {
        for language in [Language::Rust, Language::Python, Language::Js, Language::C] {
            let dir = tempfile::tempdir().expect("temp dir");
            let files = create("demo", language, dir.path()).expect("scaffold");
            for expected in ["wit/plugin.wit", "build.sh", "README.md", "event.json"] {
                assert!(
                    files.contains(&PathBuf::from(expected)),
                    "{language:?} {expected}"
                );
            }
            let readme = std::fs::read_to_string(dir.path().join("README.md")).expect("README");
            assert!(!readme.contains("{{"), "{language:?}: {readme}");
            assert!(matches!(
                create("demo", language, dir.path()),
                Err(ScaffoldError::NotEmpty(_))
            ));
        }
    }
}
