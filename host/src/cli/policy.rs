//! `portcullis policy test`: Rego unit tests, run as `opa test` runs them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;

use super::CliError;

/// `portcullis policy …`
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Run the Rego unit tests under DIR as `opa test` does: every rule named `test_*` must
    /// be true. Exits 1 when one fails.
    Test {
        /// A directory of .rego files (policies and their `*_test.rego` files), or one file.
        dir: PathBuf,
    },
}

/// Runs a `policy` command.
pub fn run(cmd: PolicyCommand) -> Result<(), CliError> {
    match cmd {
        PolicyCommand::Test { dir } => test(&dir),
    }
}

/// Prints a line per test and a count; a failing test is [`CliError::Reported`] (exit 1,
/// the lines above say which), and no test at all is an error.
fn test(dir: &Path) -> Result<(), CliError> {
    let timeout = Duration::from_secs(5);
    let report = crate::plugin::rego::run_tests(dir, timeout)
        .map_err(|e| CliError::Message(format!("{}: {e}", dir.display())))?;
    for (name, ok, error) in &report.results {
        match error {
            Some(e) => println!("FAIL {name}: {e}"),
            None => println!("{} {name}", if *ok { "PASS" } else { "FAIL" }),
        }
    }
    let passed = report.results.iter().filter(|(_, ok, _)| *ok).count();
    println!("{passed}/{} passed", report.results.len());
    if report.passed() {
        Ok(())
    } else if report.results.is_empty() {
        Err(CliError::Message(format!(
            "no test_* rules found under {}",
            dir.display()
        )))
    } else {
        Err(CliError::Reported)
    }
}
