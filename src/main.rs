//! The `crosspool` command-line tool.

use anyhow::Context;
use clap::{Parser, Subcommand};
use crosspool::gpu::{BackendChoice, GpuContext, GpuOptions};

/// Cross-convolutional-layer pooling features on any GPU.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// GPU backend to use.
    #[arg(long, global = true, value_enum, default_value_t = BackendChoice::Auto, env = "CROSSPOOL_BACKEND")]
    backend: BackendChoice,
    /// Use the adapter whose name contains this text (case-insensitive), e.g. "llvmpipe".
    #[arg(long, global = true, env = "CROSSPOOL_ADAPTER")]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the chosen adapter, its backend, features and limits.
    Info,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line, without a backtrace.
            eprintln!("crosspool: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let opts = GpuOptions {
        backend: cli.backend,
        adapter: cli.adapter,
        max_binding_bytes: None,
        unchecked_shaders: false,
    };
    match cli.command {
        Command::Info => {
            let ctx = GpuContext::new(&opts).context("opening the GPU")?;
            print!("{}", ctx.report());
        }
    }
    Ok(())
}
