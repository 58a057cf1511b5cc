//! `portcullis check`: loads a configuration and every plugin it names as `serve` would,
//! without listening, so a bad configuration is found before it is deployed.

use std::path::Path;

use super::{runtime, CliError};
use crate::Config;

/// Validates the configuration file at `path`; prints `PATH: ok (N plugins)` when valid.
pub fn run(path: &Path) -> Result<(), CliError> {
    let config = Config::load(path)?;
    if let Some(tls) = &config.server.tls {
        // Loads certificate, key and client CA as serving would (a key that does not
        // fit the certificate is only seen here).
        crate::listener::tls::TlsSetup::from_config(&config, tls)?;
    }
    let chain = runtime()?.block_on(crate::load_chain(&config))?;
    println!("{}: ok ({} plugins)", path.display(), chain.len());
    Ok(())
}
