//! The `portcullis` command: parses the command line, sets up logging and hands over to
//! [`portcullis::cli`]; its errors leave here, as one line on stderr and exit status 1.

use std::process::ExitCode;

use clap::Parser;
use portcullis::cli::{self, Cli, CliError};
use portcullis::config::LogFormat;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format();
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        // The request's span (its id) on every line logged while the request is served.
        Ok(LogFormat::Json) => log
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        _ => log.init(),
    }
    match format.and_then(|_| cli::run(cli)) {
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
