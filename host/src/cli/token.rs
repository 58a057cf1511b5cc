//! `portcullis token add`: a new bearer token for a user, whose hash goes to the tokens file.

use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;

/// `portcullis token …`
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a random token for USER, append its SHA-256 to the tokens file (created with
    /// mode 0600) and print the token, once: it is stored nowhere else.
    Add {
        /// The tokens file (`server.tokens_file`).
        #[arg(long)]
        file: PathBuf,
        /// The user the token stands for.
        #[arg(long)]
        user: String,
        /// A group of the user; repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
}

/// Runs a `token` command.
pub fn run(cmd: TokenCommand) -> Result<(), CliError> {
    match cmd {
        TokenCommand::Add { file, user, groups } => {
            let token = crate::identity::tokens::add(&file, &user, &groups)?;
            // The token alone on stdout, so that scripts can capture it.
            eprintln!(
                "added a token for {user} to {}; it is shown only now:",
                file.display()
            );
            println!("{token}");
            Ok(())
        }
    }
}
