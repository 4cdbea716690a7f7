//! `evhost examples`: write the embedded example plugins into a directory.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use evhost::artifacts;

/// Arguments of `evhost examples`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  evhost examples --out ./plugins && evhost run --plugins ./plugins"
)]
pub struct ExamplesArgs {
    /// Directory to write `payment.wasm`, `notification.wasm`, `audit.wasm`, `metrics.wasm` to.
    #[arg(long, default_value = "./plugins")]
    pub out: PathBuf,
}

/// Runs `evhost examples`.
///
/// # Errors
///
/// When the directory cannot be created or written.
pub fn run(args: ExamplesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (name, bytes) in artifacts::examples() {
        let path = args.out.join(format!("{name}.wasm"));
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {} ({} KiB)", path.display(), bytes.len() / 1024);
    }
    Ok(())
}
