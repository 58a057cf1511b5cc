//! `portcullis plugin test|bench|new|inspect`: the plugin author's commands. The work is
//! the plugin layer's ([`crate::plugin::offline`], [`crate::plugin::scaffold`]); this reads
//! the files named on the command line and prints the results as JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;

use super::CliError;
use crate::config::Reuse;
use crate::model;
use crate::plugin::{offline, scaffold, Plugin};

/// `portcullis plugin …`
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Run one plugin on a request (and optionally a response) and print its verdict as JSON.
    Test {
        /// The plugin component (.wasm), a Rego policy (.rego file or directory), or an OPA
        /// policy compiled to wasm (an `opa build -t wasm` bundle.tar.gz, or its policy.wasm).
        plugin: PathBuf,
        /// The request, as JSON (see the README for the format).
        #[arg(long)]
        request: PathBuf,
        /// A response, as JSON: runs the response hook instead of the request hook.
        #[arg(long)]
        response: Option<PathBuf>,
        /// The plugin's configuration, as a JSON object.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Measure a plugin: instantiation alone and a whole request-hook call, p50/p99 in µs.
    Bench {
        /// The plugin component (.wasm), a Rego policy (.rego file or directory), or an OPA
        /// policy compiled to wasm (an `opa build -t wasm` bundle.tar.gz, or its policy.wasm).
        plugin: PathBuf,
        /// The request, as JSON.
        #[arg(long)]
        request: PathBuf,
        /// The plugin's configuration, as a JSON object.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Iterations of each measurement.
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        /// Measure calls on a reused, initialized instance (`[plugins.reuse]`) instead of a
        /// fresh instance per call.
        #[arg(long)]
        reuse: bool,
    },
    /// Create a plugin from the template of a language; it builds with `./build.sh` and
    /// passes its own test with `./test.sh`.
    New {
        /// The plugin's name (lowercase letters, digits, '-'); also its directory's.
        name: String,
        /// The language: rust, python, js or c.
        #[arg(long, value_parser = ["rust", "python", "js", "c"])]
        lang: String,
        /// The directory to create the plugin in (default: the current one).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The Rust SDK crate a Rust plugin depends on (default: this source tree's sdk/rust).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Show a plugin's name, version, contract version and hooks.
    Inspect {
        /// The plugin component (.wasm).
        plugin: PathBuf,
    },
}

/// Runs a `plugin` command.
pub async fn run(cmd: PluginCommand) -> Result<(), CliError> {
    match cmd {
        PluginCommand::Test {
            plugin,
            request,
            response,
            config,
        } => {
            let (loaded, request) =
                load_for_test(&plugin, &request, config.as_deref(), None).await?;
            let response = match response {
                Some(p) => Some(read_json::<offline::ResponseFile>(&p)?.into_response()),
                None => None,
            };
            let verdict = offline::run(&loaded, &request, response.as_ref())
                .await
                .map_err(|f| CliError::Message(format!("plugin {f}")))?;
            print_json(&offline::verdict_json(&verdict))
        }
        PluginCommand::Bench {
            plugin,
            request,
            config,
            iterations,
            reuse,
        } => {
            // One instance, never retired: the figure is the hook call alone.
            let reuse = reuse.then_some(Reuse {
                instances: 1,
                calls: u32::MAX,
            });
            let (loaded, request) =
                load_for_test(&plugin, &request, config.as_deref(), reuse).await?;
            let figures = offline::bench(&Arc::new(loaded), &request, iterations)
                .await
                .map_err(|f| CliError::Message(format!("plugin {f}")))?;
            print_json(&figures)
        }
        PluginCommand::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let lang: scaffold::Lang = lang.parse()?;
            let sdk = sdk.unwrap_or_else(scaffold::default_rust_sdk);
            let created = scaffold::create(lang, &name, &dir, &sdk)?;
            println!("created {}", created.display());
            println!(
                "build: {}/build.sh   test: {}/test.sh",
                created.display(),
                created.display()
            );
            Ok(())
        }
        PluginCommand::Inspect { plugin } => {
            let loaded = offline::load_one(&plugin, serde_json::json!({}), false, None).await?;
            print_json(&offline::describe(&loaded))
        }
    }
}

fn print_json(value: &serde_json::Value) -> Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::context(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::context(format!("parsing {}", path.display()), e))
}

/// Loads a plugin with its configuration (checked) and a request file, for `plugin test`
/// and `plugin bench`.
async fn load_for_test(
    plugin: &Path,
    request: &Path,
    config: Option<&Path>,
    reuse: Option<Reuse>,
) -> Result<(Plugin, model::Request), CliError> {
    let config = match config {
        Some(p) => read_json(p)?,
        None => serde_json::json!({}),
    };
    let loaded = offline::load_one(plugin, config, true, reuse).await?;
    let request = read_json::<offline::RequestFile>(request)?
        .into_request()
        .map_err(|e| CliError::Message(format!("{}: {e}", request.display())))?;
    Ok((loaded, request))
}
