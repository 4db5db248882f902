//! `kes migrate`: copy stored key records verbatim from one keystore to another (so legacy
//! records stay legacy), talking to the keystores directly, not to a server.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::common::CliResult;
use crate::keystore::StoreError;

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// Config file naming the source keystore.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Config file naming the target keystore.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Overwrite keys that already exist in the target.
    #[arg(short = 'f', long, conflicts_with = "merge")]
    pub force: bool,
    /// Skip keys that already exist in the target.
    #[arg(long)]
    pub merge: bool,
    /// Only keys matching this pattern (a trailing `*` is a prefix match).
    #[arg(default_value = "*")]
    pub pattern: String,
}

fn open(
    path: &PathBuf,
) -> Result<std::sync::Arc<dyn crate::keystore::KeyStore>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    for w in crate::config::unknown_key_warnings(&text) {
        eprintln!("warning: '{}': {w}", path.display());
    }
    let config = crate::config::parse_keystore_only(&text, &|n| std::env::var(n).ok())
        .map_err(|e| format!("'{}': {e}", path.display()))?;
    Ok(crate::keystore::open(&config)?)
}

pub fn run(args: MigrateArgs) -> CliResult {
    let src = open(&args.from)?;
    let dst = open(&args.to)?;
    let (prefix, exact) = match args.pattern.strip_suffix('*') {
        Some(p) => (p.to_string(), false),
        None => (args.pattern.clone(), true),
    };
    let names = src
        .list(&prefix)
        .map_err(|e| format!("cannot list the source keystore: {e}"))?;
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let (mut migrated, mut skipped) = (0usize, 0usize);
    for name in names.iter().filter(|n| !exact || **n == args.pattern) {
        let value = src
            .get(name)
            .map_err(|e| format!("cannot read key '{name}': {e}"))?;
        match dst.create(name, value.expose()) {
            Ok(()) => migrated += 1,
            Err(StoreError::AlreadyExists) if args.merge => skipped += 1,
            Err(StoreError::AlreadyExists) if args.force => {
                dst.delete(name).map_err(|e| format!("cannot replace key '{name}': {e}"))?;
                dst.create(name, value.expose()).map_err(|e| format!("cannot write key '{name}': {e}"))?;
                migrated += 1;
            }
            Err(StoreError::AlreadyExists) => {
                return Err(format!("key '{name}' already exists in the target (use --merge to skip or --force to overwrite); {migrated} keys migrated").into())
            }
            Err(e) => return Err(format!("cannot write key '{name}': {e}").into()),
        }
        if tty && migrated % 100 == 0 {
            eprint!("\rMigrated {migrated} keys");
        }
    }
    if tty {
        eprint!("\r");
    }
    eprintln!(
        "Migrated {migrated} keys{} in {:.1}s",
        if skipped > 0 {
            format!(" ({skipped} already present, skipped)")
        } else {
            String::new()
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
