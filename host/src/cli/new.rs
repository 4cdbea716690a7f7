//! `evhost new`: scaffold a plugin project in Rust, Python, JavaScript or C.

use std::path::PathBuf;

use clap::Args;

use super::UsageError;
use crate::scaffold::{self, Language, ScaffoldError};

/// Arguments of `evhost new`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  evhost new fraud-alerts --lang python && cd fraud-alerts && ./build.sh && cp fraud-alerts.wasm ../plugins/"
)]
pub struct NewArgs {
    /// Plugin name: lower-case letters, digits, '-' and '_' (also its consumer group).
    pub name: String,
    /// Language of the handler.
    #[arg(long, value_enum, default_value_t = Language::Rust)]
    pub lang: Language,
    /// Directory of the new project (created; must be empty). Default: `./<NAME>`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Runs `evhost new`.
///
/// # Errors
///
/// A [`UsageError`] when the name is invalid; an error when the directory is not empty or a file cannot be written.
pub fn run(args: NewArgs) -> anyhow::Result<()> {
    let dir = args
        .dir
        .unwrap_or_else(|| PathBuf::from(".").join(&args.name));
    let files = scaffold::create(&args.name, args.lang, &dir).map_err(|err| match err {
        ScaffoldError::InvalidName(_) => anyhow::Error::new(UsageError(err.to_string())),
        other => anyhow::Error::new(other).context(format!(
            "cannot create the plugin project in {}",
            dir.display()
        )),
    })?;
    println!(
        "created {} ({} files): a {} plugin handling `Ping` events",
        dir.display(),
        files.len(),
        args.lang.display_name()
    );
    // A C project's build.sh runs `evhost bindgen` and `evhost componentize`: name this binary
    // for it, as `evhost` may not be on the PATH (e.g. under `cargo run`).
    let build = match (args.lang, std::env::current_exe()) {
        (Language::C, Ok(exe)) => format!("EVHOST={} ./build.sh", exe.display()),
        _ => "./build.sh".to_string(),
    };
    println!(
        "next: cd {} && {build} && cp {}.wasm <your plugins dir>/",
        dir.display(),
        args.name
    );
    Ok(())
}
