//! Opening the store, the error type and exit codes.
use crate::key;
use crate::output;
use gridwork_core::{Error, Kind, Store, StoreKey, StoreOptions};
use std::path::{Path, PathBuf};

/// The database file inside the store directory.
pub const DB_FILE: &str = "gridwork.db";

/// A failure the user can act on. Exit code 1; clap's usage errors exit with 2 before we get here.
#[derive(Debug)]
pub struct CliError {
    message: String,
}

pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    pub fn user(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
        }
    }
    pub fn exit_code(&self) -> u8 {
        1
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Core errors name ids, fields and reasons, never personal values, so they are safe to print.
/// A few get a hint about what to do next.
impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        let hint = match &e {
            Error::UnknownField { kind, .. } => Kind::parse(kind).map(|k| {
                format!(
                    " (fields of a {kind}: {})",
                    k.fields()
                        .iter()
                        .filter(|f| !f.managed)
                        .map(|f| f.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
            Error::WrongKeyOrNotAStore => {
                Some(" (check --key-file, GRIDWORK_KEY or GRIDWORK_PASSPHRASE)".to_owned())
            }
            Error::UnknownArea(_) => Some(" (see `gridwork area list`)".to_owned()),
            Error::Wiped(_) => Some(
                " (remove the store directory, then `gridwork init --server URL --token TOKEN`)"
                    .to_owned(),
            ),
            _ => None,
        };
        CliError::user(format!("{e}{}", hint.unwrap_or_default()))
    }
}

/// The global options, before the store is opened.
pub struct Globals {
    pub dir: PathBuf,
    pub json: bool,
    pub key_file: Option<PathBuf>,
}

impl Globals {
    pub fn db_path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }
}

/// An open store and how to print.
pub struct Ctx {
    pub store: Store,
    pub json: bool,
}

pub fn no_key_error(dir: &Path) -> CliError {
    CliError::user(format!(
        "no store key: give --key-file, set GRIDWORK_KEY or GRIDWORK_PASSPHRASE (no {} found)",
        key::default_key_path(dir).display()
    ))
}

impl Ctx {
    /// Opens an existing store. A missing store is an error, not an empty new file.
    pub fn open(globals: Globals) -> CliResult<Ctx> {
        let db = globals.db_path();
        if !db.exists() {
            return Err(CliError::user(format!(
                "no Gridwork store in {}: create one with `gridwork --store {} init ...`",
                globals.dir.display(),
                globals.dir.display()
            )));
        }
        let key: StoreKey = key::resolve(globals.key_file.as_deref(), &globals.dir)?
            .ok_or_else(|| no_key_error(&globals.dir))?;
        let store = Store::open(StoreOptions::new(db, key))?;
        Ok(Ctx {
            store,
            json: globals.json,
        })
    }

    /// Prints a value as JSON (with --json) or the human text built by `human`.
    pub fn print<T: serde::Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            output::print_json(value);
        } else {
            output::emit(&human());
        }
    }
}

/// Logs go to stderr, off unless GRIDWORK_LOG is set (e.g. GRIDWORK_LOG=debug). The core logs ids and
/// counts, never personal values.
pub fn init_logging() {
    if let Ok(filter) = std::env::var("GRIDWORK_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}
