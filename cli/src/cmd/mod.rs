//! One module per command group. Each defines its clap argument types and `run`-style functions that
//! take the open store ([`crate::ctx::Ctx`]).
pub mod changes;
pub mod demo;
pub mod events;
pub mod followups;
pub mod records;
pub mod setup;
pub mod sync;
pub mod visits;

use crate::ctx::CliResult;

/// `KEY=VALUE` arguments (`--set name=王小明`); the value may contain `=` and may be empty.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// A short confirmation for write commands, or `{"id": .., "result": ..}` with --json.
pub fn done(ctx: &crate::ctx::Ctx, id: &str, what: &str) -> CliResult<()> {
    ctx.print(&serde_json::json!({ "id": id, "result": what }), || {
        format!("{what}: {id}")
    });
    Ok(())
}

/// Writes a file only this user can read (exports, tokens and attachments hold personal data), and
/// makes it durable before reporting success.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> CliResult<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .map_err(|e| crate::ctx::CliError::user(format!("cannot write {}: {e}", path.display())))
}
