//! `gridwork`: the terminal client on the Gridwork core.
//!
//! Layout:
//! - `main.rs`: the top-level [`Cli`] (global options), the [`Command`] enum (one variant per command or
//!   command group) and [`run`], which opens the store and dispatches to a module of `cmd/`.
//! - `cmd/*.rs`: one module per command group; each defines its clap `Args`/`Subcommand` types and a
//!   `run(&Ctx, ...)` function.
//! - `ctx.rs`: opening the store (paths, keys), the error type and exit codes.
//! - `key.rs`: where the store key comes from.
//! - `output.rs`: tables, dates, masking of sensitive values, JSON printing.
//!
//! Adding a command group (e.g. `sync`, `demo`): write `cmd/sync.rs` with `SyncArgs` and
//! `pub fn run(ctx: &Ctx, args: &SyncArgs) -> CliResult<()>`, add `Sync(cmd::sync::SyncArgs)` to
//! [`Command`], and one arm to the `match` in [`run`]. Commands that must not open the store
//! (like `init`, or a `demo` that creates its own stores) are handled before the store is opened.
mod cmd;
mod ctx;
mod key;
mod output;

use clap::{CommandFactory, Parser, Subcommand};
use ctx::{CliResult, Ctx, Globals};
use std::path::PathBuf;
use std::process::ExitCode;

const ABOUT: &str =
    "Gridwork terminal client: records, visits and events of neighbourhood grid work, \
offline, in an encrypted store";

const LONG_ABOUT: &str = "\
Gridwork terminal client: records, visits and events of neighbourhood grid work, kept offline in an \
encrypted store (SQLCipher) and merged with Automerge.

Every command works on the store in --store DIR (the database is DIR/gridwork.db).

THE STORE KEY, in order of precedence:
  --key-file PATH        a file holding 32 raw bytes or 64 hex characters
  GRIDWORK_KEY           environment variable: 64 hex characters (a raw 256-bit key)
  GRIDWORK_PASSPHRASE    environment variable: a passphrase (slower to open: key derivation)
  DIR/store.key          the key file `init` writes when no key is given

The key file next to the store is for demos and development only: anyone who can read the directory can \
read the store. A real device keeps the key in the platform keystore (Android Keystore, iOS Keychain) \
and hands it to the store when it opens.

Times are shown in UTC. With --json, read commands print JSON for scripts; errors go to stderr as \
`error: <message>` with exit code 1 (2 for usage errors).";

const EXAMPLES: &str = "\
EXAMPLES:
  gridwork --store ./wang init --server https://relay.example.org --token gw_... --remember
  gridwork --store ./wang init --user wang --device wang-phone --role worker --area g1   # offline
  gridwork --store ./wang area add d1 --level district --name 'East District'
  gridwork --store ./wang area add g1 --level grid --name 'Grid 1' --parent c1
  gridwork --store ./wang add person --area g1 --set name=王小明 --set sex=male --tag 'lives alone'
  gridwork --store ./wang list person --area g1 --tag 'lives alone'
  gridwork --store ./wang search 小明
  gridwork --store ./wang --json show 0190f3a2c4e1...";

#[derive(Parser, Debug)]
#[command(
    name = "gridwork",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = EXAMPLES,
    propagate_version = true,
    max_term_width = 110
)]
pub struct Cli {
    /// The store directory (holds gridwork.db and, for demos, store.key).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "GRIDWORK_STORE",
        help_heading = "Global options"
    )]
    store: Option<PathBuf>,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,

    /// Read the store key from this file: 32 raw bytes or 64 hex characters.
    /// Without it: GRIDWORK_KEY, GRIDWORK_PASSPHRASE, then DIR/store.key.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global options"
    )]
    key_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new store for one user on one device: from the relay's answer for a device token, or
    /// offline (the relay's answer replaces role, area and device at the first sync).
    #[command(after_long_help = cmd::setup::INIT_EXAMPLES)]
    Init(cmd::setup::InitArgs),
    /// The area tree: district > street > community > grid.
    #[command(subcommand)]
    Area(cmd::setup::AreaCommand),
    /// Show who this store belongs to and what waits to be synced.
    Whoami,

    /// Add a person, place, object, organisation or event; prints the new id.
    #[command(after_long_help = cmd::records::ADD_EXAMPLES)]
    Add(cmd::records::AddArgs),
    /// Edit fields, attributes, tags and notes of a record.
    #[command(after_long_help = cmd::records::EDIT_EXAMPLES)]
    Edit(cmd::records::EditArgs),
    /// Show everything about one record: fields, attributes, tags, links, notes, timeline, conflicts.
    Show(cmd::records::ShowArgs),
    /// List records of one kind, with filters.
    #[command(after_long_help = cmd::records::LIST_EXAMPLES)]
    List(cmd::records::ListArgs),
    /// Full-text search over names, addresses, titles and notes (Chinese and Latin text).
    #[command(after_long_help = cmd::records::SEARCH_EXAMPLES)]
    Search(cmd::records::SearchArgs),
    /// Delete a record (a tombstone: it stays in history and can be restored).
    Delete(cmd::records::DeleteArgs),
    /// Bring back a deleted record.
    Restore(cmd::records::IdArg),
    /// Move a record to another home area.
    Move(cmd::records::MoveArgs),
    /// Move a household: a place and the people living there, in one go (all of it or none).
    MoveHousehold(cmd::records::MoveHouseholdArgs),
    /// Link two records, e.g. a person `lives_at` a place.
    #[command(after_long_help = cmd::records::LINK_EXAMPLES)]
    Link(cmd::records::LinkArgs),
    /// Remove a link between two records.
    Unlink(cmd::records::LinkArgs),

    /// Visits: start, record what was visited, answer the checklist, attach photos, finish, review.
    #[command(subcommand, after_long_help = cmd::visits::EXAMPLES)]
    Visit(cmd::visits::VisitCommand),
    /// Events: the lifecycle reported > assigned > in progress > resolved > verified > closed.
    #[command(subcommand, after_long_help = cmd::events::EXAMPLES)]
    Event(cmd::events::EventCommand),
    /// Follow-up visits due under the schedules, overdue first: by state (overdue, today, this week)
    /// and area.
    #[command(after_long_help = cmd::followups::EXAMPLES)]
    Due(cmd::followups::DueArgs),
    /// The follow-up schedules this device has from the relay.
    Schedules,
    /// People, places and organisations that may be registered twice (same ID number; same name with
    /// the same birth date, home, address, place or phone; names compared by pinyin too).
    Duplicates(cmd::records::DuplicatesArgs),
    /// Merge a duplicate into the record kept: gaps filled, differing values left as conflicts to
    /// resolve, links moved, the other a tombstone that says where it went.
    Merge(cmd::records::MergeArgs),
    /// Record that two records are not duplicates: the pair is not listed again, on any device.
    NotDuplicate(cmd::records::NotDuplicateArgs),
    /// The city form of a kind in an area: the attributes to fill, with their types, options and
    /// whether they are required (an operator defines forms on the relay; they arrive at sync).
    Form(cmd::followups::FormArgs),
    /// What is new for you: events assigned or handed down to you, your visits returned, follow-ups
    /// due. `--seen` marks them seen.
    Inbox(cmd::followups::InboxArgs),
    /// Export a kind's records (by area, tag, period) to CSV, XLSX or GeoJSON for a spreadsheet,
    /// another department or a map.
    #[command(after_long_help = cmd::followups::REPORT_EXAMPLES)]
    Report(cmd::followups::ReportArgs),
    /// Statistics of an area and period: records, visits per worker, events by category, escalations,
    /// time to close, follow-up coverage (the relay counts the same with GET /v1/stats).
    Stats(cmd::followups::StatsArgs),

    /// Who changed a record, when, and what.
    History(cmd::changes::HistoryArgs),
    /// Fields edited concurrently on two devices, with every value, until someone resolves them.
    Conflicts,
    /// Resolve a conflict by choosing the value of a field (the choice syncs like any edit).
    #[command(after_long_help = cmd::changes::RESOLVE_EXAMPLES)]
    Resolve(cmd::changes::ResolveArgs),
    /// Write a record's Automerge document (standard Automerge bytes) to a file.
    Export(cmd::changes::ExportArgs),
    /// Local changes not yet pushed to the relay.
    Outbox(cmd::changes::OutboxArgs),
    /// Local changes the relay refused, with its reasons; `discard HASH` returns the record to the
    /// relay's version and re-applies the later edits that are still allowed.
    #[command(after_long_help = cmd::changes::QUARANTINE_EXAMPLES)]
    Quarantine(cmd::changes::QuarantineArgs),

    /// Push local changes to the relay and pull everyone else's, with a progress bar.
    #[command(after_long_help = cmd::sync::EXAMPLES)]
    Sync(cmd::sync::SyncArgs),
    /// Download an attachment (e.g. a visit photo) from the relay on demand.
    Fetch(cmd::sync::FetchArgs),
    /// Run the whole system in one command: an embedded relay, two grid workers and a supervisor
    /// working offline, syncing, merging and resolving a conflict. Needs no --store.
    Demo(cmd::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ctx::init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> CliResult<()> {
    if let Command::Demo(args) = &cli.command {
        return cmd::demo::run(args);
    }
    let Some(dir) = cli.store.clone() else {
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "the store directory is required: --store DIR (or GRIDWORK_STORE)",
            )
            .exit();
    };
    let globals = Globals {
        dir: dir.clone(),
        json: cli.json,
        key_file: cli.key_file.clone(),
    };
    // Commands that create or do not need an open store.
    if let Command::Init(args) = &cli.command {
        return cmd::setup::init(&globals, args);
    }
    let ctx = Ctx::open(globals)?;
    match &cli.command {
        Command::Init(_) => unreachable!("handled above"),
        Command::Area(c) => cmd::setup::area(&ctx, c),
        Command::Whoami => cmd::setup::whoami(&ctx),
        Command::Add(a) => cmd::records::add(&ctx, a),
        Command::Edit(a) => cmd::records::edit(&ctx, a),
        Command::Show(a) => cmd::records::show(&ctx, a),
        Command::List(a) => cmd::records::list(&ctx, a),
        Command::Search(a) => cmd::records::search(&ctx, a),
        Command::Delete(a) => cmd::records::delete(&ctx, a),
        Command::Restore(a) => cmd::records::restore(&ctx, a),
        Command::Move(a) => cmd::records::move_record(&ctx, a),
        Command::MoveHousehold(a) => cmd::records::move_household(&ctx, a),
        Command::Link(a) => cmd::records::link(&ctx, a, true),
        Command::Unlink(a) => cmd::records::link(&ctx, a, false),
        Command::Visit(c) => cmd::visits::run(&ctx, c),
        Command::Event(c) => cmd::events::run(&ctx, c),
        Command::Due(a) => cmd::followups::due(&ctx, a),
        Command::Schedules => cmd::followups::schedules(&ctx),
        Command::Duplicates(a) => cmd::records::duplicates(&ctx, a),
        Command::Merge(a) => cmd::records::merge(&ctx, a),
        Command::NotDuplicate(a) => cmd::records::not_duplicate(&ctx, a),
        Command::Form(a) => cmd::followups::form(&ctx, a),
        Command::Inbox(a) => cmd::followups::inbox(&ctx, a),
        Command::Report(a) => cmd::followups::report(&ctx, a),
        Command::Stats(a) => cmd::followups::stats(&ctx, a),
        Command::History(a) => cmd::changes::history(&ctx, a),
        Command::Conflicts => cmd::changes::conflicts(&ctx),
        Command::Resolve(a) => cmd::changes::resolve(&ctx, a),
        Command::Export(a) => cmd::changes::export(&ctx, a),
        Command::Outbox(a) => cmd::changes::outbox(&ctx, a),
        Command::Quarantine(a) => cmd::changes::quarantine(&ctx, a),
        Command::Sync(a) => cmd::sync::sync(&ctx, &dir, a),
        Command::Fetch(a) => cmd::sync::fetch(&ctx, &dir, a),
        Command::Demo(_) => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
