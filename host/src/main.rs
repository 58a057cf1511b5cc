//! The `portcullis` command: parses the command line, sets up logging and hands over to
//! [`portcullis::cli`]; its errors leave here, as one line on stderr and exit status 1.

use std::process::ExitCode;

use clap::Parser;
use portcullis::cli::{self, Cli, CliError};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The command's own output said why.
        Err(CliError::Reported) => ExitCode::FAILURE,
        Err(e) => {
            // The whole chain of causes on one line; no backtrace, whatever RUST_BACKTRACE says.
            eprintln!("portcullis: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
