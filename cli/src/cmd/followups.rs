//! `due` and `schedules`: what the follow-up schedules make due, from this device's records and visits.
use crate::ctx::{CliResult, Ctx};
use crate::output::{self, count, Table};
use clap::Args;
use gridwork_core::{time, DueState, FollowupQuery, Kind, NewForMeKind};

pub const EXAMPLES: &str = "\
EXAMPLES:
  gridwork --store ./wang due                     # everything due, overdue first
  gridwork --store ./wang due --overdue --today   # what needs a visit today
  gridwork --store ./zhao due --week --area g2    # one grid of a supervisor's community
  gridwork --store ./wang --json due --at 2026-12-01T09:00:00Z";

#[derive(Args, Debug)]
pub struct DueArgs {
    /// Only follow-ups due before today.
    #[arg(long)]
    pub overdue: bool,
    /// Only follow-ups due today.
    #[arg(long)]
    pub today: bool,
    /// Only follow-ups due in the six days after today.
    #[arg(long)]
    pub week: bool,
    /// Only records in this area's subtree (a grid, a community).
    #[arg(long, value_name = "AREA")]
    pub area: Option<String>,
    /// Only the follow-ups of this worker's grid (a user id): a supervisor's list per worker.
    #[arg(long, value_name = "USER")]
    pub worker: Option<String>,
    /// Judge at this moment (ISO-8601 UTC, e.g. 2026-12-01T09:00:00Z) instead of now.
    #[arg(long, value_name = "TIME", value_parser = parse_at)]
    pub at: Option<i64>,
    #[command(flatten)]
    pub offset: OffsetArg,
}

/// `--utc-offset`, shared by the commands that judge what is due "today".
#[derive(Args, Debug)]
pub struct OffsetArg {
    /// The office's offset from UTC, for what "today" is: +08:00 (China Standard Time) unless given.
    #[arg(
        long,
        value_name = "±HH:MM",
        default_value = "+08:00",
        allow_hyphen_values = true,
        value_parser = offset_minutes
    )]
    pub utc_offset: i32,
}

fn parse_at(s: &str) -> Result<i64, String> {
    time::parse_iso(s).ok_or_else(|| format!("{s:?}: use 2026-12-01T09:00:00Z"))
}

/// `+08:00`, `-05:30`, `+8`, `0` -> minutes east of UTC.
fn offset_minutes(s: &str) -> Result<i32, String> {
    let bad = || format!("UTC offset {s:?}: use +08:00, -05:30 or 0");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'-') => (-1, &s[1..]),
        Some(b'+') => (1, &s[1..]),
        _ => (1, s),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    Ok(sign * (h * 60 + m))
}

pub fn due(ctx: &Ctx, a: &DueArgs) -> CliResult<()> {
    let mut states = Vec::new();
    for (on, state) in [
        (a.overdue, DueState::Overdue),
        (a.today, DueState::Today),
        (a.week, DueState::ThisWeek),
    ] {
        if on {
            states.push(state);
        }
    }
    let query = FollowupQuery {
        area: a.area.clone(),
        states,
        now: a.at,
        utc_offset_minutes: a.offset.utc_offset,
        worker: a.worker.clone(),
    };
    let items = ctx.store.followups(&query)?;
    ctx.print(&items, || {
        if items.is_empty() {
            return "nothing due".into();
        }
        let mut t = Table::new([
            "DUE",
            "WHEN",
            "RECORD",
            "TITLE",
            "AREA",
            "WORKER",
            "LAST VISIT",
            "SCHEDULE",
        ]);
        for f in &items {
            t.row([
                f.state.as_str().replace('_', " "),
                f.due_at
                    .as_deref()
                    .map(output::short_time)
                    .unwrap_or_else(|| "now (never visited)".into()),
                f.record_id.clone(),
                output::truncate(&f.title, 24),
                f.area.clone(),
                if f.workers.is_empty() {
                    "-".to_owned()
                } else {
                    f.workers.join(", ")
                },
                f.last_visit
                    .as_deref()
                    .map(output::short_time)
                    .unwrap_or_else(|| "-".into()),
                output::truncate(&f.schedule_name, 32),
            ]);
        }
        let overdue = items
            .iter()
            .filter(|f| f.state == DueState::Overdue)
            .count();
        format!(
            "{}\n{} ({overdue} overdue); times in UTC\n",
            t.render(),
            count(items.len(), "follow-up")
        )
    });
    Ok(())
}

#[derive(Args, Debug)]
pub struct InboxArgs {
    /// Mark everything listed as seen: it does not come back.
    #[arg(long)]
    pub seen: bool,
    #[command(flatten)]
    pub offset: OffsetArg,
}

/// `inbox`: what is new for this user since they last marked it seen.
pub fn inbox(ctx: &Ctx, a: &InboxArgs) -> CliResult<()> {
    let items = ctx.store.new_for_me(None, a.offset.utc_offset)?;
    if a.seen {
        let keys: Vec<String> = items.iter().map(|i| i.key.clone()).collect();
        ctx.store.mark_new_for_me_seen(&keys)?;
    }
    ctx.print(&items, || {
        if items.is_empty() {
            return "nothing new".into();
        }
        let mut t = Table::new(["WHAT", "RECORD", "TITLE", "WHEN", "BY", "COMMENT"]);
        for i in &items {
            let what = match i.what {
                NewForMeKind::Assigned => "assigned to you",
                NewForMeKind::HandedDown => "handed down",
                NewForMeKind::VisitReturned => "visit returned",
                NewForMeKind::FollowupDue => "follow-up due",
                NewForMeKind::DuplicateFound => "may be a duplicate",
            };
            t.row([
                what.to_owned(),
                i.record_id.clone(),
                output::truncate(&i.title, 24),
                i.at.as_deref()
                    .map(output::short_time)
                    .unwrap_or_else(|| "now".into()),
                i.by.clone().unwrap_or_else(|| "-".into()),
                output::truncate(i.comment.as_deref().unwrap_or("-"), 40),
            ]);
        }
        format!(
            "{}\n{} new{}; times in UTC\n",
            t.render(),
            count(items.len(), "item"),
            if a.seen {
                ", now marked seen"
            } else {
                " (--seen marks them seen)"
            }
        )
    });
    Ok(())
}

pub fn schedules(ctx: &Ctx) -> CliResult<()> {
    let items = ctx.store.schedules()?;
    ctx.print(&items, || {
        if items.is_empty() {
            return "no follow-up schedules (an operator defines them on the relay; they arrive at sync)"
                .into();
        }
        let mut t = Table::new(["ID", "AREA", "KIND", "TAG", "CATEGORY", "EVERY", "NAME"]);
        for s in &items {
            t.row([
                s.id.clone(),
                s.area.clone(),
                s.kind.as_str().into(),
                s.tag.clone().unwrap_or_else(|| "-".into()),
                s.category.clone().unwrap_or_else(|| "-".into()),
                s.every.to_string(),
                s.name.clone(),
            ]);
        }
        t.render()
    });
    Ok(())
}

#[derive(Args, Debug)]
pub struct FormArgs {
    /// The kind of record.
    pub kind: crate::cmd::records::KindArg,
    /// The area (default: your own).
    #[arg(long)]
    pub area: Option<String>,
}

pub fn form(ctx: &Ctx, a: &FormArgs) -> CliResult<()> {
    let kind: Kind = a.kind.into();
    let area = match &a.area {
        Some(area) => area.clone(),
        None => ctx.store.identity().area,
    };
    let fields = ctx.store.form_fields(kind, &area)?;
    ctx.print(&fields, || {
        if fields.is_empty() {
            return format!(
                "no form for {kind} in {area} (an operator defines forms on the relay; they arrive at sync)"
            );
        }
        let mut t = Table::new(["KEY", "LABEL", "TYPE", "REQUIRED", "OPTIONS"]);
        for f in &fields {
            t.row([
                f.key.clone(),
                format!("{} / {}", f.label_zh, f.label_en),
                f.ty.as_str().into(),
                if f.required { "yes" } else { "" }.into(),
                f.options.join(", "),
            ]);
        }
        format!(
            "{}\nfill them with: gridwork add {kind} ... --attr KEY=VALUE\n",
            t.render()
        )
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::offset_minutes;

    #[test]
    fn offsets_parse() {
        assert_eq!(offset_minutes("+08:00"), Ok(480));
        assert_eq!(offset_minutes("-05:30"), Ok(-330));
        assert_eq!(offset_minutes("8"), Ok(480));
        assert_eq!(offset_minutes("0"), Ok(0));
        for bad in ["", "+8h", "+15:00", "+08:75", "x"] {
            assert!(offset_minutes(bad).is_err(), "{bad}");
        }
    }
}

pub const REPORT_EXAMPLES: &str = "\
EXAMPLES:
  gridwork --store ./zhao report person --tag 'lives alone' --format xlsx --out alone.xlsx
  gridwork --store ./zhao report person --area g2 --format csv --out g2-people.csv --unmasked
  gridwork --store ./zhao report visit --from 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z \\
      --format geojson --out november-visits.geojson";

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FormatArg {
    Csv,
    Xlsx,
    Geojson,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The kind of record to export.
    pub kind: crate::cmd::records::KindArg,
    /// csv (UTF-8 with BOM, opens in spreadsheet programs), xlsx, or geojson (places and visits).
    #[arg(long, value_enum)]
    pub format: FormatArg,
    /// The file to write (created with mode 0600: it holds personal data).
    #[arg(long, value_name = "FILE")]
    pub out: std::path::PathBuf,
    /// Only records in this area's subtree.
    #[arg(long, value_name = "AREA")]
    pub area: Option<String>,
    /// Only records with this tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Visits by start, events by report time: from this moment (ISO-8601 UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_at)]
    pub from: Option<i64>,
    /// ... until this moment (exclusive).
    #[arg(long, value_name = "TIME", value_parser = parse_at)]
    pub until: Option<i64>,
    /// ID numbers in full (supervisors and operators only; lists and exports mask them otherwise).
    #[arg(long)]
    pub unmasked: bool,
}

/// `report`: a list exported to a file for a spreadsheet, another department or a map.
pub fn report(ctx: &Ctx, a: &ReportArgs) -> CliResult<()> {
    let query = gridwork_core::ExportQuery {
        kind: a.kind.into(),
        area: a.area.clone(),
        tag: a.tag.clone(),
        from: a.from,
        until: a.until,
        unmasked: a.unmasked,
    };
    let format = match a.format {
        FormatArg::Csv => gridwork_core::ExportFormat::Csv,
        FormatArg::Xlsx => gridwork_core::ExportFormat::Xlsx,
        FormatArg::Geojson => gridwork_core::ExportFormat::GeoJson,
    };
    let bytes = ctx.store.export_records(&query, format)?;
    crate::cmd::write_private(&a.out, &bytes)?;
    let path = a.out.display().to_string();
    ctx.print(
        &serde_json::json!({"file": path, "bytes": bytes.len()}),
        || format!("wrote {path} ({} bytes)", bytes.len()),
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// An area's subtree (default: everything on this device).
    #[arg(long, value_name = "AREA")]
    pub area: Option<String>,
    /// Period start (ISO-8601 UTC): visits by start, events by report, escalations by time.
    #[arg(long, value_name = "TIME", value_parser = parse_at)]
    pub from: Option<i64>,
    /// Period end (exclusive).
    #[arg(long, value_name = "TIME", value_parser = parse_at)]
    pub until: Option<i64>,
    /// Judge open, overdue and up to date at this moment instead of now.
    #[arg(long, value_name = "TIME", value_parser = parse_at)]
    pub at: Option<i64>,
}

/// `stats`: the numbers a supervisor is assessed on, for an area and period, as the relay counts them.
pub fn stats(ctx: &Ctx, a: &StatsArgs) -> CliResult<()> {
    let s = ctx.store.statistics(&gridwork_core::stats::StatsQuery {
        area: a.area.clone(),
        from: a.from,
        until: a.until,
        at: a.at,
    })?;
    ctx.print(&s, || {
        let mut out = String::new();
        let mut t = Table::new(["KIND", "RECORDS"]);
        for (k, n) in &s.records_per_kind {
            t.row([k.clone(), n.to_string()]);
        }
        out.push_str(&t.render());
        let mut t = Table::new(["WORKER", "VISITS"]);
        for (w, n) in &s.visits_per_worker {
            t.row([w.clone(), n.to_string()]);
        }
        out.push_str(&format!("\n{}", t.render()));
        let mut t = Table::new(["EVENT CATEGORY", "REPORTED", "OPEN", "OVERDUE", "CLOSED"]);
        for (c, e) in &s.events_by_category {
            t.row([
                c.clone(),
                e.reported.to_string(),
                e.open.to_string(),
                e.overdue.to_string(),
                e.closed.to_string(),
            ]);
        }
        out.push_str(&format!("\n{}", t.render()));
        let mut t = Table::new(["ESCALATED TO", "COUNT"]);
        for (l, n) in &s.escalations_per_level {
            t.row([l.clone(), n.to_string()]);
        }
        out.push_str(&format!("\n{}", t.render()));
        let median = s.median_close_secs.map_or("-".to_owned(), |m| {
            format!("{}h {:02}m", m / 3600, m % 3600 / 60)
        });
        out.push_str(&format!("\nmedian time from report to close: {median}\n"));
        let mut t = Table::new(["SCHEDULE", "RECORDS", "UP TO DATE", "SHARE"]);
        for c in &s.coverage {
            t.row([
                output::truncate(&c.name, 40),
                c.records.to_string(),
                c.up_to_date.to_string(),
                format!("{:.0}%", c.share * 100.0),
            ]);
        }
        out.push_str(&format!("\n{}", t.render()));
        out
    });
    Ok(())
}
