//! `evhost bindgen`: guest bindings of the evhost WIT world for C.

use std::path::PathBuf;

use clap::Args;

use crate::guest_tools::{BindingsLanguage, write_bindings};

/// Arguments of `evhost bindgen`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  evhost bindgen c --out bindings\n  clang-19 --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -Ibindings \\\n    handler.c bindings/plugin.c bindings/plugin_component_type.o -o handler.core.wasm\n  evhost componentize handler.core.wasm --out handler.wasm"
)]
pub struct BindgenArgs {
    /// Language of the bindings.
    #[arg(value_enum)]
    pub language: BindingsLanguage,
    /// Directory to write them into (created if missing).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

/// Runs `evhost bindgen`.
///
/// # Errors
///
/// When the bindings cannot be generated or written.
pub fn run(args: BindgenArgs) -> anyhow::Result<()> {
    let files = write_bindings(args.language, &args.out)?;
    for file in files {
        println!("{}", file.display());
    }
    Ok(())
}
