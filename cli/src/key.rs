//! Where the store key comes from. Keys are never printed or logged.
use crate::ctx::{CliError, CliResult};
use gridwork_core::StoreKey;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file `init` writes next to the store when no key is given (demos and development only).
pub const DEFAULT_KEY_FILE: &str = "store.key";

/// The key for the store in `dir`, in order: `--key-file`, `GRIDWORK_KEY`, `GRIDWORK_PASSPHRASE`,
/// `DIR/store.key`. None when there is none of them.
pub fn resolve(key_file: Option<&Path>, dir: &Path) -> CliResult<Option<StoreKey>> {
    if let Some(path) = key_file {
        return read_key_file(path).map(Some);
    }
    if let Some(hex_key) = env_nonempty("GRIDWORK_KEY") {
        return parse_hex(hex_key.trim())
            .map(|k| Some(StoreKey::Raw(k)))
            .ok_or_else(|| CliError::user("GRIDWORK_KEY must be 64 hex characters (32 bytes)"));
    }
    if let Some(pass) = env_nonempty("GRIDWORK_PASSPHRASE") {
        return Ok(Some(StoreKey::Passphrase(pass)));
    }
    let default = default_key_path(dir);
    if default.exists() {
        return read_key_file(&default).map(Some);
    }
    Ok(None)
}

pub fn default_key_path(dir: &Path) -> PathBuf {
    dir.join(DEFAULT_KEY_FILE)
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let bytes = hex::decode(s).ok()?;
    bytes.try_into().ok()
}

/// Reads a key file: exactly 32 raw bytes, or 64 hex characters (surrounding whitespace ignored).
pub fn read_key_file(path: &Path) -> CliResult<StoreKey> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::user(format!("cannot read key file {}: {e}", path.display())))?;
    warn_if_readable_by_others(path);
    if bytes.len() == 32 {
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        return Ok(StoreKey::Raw(key));
    }
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| parse_hex(s.trim()))
        .map(StoreKey::Raw)
        .ok_or_else(|| {
            CliError::user(format!(
                "key file {} must hold 32 raw bytes or 64 hex characters",
                path.display()
            ))
        })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: key file {} can be read by other users (chmod 600 it)",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

/// Writes a fresh random 32-byte key to `path` (mode 0600, never overwriting) and returns it.
pub fn create_key_file(path: &Path) -> CliResult<StoreKey> {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| CliError::user(format!("cannot create key file {}: {e}", path.display())))?;
    file.write_all(&key)
        .and_then(|_| file.sync_all())
        .map_err(|e| CliError::user(format!("cannot write key file {}: {e}", path.display())))?;
    Ok(StoreKey::Raw(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_hold_raw_or_hex_keys() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [9u8; 32]).unwrap();
        assert!(matches!(read_key_file(&raw), Ok(StoreKey::Raw(k)) if k == [9u8; 32]));
        let hexf = dir.path().join("hex");
        std::fs::write(&hexf, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(matches!(read_key_file(&hexf), Ok(StoreKey::Raw(k)) if k == [0xab; 32]));
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "short").unwrap();
        assert!(read_key_file(&bad).is_err());
        let created = dir.path().join("new.key");
        assert!(create_key_file(&created).is_ok());
        assert_eq!(std::fs::read(&created).unwrap().len(), 32);
        assert!(create_key_file(&created).is_err(), "never overwrites");
    }
}
