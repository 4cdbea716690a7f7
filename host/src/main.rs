//! The `evhost` binary: the command line (`cli/`, one module per subcommand), the benchmark
//! (`bench/`), plugin templates (`scaffold.rs`) and the C guest tools (`guest_tools/`), on top
//! of the `evhost` runtime library.

use std::process::ExitCode;

mod bench;
mod cli;
mod guest_tools;
mod scaffold;

use cli::ParseError;

/// jemalloc instead of the system allocator: the event path allocates small buffers at a high
/// rate, and glibc's malloc/free took 15% of the host's CPU there (perf, `evhost run`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(ParseError::Clap(err)) => err.exit(),
        Err(ParseError::ConfigFile(err)) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
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
