//! Records of every kind: `add`, `edit`, `show`, `list`, `search`, `delete`, `restore`, `move`,
//! `link`, `unlink`.
use super::{done, parse_key_value};
use crate::ctx::{CliError, CliResult, Ctx};
use crate::output::{self, count, Table};
use clap::{Args, ValueEnum};
use gridwork_core::{
    mask, time, FieldType, Kind, LinkType, ListQuery, NewRecord, Record, Update, ValueState,
};
use std::collections::BTreeMap;
use unicode_width::UnicodeWidthStr;

pub const ADD_EXAMPLES: &str = "\
FIELDS (set with --set FIELD=VALUE):
  person         name*, sex (female|male|other|unknown), birth_date (YYYY-MM-DD), phone,
                 id_number (sensitive: masked in lists), home_place (a place id)
  place          name*, category (building|unit|shop|site), address, lat, lon, parent_place
  object         name*, category (facility|hazard|equipment|vehicle), place, condition
                 (good|fair|poor|broken), last_inspection (YYYY-MM-DD)
  organisation   name*, category (company|shop|association|committee), contact_name,
                 contact_phone, place
  event          title*, category (incident|dispute|hazard_report|service_request),
                 priority (low|normal|high|urgent), due (YYYY-MM-DDTHH:MM:SSZ, UTC)
  (* required.) Anything else a city's forms need goes in --attr KEY=VALUE.

EXAMPLES:
  gridwork --store ./wang add place --area g1 --set name='Block 3' --set category=building \\
      --set address=幸福路12号
  gridwork --store ./wang add person --area g1 --set name=王小明 --set sex=male \\
      --set birth_date=1948-03-02 --tag 'lives alone' --attr hukou=local --notes 'Weekly call.'
  gridwork --store ./wang add event --area g1 --set title='Broken stair light' \\
      --set category=hazard_report --set priority=high --set due=2026-12-01T18:00:00Z";

pub const EDIT_EXAMPLES: &str = "\
EXAMPLES:
  gridwork --store ./wang edit 0190f3a2... --set phone='+86 138 0013 8000' --tag 'needs care'
  gridwork --store ./wang edit 0190f3a2... --set sex= --unset-attr hukou --untag 'lives alone'
  (--set FIELD= with nothing after `=` clears the field.)";

pub const LIST_EXAMPLES: &str = "\
EXAMPLES:
  gridwork --store ./wang list person
  gridwork --store ./wang list person --area c1                # c1 and every grid below it
  gridwork --store ./wang list person --area c1 --only-area    # records homed in c1 itself
  gridwork --store ./wang list event --where status=assigned --where priority=high
  gridwork --store ./wang list person --tag 'lives alone' --text 王
  gridwork --store ./wang --json list place --limit 20 --offset 20";

pub const SEARCH_EXAMPLES: &str = "\
EXAMPLES:
  gridwork --store ./wang search 小明            # any fragment of Chinese text
  gridwork --store ./wang search smi             # Latin word prefixes, any case
  gridwork --store ./wang search 幸福路 --kind place";

pub const LINK_EXAMPLES: &str = "\
LINK TYPES:
  lives_at      person -> place
  member_of     person -> organisation
  located_at    object | organisation | event -> place
  involved_in   person | place | object | organisation -> event
  owns          person | organisation -> object | place

EXAMPLES:
  gridwork --store ./wang link <PERSON-ID> lives_at <PLACE-ID>
  gridwork --store ./wang unlink <PERSON-ID> lives_at <PLACE-ID>";

/// The kinds `add` creates (visits start with `visit start`).
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum AddKind {
    Person,
    Place,
    Object,
    #[value(alias = "organization", alias = "org")]
    Organisation,
    Event,
}

impl From<AddKind> for Kind {
    fn from(k: AddKind) -> Kind {
        match k {
            AddKind::Person => Kind::Person,
            AddKind::Place => Kind::Place,
            AddKind::Object => Kind::Object,
            AddKind::Organisation => Kind::Organisation,
            AddKind::Event => Kind::Event,
        }
    }
}

/// Every record kind.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum KindArg {
    Person,
    Place,
    Object,
    #[value(alias = "organization", alias = "org")]
    Organisation,
    Event,
    Visit,
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Kind {
        match k {
            KindArg::Person => Kind::Person,
            KindArg::Place => Kind::Place,
            KindArg::Object => Kind::Object,
            KindArg::Organisation => Kind::Organisation,
            KindArg::Event => Kind::Event,
            KindArg::Visit => Kind::Visit,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
#[value(rename_all = "snake_case")]
pub enum LinkArg {
    #[value(alias = "lives-at")]
    LivesAt,
    #[value(alias = "member-of")]
    MemberOf,
    #[value(alias = "located-at")]
    LocatedAt,
    #[value(alias = "involved-in")]
    InvolvedIn,
    Owns,
}

impl From<LinkArg> for LinkType {
    fn from(l: LinkArg) -> LinkType {
        match l {
            LinkArg::LivesAt => LinkType::LivesAt,
            LinkArg::MemberOf => LinkType::MemberOf,
            LinkArg::LocatedAt => LinkType::LocatedAt,
            LinkArg::InvolvedIn => LinkType::InvolvedIn,
            LinkArg::Owns => LinkType::Owns,
        }
    }
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// What to add.
    #[arg(value_enum)]
    pub kind: AddKind,
    /// The record's home area (decides who receives it).
    #[arg(long, value_name = "AREA")]
    pub area: String,
    /// Set a field: FIELD=VALUE (repeatable). See the field list below.
    #[arg(long = "set", value_name = "FIELD=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Set a custom attribute: KEY=VALUE (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub attr: Vec<(String, String)>,
    /// Add a tag, e.g. 'lives alone' (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tag: Vec<String>,
    /// Free-text notes.
    #[arg(long, value_name = "TEXT")]
    pub notes: Option<String>,
}

#[derive(Args, Debug)]
pub struct EditArgs {
    /// The record's id.
    pub id: String,
    /// Set a field: FIELD=VALUE; `FIELD=` clears it (repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Set a custom attribute: KEY=VALUE (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub attr: Vec<(String, String)>,
    /// Remove a custom attribute (repeatable).
    #[arg(long = "unset-attr", value_name = "KEY")]
    pub unset_attr: Vec<String>,
    /// Add a tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tag: Vec<String>,
    /// Remove a tag (repeatable).
    #[arg(long = "untag", value_name = "TAG")]
    pub untag: Vec<String>,
    /// Replace the notes (merged character by character with concurrent edits).
    #[arg(long, value_name = "TEXT")]
    pub notes: Option<String>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The record's id.
    pub id: String,
}

#[derive(Args, Debug)]
pub struct IdArg {
    /// The record's id.
    pub id: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// The kind of record to list.
    #[arg(value_enum)]
    pub kind: KindArg,
    /// Only records of this area and the areas below it (events also by responsible area).
    #[arg(long, value_name = "AREA")]
    pub area: Option<String>,
    /// With --area: only that area itself, not the areas below it.
    #[arg(long, requires = "area")]
    pub only_area: bool,
    /// Only records whose field equals a value: FIELD=VALUE (repeatable, all must match).
    #[arg(long = "where", value_name = "FIELD=VALUE", value_parser = parse_key_value)]
    pub filters: Vec<(String, String)>,
    /// Only records with this tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Only records matching this text (as `search`).
    #[arg(long, value_name = "QUERY")]
    pub text: Option<String>,
    /// Include deleted records.
    #[arg(long)]
    pub deleted: bool,
    /// At most this many records.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u32,
    /// Skip this many records (for paging).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub offset: u32,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Words or fragments; Chinese text matches any fragment, Latin words by prefix.
    pub text: String,
    /// Only records of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// At most this many results.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: u32,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The record's id.
    pub id: String,
    /// Why (kept on the record's timeline).
    #[arg(long, value_name = "REASON")]
    pub reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct MoveArgs {
    /// The record's id.
    pub id: String,
    /// The new home area.
    #[arg(long, value_name = "AREA")]
    pub area: String,
}

#[derive(Args, Debug)]
pub struct MoveHouseholdArgs {
    /// The place (a unit, a house) whose household moves.
    pub place: String,
    /// The new home area of the place and the people living there.
    #[arg(long, value_name = "AREA")]
    pub area: String,
}

/// `move-household`: a place and its residents to another area; links that now cross areas listed.
pub fn move_household(ctx: &Ctx, args: &MoveHouseholdArgs) -> CliResult<()> {
    let m = ctx.store.move_household(&args.place, &args.area)?;
    ctx.print(&m, || {
        let mut out = format!(
            "moved to {}: the place and {} resident(s)\n",
            args.area,
            m.moved.len() - 1
        );
        if m.crossing_links.is_empty() {
            out.push_str("no link crosses areas\n");
        } else {
            out.push_str("links that now cross areas (check them):\n");
            for l in &m.crossing_links {
                out.push_str(&format!("  {} {} {}\n", l.source, l.link_type, l.target));
            }
        }
        out
    });
    Ok(())
}

#[derive(Args, Debug)]
pub struct LinkArgs {
    /// The record the link starts from (it is stored in this record).
    pub source: String,
    /// The link type.
    #[arg(value_enum, value_name = "TYPE")]
    pub link_type: LinkArg,
    /// The record the link points to.
    pub target: String,
}

/// Accepts `YYYY-MM-DD HH:MM[:SS]` (and with `T`/`Z`) for time fields and writes the canonical
/// `YYYY-MM-DDTHH:MM:SSZ`; other values pass through unchanged for the core to check.
fn normalize(kind: Kind, field: &str, value: &str) -> String {
    let Ok(spec) = kind.spec(field) else {
        return value.to_owned();
    };
    if spec.ty != FieldType::DateTime || time::parse_iso(value).is_some() {
        return value.to_owned();
    }
    let v = value.trim().trim_end_matches('Z').replace(' ', "T");
    let candidate = match v.len() {
        16 => format!("{v}:00Z"),
        19 => format!("{v}Z"),
        _ => return value.to_owned(),
    };
    if time::parse_iso(&candidate).is_some() {
        candidate
    } else {
        value.to_owned()
    }
}

pub fn add(ctx: &Ctx, args: &AddArgs) -> CliResult<()> {
    let kind: Kind = args.kind.into();
    let mut new = NewRecord::new(kind, &args.area);
    for (f, v) in &args.set {
        new = new.field(f, normalize(kind, f, v));
    }
    for (k, v) in &args.attr {
        new = new.attr(k, v.clone());
    }
    for t in &args.tag {
        new = new.tag(t.clone());
    }
    if let Some(n) = &args.notes {
        new = new.notes(n.clone());
    }
    // Offline, the device can only warn: the record is registered, and the candidates named so the
    // worker can check (and a supervisor merge) them.
    let duplicates = ctx.store.duplicate_candidates(&new)?;
    let id = ctx.store.create(new)?;
    for d in &duplicates {
        let why: Vec<&str> = d.reasons.iter().map(|r| r.as_str()).collect();
        eprintln!(
            "warning: may be the same {} as {} ({}, in {}): {}",
            kind.as_str(),
            d.record.id,
            d.record.title,
            d.record.area,
            why.join(", ")
        );
    }
    ctx.print(
        &serde_json::json!({ "id": id, "kind": kind, "duplicates": duplicates }),
        || id.clone(),
    );
    Ok(())
}

pub fn edit(ctx: &Ctx, args: &EditArgs) -> CliResult<()> {
    let kind = ctx.store.get(&args.id)?.kind;
    let mut update = Update::new();
    for (f, v) in &args.set {
        update = update.set(f, normalize(kind, f, v));
    }
    for (k, v) in &args.attr {
        update = update.attr(k, v.clone());
    }
    for k in &args.unset_attr {
        update = update.remove_attr(k);
    }
    for t in &args.tag {
        update = update.add_tag(t.clone());
    }
    for t in &args.untag {
        update = update.remove_tag(t.clone());
    }
    if let Some(n) = &args.notes {
        update = update.notes(n.clone());
    }
    if update.is_empty() {
        return Err(CliError::user(
            "nothing to change: give --set, --attr, --unset-attr, --tag, --untag or --notes",
        ));
    }
    ctx.store.update(&args.id, update)?;
    done(ctx, &args.id, "edited")
}

/// Lines of `key  value`, keys padded to the widest.
fn kv_lines(out: &mut String, pairs: &[(String, String)]) {
    let w = pairs.iter().map(|(k, _)| k.width()).max().unwrap_or(0);
    for (k, v) in pairs {
        let mut lines = v.lines();
        let first = lines.next().unwrap_or("");
        out.push_str(&format!("  {k}{}  {first}\n", " ".repeat(w - k.width())));
        for more in lines {
            out.push_str(&format!("  {}  {more}\n", " ".repeat(w)));
        }
    }
}

/// `title (kind)` of a record on this device, for links and visited records.
fn describe(ctx: &Ctx, id: &str) -> String {
    match ctx.store.get(id) {
        Ok(r) => {
            let title = r.field(r.kind.title_field()).unwrap_or("").to_owned();
            let gone = if r.deleted { ", deleted" } else { "" };
            format!("{title} ({}{gone})", r.kind)
        }
        Err(_) => "(not on this device)".into(),
    }
}

fn timeline_text(out: &mut String, record: &Record) {
    let mut t = Table::new(["WHEN", "BY", "ACTION", "CHANGE", "COMMENT"]);
    for e in &record.timeline {
        let change = match (&e.from, &e.to) {
            (_, Some(to)) if e.action == "assign" => format!("assigned to {to}"),
            (Some(f), Some(to)) => format!("{f} → {to}"),
            (None, Some(to)) => format!("→ {to}"),
            (Some(f), None) => format!("{f} →"),
            (None, None) => String::new(),
        };
        t.row([
            output::short_time(&e.at),
            e.by.clone(),
            e.action.clone(),
            change,
            e.comment.clone().unwrap_or_default(),
        ]);
    }
    for line in t.render().lines() {
        out.push_str(&format!("  {line}\n"));
    }
}

pub fn show(ctx: &Ctx, args: &ShowArgs) -> CliResult<()> {
    let r = ctx.store.get(&args.id)?;
    if ctx.json {
        output::print_json(&r);
        return Ok(());
    }
    let kind = r.kind;
    let mut out = String::new();
    let title = r.field(kind.title_field()).unwrap_or("(untitled)");
    out.push_str(&format!("{title}\n"));
    let mut head = format!("{kind} {}  ·  area {}", r.id, r.area);
    if let Some(resp) = r.responsible.as_ref().filter(|x| **x != r.area) {
        head.push_str(&format!("  ·  responsible {resp}"));
    }
    if r.deleted {
        head.push_str("  ·  DELETED");
    }
    out.push_str(&head);
    out.push('\n');

    let mut fields: Vec<(String, String)> = Vec::new();
    for spec in kind.fields() {
        if let Some(v) = r.fields.get(spec.name) {
            fields.push((spec.name.to_owned(), output::show_value(kind, spec.name, v)));
        }
    }
    for (k, v) in &r.fields {
        if kind.spec(k).is_err() {
            fields.push((k.clone(), v.clone()));
        }
    }
    if !fields.is_empty() {
        out.push_str("\nfields\n");
        kv_lines(&mut out, &fields);
    }
    // The attributes read against the record's city form: its fields in order (labelled, values of
    // ID numbers masked, old values that no longer fit flagged), then attributes no form defines.
    let form = ctx.store.record_form(&r.id)?;
    if !form.is_empty() {
        out.push_str("\nattributes\n");
        let attrs: Vec<_> = form
            .iter()
            .filter(|v| v.value.is_some() || v.state == ValueState::Missing)
            .map(|v| {
                let name = match &v.field {
                    Some(f) => format!("{} ({})", f.label_en, f.key),
                    None => v.key.clone(),
                };
                let value = match (&v.value, &v.field) {
                    (Some(value), Some(f)) if f.sensitive() => mask(value),
                    (Some(value), _) => value.clone(),
                    (None, _) => String::new(),
                };
                let flag = match (v.state, &v.field) {
                    (ValueState::Outdated, Some(f)) => {
                        format!("  [entered under an earlier form: now {}]", f.rule())
                    }
                    (ValueState::Missing, _) => "[missing: the form requires it]".into(),
                    _ => String::new(),
                };
                (name, format!("{value}{flag}"))
            })
            .collect();
        kv_lines(&mut out, &attrs);
    }
    if !r.tags.is_empty() {
        out.push_str(&format!("\ntags  {}\n", r.tags.join(", ")));
    }
    // Links from this record, and links from other records on this device to it.
    let edges = ctx.store.links_of(&r.id).unwrap_or_default();
    if !edges.is_empty() || !r.links.is_empty() {
        out.push_str("\nlinks\n");
        let mut t = Table::new(["", "TYPE", "ID", "RECORD"]);
        for l in &r.links {
            t.row([
                "→".to_owned(),
                l.link_type.to_string(),
                l.target.clone(),
                describe(ctx, &l.target),
            ]);
        }
        for e in edges
            .iter()
            .filter(|e| e.target == r.id && e.source != r.id)
        {
            t.row([
                "←".to_owned(),
                e.link_type.to_string(),
                e.source.clone(),
                describe(ctx, &e.source),
            ]);
        }
        for line in t.render().lines().skip(1) {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if kind == Kind::Visit {
        if !r.visited.is_empty() {
            out.push_str("\nvisited\n");
            for id in &r.visited {
                out.push_str(&format!("  {id}  {}\n", describe(ctx, id)));
            }
        }
        if !r.checklist.is_empty() {
            out.push_str("\nchecklist\n");
            let answers: Vec<_> = r
                .checklist
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            kv_lines(&mut out, &answers);
        }
        if !r.attachments.is_empty() {
            out.push_str("\nattachments\n");
            let mut t = Table::new(["NAME", "TYPE", "SIZE", "SHA-256"]);
            for a in &r.attachments {
                t.row([
                    a.name.clone(),
                    a.mime.clone(),
                    human_size(a.size),
                    a.sha256.chars().take(16).collect::<String>() + "…",
                ]);
            }
            for line in t.render().lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    if !r.notes.is_empty() {
        out.push_str("\nnotes\n");
        for line in r.notes.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if !r.timeline.is_empty() {
        out.push_str("\ntimeline\n");
        timeline_text(&mut out, &r);
    }
    if !r.conflicted_fields.is_empty() {
        out.push_str(&format!(
            "\nconflicts  {}\n  see the values with `gridwork conflicts`, settle with \
             `gridwork resolve {} FIELD VALUE`\n",
            r.conflicted_fields.join(", "),
            r.id
        ));
    }
    output::emit(&out);
    Ok(())
}

pub fn human_size(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

pub fn list(ctx: &Ctx, args: &ListArgs) -> CliResult<()> {
    let kind: Kind = args.kind.into();
    let mut q = ListQuery::new(kind).limit(args.limit).offset(args.offset);
    if let Some(a) = &args.area {
        q = q.area(a.clone());
        if args.only_area {
            q = q.only_this_area();
        }
    }
    let filters: BTreeMap<String, String> = args.filters.iter().cloned().collect();
    for (f, v) in &filters {
        q = q.filter(f, normalize(kind, f, v));
    }
    if let Some(t) = &args.tag {
        q = q.tag(t.clone());
    }
    if let Some(t) = &args.text {
        q = q.text(t.clone());
    }
    q.include_deleted = args.deleted;
    let page = ctx.store.list(&q)?;
    ctx.print(&page, || {
        if page.items.is_empty() {
            return format!("no {kind} records found");
        }
        let mut out = output::summary_table(kind, &page.items, args.deleted).render();
        out.push_str(&format!("\n{}", count(page.items.len(), kind.as_str())));
        if let Some(next) = page.next_offset {
            out.push_str(&format!(" (more: --offset {next})"));
        }
        out.push('\n');
        out
    });
    Ok(())
}

pub fn search(ctx: &Ctx, args: &SearchArgs) -> CliResult<()> {
    let items = ctx
        .store
        .search(&args.text, args.kind.map(Into::into), args.limit)?;
    ctx.print(&items, || {
        if items.is_empty() {
            return "no matches".into();
        }
        let mut out = output::mixed_table(&items).render();
        out.push_str(&format!("\n{}\n", count(items.len(), "result")));
        out
    });
    Ok(())
}

pub fn delete(ctx: &Ctx, args: &DeleteArgs) -> CliResult<()> {
    ctx.store.delete(&args.id, args.reason.as_deref())?;
    done(ctx, &args.id, "deleted")
}

pub fn restore(ctx: &Ctx, args: &IdArg) -> CliResult<()> {
    ctx.store.restore(&args.id)?;
    done(ctx, &args.id, "restored")
}

pub fn move_record(ctx: &Ctx, args: &MoveArgs) -> CliResult<()> {
    ctx.store.move_record(&args.id, &args.area)?;
    let value = serde_json::json!({ "id": args.id, "result": "moved", "area": args.area });
    ctx.print(&value, || format!("moved {} to {}", args.id, args.area));
    Ok(())
}

pub fn link(ctx: &Ctx, args: &LinkArgs, add: bool) -> CliResult<()> {
    let t: LinkType = args.link_type.into();
    if add {
        ctx.store.link(&args.source, t, &args.target)?;
    } else {
        ctx.store.unlink(&args.source, t, &args.target)?;
    }
    let value = serde_json::json!({
        "source": args.source, "type": t, "target": args.target, "result": if add { "linked" } else { "unlinked" }
    });
    ctx.print(&value, || {
        format!(
            "{} {} {t} {}",
            if add { "linked" } else { "unlinked" },
            args.source,
            args.target
        )
    });
    Ok(())
}

#[derive(Args, Debug)]
pub struct DuplicatesArgs {
    /// Only pairs with both records in this area's subtree.
    #[arg(long)]
    pub area: Option<String>,
}

pub fn duplicates(ctx: &Ctx, a: &DuplicatesArgs) -> CliResult<()> {
    let pairs = ctx.store.duplicates(a.area.as_deref())?;
    ctx.print(&pairs, || {
        if pairs.is_empty() {
            return "no duplicate candidates".into();
        }
        let mut t = Table::new(["KIND", "RECORD", "TITLE", "OTHER", "TITLE", "WHY"]);
        for p in &pairs {
            let why: Vec<&str> = p.reasons.iter().map(|r| r.as_str()).collect();
            t.row([
                p.kind.as_str().into(),
                p.a.id.clone(),
                output::truncate(&p.a.title, 20),
                p.b.id.clone(),
                output::truncate(&p.b.title, 20),
                why.join(", "),
            ]);
        }
        format!(
            "{}\n{}; merge with: gridwork merge KEPT OTHER, or: gridwork not-duplicate A B\n",
            t.render(),
            count(pairs.len(), "pair")
        )
    });
    Ok(())
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The record kept.
    pub kept: String,
    /// The record merged into it (it becomes a tombstone).
    pub away: String,
}

pub fn merge(ctx: &Ctx, a: &MergeArgs) -> CliResult<()> {
    let report = ctx.store.merge_records(&a.kept, &a.away)?;
    ctx.print(&report, || {
        let mut out = format!("merged {} into {}\n", report.merged_away, report.kept);
        if !report.filled.is_empty() {
            out.push_str(&format!("  filled from it: {}\n", report.filled.join(", ")));
        }
        if !report.conflicts.is_empty() {
            out.push_str(&format!(
                "  values that differ, to resolve (gridwork conflicts): {}\n",
                report.conflicts.join(", ")
            ));
        }
        if !report.repointed.is_empty() {
            out.push_str(&format!(
                "  links moved on {}\n",
                count(report.repointed.len(), "record")
            ));
        }
        if !report.not_repointed.is_empty() {
            out.push_str(&format!(
                "  {} still link the merged record (not yours to edit; readers follow it)\n",
                count(report.not_repointed.len(), "record")
            ));
        }
        out
    });
    Ok(())
}

#[derive(Args, Debug)]
pub struct NotDuplicateArgs {
    pub a: String,
    pub b: String,
}

pub fn not_duplicate(ctx: &Ctx, a: &NotDuplicateArgs) -> CliResult<()> {
    ctx.store.mark_not_duplicate(&a.a, &a.b)?;
    done(ctx, &a.a, &format!("not a duplicate of {}", a.b))
}
