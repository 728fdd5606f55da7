//! History and merge state: `history`, `conflicts`, `resolve`, `export`, `outbox`, `quarantine`.
use super::records::human_size;
use crate::ctx::{CliResult, Ctx};
use crate::output::{self, count, Table};
use clap::Args;
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

#[derive(Args, Debug)]
pub struct OutboxArgs {
    /// List at most this many changes.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u32,
}

pub fn history(ctx: &Ctx, args: &HistoryArgs) -> CliResult<()> {
    let entries = ctx.store.history(&args.id)?;
    ctx.print(&entries, || {
        let mut t = Table::new(["WHEN (UTC)", "USER", "DEVICE", "ACTION", "FIELDS", "CHANGE"]);
        for h in &entries {
            t.row([
                output::short_time(&gridwork_core::time::iso_from_secs(h.time)),
                h.user.clone(),
                h.device.clone(),
                h.action.clone(),
                h.fields.join(", "),
                h.hash.chars().take(12).collect(),
            ]);
        }
        format!("{}\n{}\n", t.render(), count(entries.len(), "change"))
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
                t.row([
                    if v.winner { "*" } else { "" }.to_owned(),
                    v.value.clone(),
                    v.user.clone(),
                    v.device.clone(),
                    output::secs_time(v.time),
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

pub fn quarantine(ctx: &Ctx) -> CliResult<()> {
    let items = ctx.store.quarantined()?;
    ctx.print(&items, || {
        if items.is_empty() {
            return "quarantine is empty: the relay refused nothing".into();
        }
        let mut t = Table::new(["WHEN (UTC)", "ID", "CHANGE", "REASON"]);
        for q in &items {
            t.row([
                output::short_time(&gridwork_core::time::iso_from_secs(q.at)),
                q.record_id.clone(),
                q.hash.chars().take(12).collect(),
                q.reason.clone(),
            ]);
        }
        format!(
            "{}\n{} refused by the relay (kept in the records: nothing is lost)\n",
            t.render(),
            count(items.len(), "change")
        )
    });
    Ok(())
}
