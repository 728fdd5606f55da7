//! History and merge state: `history`, `conflicts`, `resolve`, `export`, `outbox`, `quarantine`.
use super::records::human_size;
use crate::ctx::{CliError, CliResult, Ctx};
use crate::output::{self, count, Table};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::PathBuf;

pub const RESOLVE_EXAMPLES: &str = "\
FIELDS: a field of the record's kind (`phone`), `attrs.<key>`, `area`, `responsible` or `deleted`.

EXAMPLES:
  gridwork --store ./wang conflicts
  gridwork --store ./wang resolve 0190f3a2... phone '+86 138 0013 8000'
  gridwork --store ./wang resolve 0190f3a2... attrs.hukou local";

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The record's id.
    pub id: String,
}

#[derive(Args, Debug)]
pub struct ResolveArgs {
    /// The record's id.
    pub id: String,
    /// The conflicted field.
    pub field: String,
    /// The value to keep (one of the concurrent values, or a new one).
    pub value: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The record's id.
    pub id: String,
    /// Where to write the document (created with mode 0600: it holds personal data).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub const QUARANTINE_EXAMPLES: &str = "\
EXAMPLES:
  gridwork --store ./wang quarantine                 # what the relay refused, and why
  gridwork --store ./wang quarantine discard 3f9a... # back to the relay's version; later edits re-applied
  gridwork --store ./wang sync                       # push the re-applied edits";

#[derive(Args, Debug)]
pub struct QuarantineArgs {
    #[command(subcommand)]
    pub command: Option<QuarantineCommand>,
}

#[derive(Subcommand, Debug)]
pub enum QuarantineCommand {
    /// List the quarantined changes (the default).
    List,
    /// Discard a refused change (its full hash, or a unique prefix of it): the record returns to the
    /// relay's version, and the later edits the rules still allow are made again and wait in the
    /// outbox; those no longer allowed are listed as dropped.
    Discard {
        /// The change's hash, as `quarantine` lists it.
        hash: String,
    },
}

#[derive(Args, Debug)]
pub struct OutboxArgs {
    /// List at most this many changes.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u32,
}

pub fn history(ctx: &Ctx, args: &HistoryArgs) -> CliResult<()> {
    let entries = ctx.store.history(&args.id)?;
    ctx.print(&entries, || {
        let value = |v: &Option<String>| match v {
            Some(v) => output::truncate(&v.replace('\n', " "), 40),
            None => "-".into(),
        };
        let mut out = String::new();
        for h in &entries {
            out.push_str(&format!(
                "{}  {}  {}  {}  {}\n",
                output::short_time(&gridwork_core::time::iso_from_secs(h.time)),
                h.user,
                h.device,
                h.action,
                h.hash.chars().take(12).collect::<String>(),
            ));
            let width = h.changes.iter().map(|c| c.field.len()).max().unwrap_or(0);
            for c in &h.changes {
                out.push_str(&format!(
                    "    {:<width$}  {} -> {}\n",
                    c.field,
                    value(&c.old),
                    value(&c.new)
                ));
            }
        }
        format!("{out}{} (times in UTC)\n", count(entries.len(), "change"))
    });
    Ok(())
}

pub fn conflicts(ctx: &Ctx) -> CliResult<()> {
    let all = ctx.store.conflicts()?;
    ctx.print(&all, || {
        if all.is_empty() {
            return "no conflicts".into();
        }
        let mut out = String::new();
        for c in &all {
            out.push_str(&format!(
                "{} {}  field `{}`\n",
                c.kind, c.record_id, c.field
            ));
            let mut t = Table::new(["", "VALUE", "BY", "DEVICE", "WHEN"]);
            for v in &c.values {
                // A merge of duplicates left it: the kept record's value and the merged one's.
                let (by, device, when) = match (
                    &v.merged_from,
                    c.values.iter().any(|x| x.merged_from.is_some()),
                ) {
                    (Some(from), _) => (format!("merged {from}"), String::new(), String::new()),
                    (None, true) => ("kept record".to_owned(), String::new(), String::new()),
                    (None, false) => (v.user.clone(), v.device.clone(), output::secs_time(v.time)),
                };
                t.row([
                    if v.winner { "*" } else { "" }.to_owned(),
                    v.value.clone(),
                    by,
                    device,
                    when,
                ]);
            }
            for line in t.render().lines() {
                out.push_str(&format!("  {line}\n"));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "{}; * marks the value shown now. Settle one with `gridwork resolve ID FIELD VALUE`.\n",
            count(all.len(), "conflict")
        ));
        out
    });
    Ok(())
}

pub fn resolve(ctx: &Ctx, args: &ResolveArgs) -> CliResult<()> {
    ctx.store
        .resolve_conflict(&args.id, &args.field, &args.value)?;
    let value = serde_json::json!({ "id": args.id, "field": args.field, "result": "resolved" });
    ctx.print(&value, || {
        format!("resolved `{}` of {}", args.field, args.id)
    });
    Ok(())
}

pub fn export(ctx: &Ctx, args: &ExportArgs) -> CliResult<()> {
    let bytes = ctx.store.export_document(&args.id)?;
    super::write_private(&args.out, &bytes)?;
    let value = serde_json::json!({ "id": args.id, "path": args.out, "bytes": bytes.len() });
    ctx.print(&value, || {
        format!(
            "wrote {} ({}) to {}",
            args.id,
            human_size(bytes.len() as u64),
            args.out.display()
        )
    });
    Ok(())
}

#[derive(Serialize)]
struct OutboxRow {
    seq: i64,
    record_id: String,
    hash: String,
    size: usize,
}

pub fn outbox(ctx: &Ctx, args: &OutboxArgs) -> CliResult<()> {
    let total = ctx.store.outbox_len()?;
    let rows: Vec<OutboxRow> = ctx
        .store
        .outbox(args.limit)?
        .into_iter()
        .map(|c| OutboxRow {
            seq: c.seq,
            size: c.bytes.len(),
            record_id: c.record_id,
            hash: c.hash,
        })
        .collect();
    let value = serde_json::json!({ "count": total, "changes": rows });
    ctx.print(&value, || {
        if total == 0 {
            return "outbox is empty: everything is pushed".into();
        }
        let mut t = Table::new(["SEQ", "ID", "CHANGE", "SIZE"]);
        for r in &rows {
            t.row([
                r.seq.to_string(),
                r.record_id.clone(),
                r.hash.chars().take(12).collect(),
                human_size(r.size as u64),
            ]);
        }
        let mut out = format!(
            "{} waiting to be pushed\n\n{}",
            count(total as usize, "change"),
            t.render()
        );
        if (rows.len() as u64) < total {
            out.push_str(&format!(
                "(showing the first {}; --limit N for more)\n",
                rows.len()
            ));
        }
        out
    });
    Ok(())
}

pub fn quarantine(ctx: &Ctx, args: &QuarantineArgs) -> CliResult<()> {
    match &args.command {
        None | Some(QuarantineCommand::List) => quarantine_list(ctx),
        Some(QuarantineCommand::Discard { hash }) => quarantine_discard(ctx, hash),
    }
}

fn quarantine_list(ctx: &Ctx) -> CliResult<()> {
    let items = ctx.store.quarantined()?;
    ctx.print(&items, || {
        if items.is_empty() {
            return "quarantine is empty: the relay refused nothing".into();
        }
        let mut out = String::new();
        for q in &items {
            out.push_str(&format!(
                "{}  {}  record {}  {}\n  {}\n\n",
                output::short_time(&gridwork_core::time::iso_from_secs(q.at)),
                q.hash,
                q.record_id,
                q.reason,
                q.message
            ));
        }
        out.push_str(&format!(
            "{} in quarantine; `gridwork quarantine discard HASH` returns a record to the relay's version\n",
            count(items.len(), "change")
        ));
        out
    });
    Ok(())
}

fn quarantine_discard(ctx: &Ctx, hash: &str) -> CliResult<()> {
    let wanted = hash.trim().to_ascii_lowercase();
    let matching: Vec<String> = ctx
        .store
        .quarantined()?
        .into_iter()
        .map(|q| q.hash)
        .filter(|h| !wanted.is_empty() && h.starts_with(&wanted))
        .collect();
    let full = match matching.as_slice() {
        [one] => one.clone(),
        [] => return Err(CliError::user(format!("no quarantined change {wanted}"))),
        _ => {
            return Err(CliError::user(format!(
                "{} quarantined changes start with {wanted}: give more of the hash",
                matching.len()
            )))
        }
    };
    let report = ctx.store.discard_quarantined(&full)?;
    ctx.print(&report, || {
        let mut out = format!(
            "discarded {} change(s) of record {}",
            report.removed.len(),
            report.record_id
        );
        if report.record_removed {
            out.push_str("; the record is no longer on this device");
        } else {
            out.push_str(" (back to the relay's version)");
        }
        if !report.reapplied.is_empty() {
            out.push_str(&format!(
                "\nre-applied {} later edit(s): they wait in the outbox for the next sync",
                report.reapplied.len()
            ));
        }
        for d in &report.dropped {
            out.push_str(&format!(
                "\ndropped the later `{}` ({}): {} ({})",
                d.action,
                d.hash.chars().take(12).collect::<String>(),
                d.detail,
                d.reason
            ));
        }
        out
    });
    Ok(())
}
