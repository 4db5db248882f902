//! The command line: argument parsing (clap) and dispatch. Each command group lives in its
//! own file; this layer parses arguments, calls library code and maps results to exit codes
//! (0 success, 1 error with `Error: …` on stderr, 2 usage).

#[macro_use]
pub mod out;

pub mod admin;
pub mod common;
pub mod identity;
pub mod key;
pub mod migrate;
pub mod server;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "kes",
    version,
    about = "Key Encryption Service: server and client",
    long_about = None,
    after_help = "Environment: MINIO_KES_SERVER / KES_SERVER (endpoints), MINIO_KES_API_KEY / KES_API_KEY, \
                  MINIO_KES_KEY_FILE / KES_CLIENT_KEY and MINIO_KES_CERT_FILE / KES_CLIENT_CERT."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the KES server.
    Server(server::ServerArgs),
    /// List keys, policies (-p) or identities (-i).
    Ls(admin::LsArgs),
    /// Manage keys: create, import, info, ls, rm, encrypt, decrypt, dek.
    Key(key::KeyArgs),
    /// Show policies: info, ls, show.
    Policy(admin::PolicyArgs),
    /// Create API keys and compute identities; info, ls.
    Identity(identity::IdentityArgs),
    /// Stream the audit (default) or error log.
    Log(admin::LogArgs),
    /// Show the server's status.
    Status(admin::StatusArgs),
    /// Show a live view of the server's metrics.
    Metric(admin::MetricArgs),
    /// Copy keys from one keystore to another.
    Migrate(migrate::MigrateArgs),
    /// Print a shell completion script (bash, zsh, fish, …).
    ///
    /// Example: kes completion bash > /etc/bash_completion.d/kes
    Completion { shell: clap_complete::Shell },
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
        Command::Ls(args) => admin::ls(args),
        Command::Key(args) => key::run(args),
        Command::Policy(args) => admin::policy(args),
        Command::Identity(args) => identity::run(args),
        Command::Log(args) => admin::log(args),
        Command::Status(args) => admin::status(args),
        Command::Metric(args) => admin::metric(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kes", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            Ok(())
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            errln!("Error: {e}");
            1
        }
    }
}
