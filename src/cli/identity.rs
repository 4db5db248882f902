//! `kes identity`: create API keys and compute identities (no server needed).

use std::io::IsTerminal;
use std::path::Path;

use clap::{Args, Subcommand};

use crate::auth::apikey::ApiKey;
use crate::auth::identity::identity_of_pem_file;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IdentityArgs {
    #[command(subcommand)]
    pub command: Option<IdentityCommand>,
    /// An API key (kes:v1:…) or a PEM certificate file whose identity to print.
    pub key_or_file: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum IdentityCommand {
    /// Generate a new API key and print it with its identity.
    New,
    /// Print the identity of an API key or a certificate file.
    Of {
        /// kes:v1:… API key or PEM certificate file.
        key_or_file: String,
    },
}

pub fn run(args: IdentityArgs) -> Result<(), Box<dyn std::error::Error>> {
    match (args.command, args.key_or_file) {
        (Some(IdentityCommand::New), _) | (None, None) => new_key(),
        (Some(IdentityCommand::Of { key_or_file }), _) | (None, Some(key_or_file)) => {
            print_identity(&key_or_file)
        }
    }
}

fn new_key() -> Result<(), Box<dyn std::error::Error>> {
    let key = ApiKey::generate().map_err(|e| format!("cannot generate an API key: {e:?}"))?;
    let text = key.to_string_secret();
    let text = std::str::from_utf8(text.expose())?;
    let identity = key.identity().to_hex();
    if std::io::stdout().is_terminal() {
        println!("Your API key:\n\n   {text}\n");
        println!(
            "This is the only time it is shown. Keep it secret and store it in a safe place.\n"
        );
        println!("Your Identity:\n\n   {identity}\n");
        println!("The identity is not a secret. It can be shared. Any client using the API key\nauthenticates with this identity. Compute it again with:\n\n   $ kes identity of <api-key>");
    } else {
        print!("{text}");
    }
    Ok(())
}

fn print_identity(arg: &str) -> Result<(), Box<dyn std::error::Error>> {
    let identity = if arg.starts_with("kes:v1:") {
        ApiKey::parse(arg)
            .map_err(|e| format!("invalid API key: {e:?}"))?
            .identity()
    } else {
        identity_of_pem_file(Path::new(arg))
            .map_err(|e| format!("cannot compute the identity of '{arg}': {e:?}"))?
    };
    if std::io::stdout().is_terminal() {
        println!("Identity:\n\n   {identity}");
    } else {
        print!("{identity}");
    }
    Ok(())
}
