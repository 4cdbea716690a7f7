//! `evhost componentize`: a core Wasm module built against the bindings becomes a plugin
//! component.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::guest_tools::componentize;

/// Arguments of `evhost componentize`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  evhost componentize handler.core.wasm --out plugins/handler.wasm\n  evhost plugins check plugins/handler.wasm"
)]
pub struct ComponentizeArgs {
    /// The core module (`wasm32-wasi` reactor, linked with `plugin_component_type.o` from
    /// `evhost bindgen c`).
    pub module: PathBuf,
    /// The component to write. It is written under a temporary name and then renamed, so a
    /// host watching the folder never loads half a file.
    #[arg(long, short)]
    pub out: PathBuf,
}

/// Runs `evhost componentize`.
///
/// # Errors
///
/// When the module cannot be read, is not a module of the evhost world, or the component
/// cannot be written.
pub fn run(args: ComponentizeArgs) -> anyhow::Result<()> {
    let module = std::fs::read(&args.module)
        .with_context(|| format!("cannot read {}", args.module.display()))?;
    let component = componentize(&module)
        .with_context(|| format!("cannot componentize {}", args.module.display()))?;
    let mut partial = args.out.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, &component)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &args.out).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            args.out.display()
        )
    })?;
    println!("{} ({} bytes)", args.out.display(), component.len());
    Ok(())
}
