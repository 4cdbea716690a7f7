//! The `evhost` binary: parses the command line and hands over to [`evhost::cli`].

use std::process::ExitCode;

use clap::Parser;
use evhost::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing(cli.log_format, cli.command.default_log_filter());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli::run(cli))
}
