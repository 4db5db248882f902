//! The command line: argument parsing (clap) and dispatch. Each command lives in its own
//! file; this layer only parses arguments and maps results to exit codes
//! (0 success, 1 error with `Error: …` on stderr, 2 usage).

pub mod identity;
pub mod server;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "kes", version, about = "Key Encryption Service: server and client", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the KES server.
    Server(server::ServerArgs),
    /// Create API keys and compute identities.
    Identity(identity::IdentityArgs),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 2,
            };
        }
    };
    let result = match cli.command {
        Command::Server(args) => server::run(args),
        Command::Identity(args) => identity::run(args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}
