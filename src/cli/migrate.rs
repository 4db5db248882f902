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
        errln!("warning: '{}': {w}", path.display());
    }
    let config = crate::config::parse_keystore_only(&text, &|n| std::env::var(n).ok())
        .map_err(|e| format!("'{}': {e}", path.display()))?;
    Ok(crate::keystore::open(&config)?)
}

/// How many conflicting names a refusal lists.
const CONFLICTS_SHOWN_MAX: usize = 5;

pub fn run(args: MigrateArgs) -> CliResult {
    let src = open(&args.from)?;
    let dst = open(&args.to)?;
    let (prefix, exact) = match args.pattern.strip_suffix('*') {
        Some(p) => (p.to_string(), false),
        None => (args.pattern.clone(), true),
    };
    let names: Vec<String> = src
        .list(&prefix)
        .map_err(|e| {
            format!(
                "cannot list the source keystore ({}): {e}",
                src.display_name()
            )
        })?
        .into_iter()
        .filter(|n| !exact || *n == args.pattern)
        .collect();
    // A target that is down fails here, before anything is read or written.
    dst.status().map_err(|e| {
        format!(
            "cannot reach the target keystore ({}): {e}",
            dst.display_name()
        )
    })?;
    if !args.merge && !args.force {
        // Refuse before writing anything: a refusal leaves the target as it was.
        let present = dst.list(&prefix).map_err(|e| {
            format!(
                "cannot list the target keystore ({}): {e}",
                dst.display_name()
            )
        })?;
        let present: std::collections::HashSet<&str> = present.iter().map(String::as_str).collect();
        let conflicts: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| present.contains(n))
            .collect();
        if !conflicts.is_empty() {
            let mut shown: Vec<String> = conflicts
                .iter()
                .take(CONFLICTS_SHOWN_MAX)
                .map(|n| format!("'{n}'"))
                .collect();
            if conflicts.len() > CONFLICTS_SHOWN_MAX {
                shown.push("…".into());
            }
            return Err(format!(
                "{} of the {} keys to migrate already exist in the target keystore ({}); nothing was migrated: use --merge to skip them or --force to overwrite them",
                conflicts.len(),
                names.len(),
                shown.join(", ")
            )
            .into());
        }
    }
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let (mut migrated, mut skipped, mut replaced) = (0usize, 0usize, 0usize);
    for name in &names {
        let value = src.get(name).map_err(|e| {
            format!(
                "cannot read key '{name}' from the source keystore: {e}; {migrated} keys migrated"
            )
        })?;
        match dst.create(name, value.expose()) {
            Ok(()) => migrated += 1,
            Err(StoreError::AlreadyExists) if args.merge => skipped += 1,
            Err(StoreError::AlreadyExists) if args.force => {
                dst.delete(name).map_err(|e| format!("cannot replace key '{name}' in the target keystore: {e}; {migrated} keys migrated"))?;
                dst.create(name, value.expose()).map_err(|e| format!("cannot write key '{name}' to the target keystore: {e}; {migrated} keys migrated"))?;
                migrated += 1;
                replaced += 1;
            }
            Err(StoreError::AlreadyExists) => {
                return Err(format!("key '{name}' appeared in the target keystore during the migration (use --merge to skip or --force to overwrite); {migrated} keys migrated").into())
            }
            Err(e) => return Err(format!("cannot write key '{name}' to the target keystore: {e}; {migrated} keys migrated").into()),
        }
        if tty && migrated % 100 == 0 {
            errout!("\rMigrated {migrated} keys");
        }
    }
    if tty {
        errout!("\r");
    }
    let mut notes = Vec::new();
    if skipped > 0 {
        notes.push(format!("{skipped} already present, skipped"));
    }
    if replaced > 0 {
        notes.push(format!("{replaced} already present, overwritten"));
    }
    errln!(
        "Migrated {migrated} keys{} in {:.1}s",
        if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
