//! `portcullis certs init`: a development CA with server and per-user client certificates,
//! and the commands that use them.

use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;

/// `portcullis certs …`
#[derive(Subcommand)]
pub enum CertsCommand {
    /// Create a development CA (DIR/ca.pem, DIR/ca-key.pem; reused if present), a server
    /// certificate for localhost and 127.0.0.1 (DIR/server/) and, per user, a folder for the
    /// docker CLI's DOCKER_CERT_PATH (DIR/USER/ca.pem, cert.pem, key.pem).
    Init {
        /// The directory to write to.
        dir: PathBuf,
        /// A user to make a client certificate for (CN=USER); repeatable.
        #[arg(long = "user")]
        users: Vec<String>,
        /// USER=GROUP: put GROUP in USER's certificate (O=GROUP); repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
}

/// Runs a `certs` command.
pub fn run(cmd: CertsCommand) -> Result<(), CliError> {
    match cmd {
        CertsCommand::Init { dir, users, groups } => init(dir, users, groups),
    }
}

fn init(dir: PathBuf, users: Vec<String>, groups: Vec<String>) -> Result<(), CliError> {
    let mut with_groups: Vec<(String, Vec<String>)> =
        users.into_iter().map(|u| (u, Vec::new())).collect();
    for g in groups {
        let (user, group) = g
            .split_once('=')
            .ok_or_else(|| CliError::Message(format!("--group {g:?}: expected USER=GROUP")))?;
        let entry = with_groups
            .iter_mut()
            .find(|(u, _)| u == user)
            .ok_or_else(|| {
                CliError::Message(format!(
                    "--group {g:?}: {user} is not one of the --user names"
                ))
            })?;
        entry.1.push(group.to_owned());
    }
    let report = crate::identity::devca::init(&dir, &with_groups)?;
    // Absolute paths in the hints: DOCKER_CERT_PATH is read from wherever docker runs.
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let d = dir.display();
    println!(
        "{} CA: {d}/ca.pem",
        if report.reused_ca { "reused" } else { "new" }
    );
    for f in &report.folders {
        println!("wrote {}", f.display());
    }
    println!(
        "\nserve:  portcullis serve --listen tls://127.0.0.1:2376 --tls-cert {d}/server/cert.pem \\\n          --tls-key {d}/server/key.pem --tls-client-ca {d}/ca.pem"
    );
    if let Some((user, _)) = with_groups.first() {
        println!(
            "client: DOCKER_HOST=tcp://127.0.0.1:2376 DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH={d}/{user} docker ps"
        );
    }
    Ok(())
}
