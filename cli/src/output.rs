//! Printing: aligned tables, readable dates, masked sensitive values, JSON.
use gridwork_core::{time, FieldType, Kind, RecordSummary};
use std::io::Write;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Widest a table cell gets before it is cut with `…` (ids are never cut).
const MAX_CELL: usize = 40;

/// Writes text to stdout; a closed pipe (`gridwork list person | head`) is not an error.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let result = out.write_all(text.as_bytes()).and_then(|_| {
        if text.is_empty() || text.ends_with('\n') {
            Ok(())
        } else {
            out.write_all(b"\n")
        }
    });
    if let Err(e) = result.and_then(|_| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write output: {e}");
            std::process::exit(1);
        }
    }
}

pub fn print_json<T: serde::Serialize>(value: &T) {
    let text = serde_json::to_string_pretty(value).expect("output serialises");
    emit(&text);
}

/// A table with a header row, columns padded to the display width of their widest cell
/// (Chinese characters count as two columns).
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                (0..cols)
                    .map(|i| {
                        let c = one_line(r.get(i).map(String::as_str).unwrap_or(""));
                        if self.headers[i] == "ID" {
                            c
                        } else {
                            truncate(&c, MAX_CELL)
                        }
                    })
                    .collect()
            })
            .collect();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.width()).collect();
        for row in &cells {
            for (i, c) in row.iter().enumerate() {
                widths[i] = widths[i].max(c.width());
            }
        }
        let mut out = String::new();
        let mut line = |row: &[String]| {
            let mut l = String::new();
            for (i, c) in row.iter().enumerate() {
                l.push_str(c);
                if i + 1 < row.len() {
                    l.push_str(&" ".repeat(widths[i] - c.width() + 2));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&self.headers);
        for row in &cells {
            line(row);
        }
        out
    }
}

/// Newlines and tabs in a cell would break the table.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.width() <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = c.width().unwrap_or(0);
        if w + cw + 1 > max {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push('…');
    out
}

/// `2026-11-21T16:19:11Z` -> `2026-11-21 16:19`; anything else unchanged.
pub fn short_time(iso: &str) -> String {
    if time::parse_iso(iso).is_some() {
        format!("{} {}", &iso[..10], &iso[11..16])
    } else {
        iso.to_owned()
    }
}

/// Seconds since the epoch -> `2026-11-21 16:19:11 UTC`.
pub fn secs_time(secs: i64) -> String {
    long_time(&time::iso_from_secs(secs))
}

/// `2026-11-21T16:19:11Z` -> `2026-11-21 16:19:11 UTC (3h ago)`.
pub fn long_time(iso: &str) -> String {
    match time::parse_iso(iso) {
        Some(secs) => format!(
            "{} {} UTC ({})",
            &iso[..10],
            &iso[11..19],
            relative(time::now_secs() - secs)
        ),
        None => iso.to_owned(),
    }
}

fn relative(ago: i64) -> String {
    let (n, future) = if ago < 0 { (-ago, true) } else { (ago, false) };
    let text = match n {
        0..=59 => return if future { "in a moment" } else { "just now" }.into(),
        60..=3599 => format!("{} min", n / 60),
        3600..=86_399 => format!("{} h", n / 3600),
        _ => format!("{} days", n / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A field value for a list row: sensitive values masked, times shortened.
pub fn list_value(kind: Kind, field: &str, value: &str) -> String {
    match kind.spec(field) {
        Ok(spec) if spec.ty == FieldType::DateTime => short_time(value),
        // Masked as every list masks (the FFI's too): `Kind::list_value`.
        _ => kind.list_value(field, value),
    }
}

/// A field value for `show`: in full (the user may see it), times readable.
pub fn show_value(kind: Kind, field: &str, value: &str) -> String {
    match kind.spec(field) {
        Ok(spec) if spec.ty == FieldType::DateTime => long_time(value),
        _ => value.to_owned(),
    }
}

/// The columns a list of this kind shows after ID and the title.
pub fn list_columns(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Person => &["sex", "birth_date", "phone", "id_number"],
        Kind::Place => &["category", "address"],
        Kind::Object => &["category", "condition", "last_inspection"],
        Kind::Organisation => &["category", "contact_name", "contact_phone"],
        Kind::Event => &["category", "status", "priority", "assignee", "due"],
        Kind::Visit => &["worker", "started_at", "ended_at", "review_state"],
    }
}

/// A table of summaries of one kind.
pub fn summary_table(kind: Kind, items: &[RecordSummary], show_deleted: bool) -> Table {
    let cols = list_columns(kind);
    let mut headers = vec!["ID".to_owned(), kind.title_field().to_uppercase()];
    headers.extend(cols.iter().map(|c| c.to_uppercase()));
    headers.push("AREA".into());
    if show_deleted {
        headers.push("DELETED".into());
    }
    let mut table = Table::new(headers);
    for s in items {
        let mut row = vec![s.id.clone(), s.title.clone()];
        for c in cols {
            row.push(
                s.fields
                    .get(*c)
                    .map(|v| list_value(kind, c, v))
                    .unwrap_or_default(),
            );
        }
        row.push(area_cell(s));
        if show_deleted {
            row.push(if s.deleted { "yes" } else { "" }.into());
        }
        table.row(row);
    }
    table
}

/// A table of summaries of mixed kinds (search results, work lists).
pub fn mixed_table(items: &[RecordSummary]) -> Table {
    let mut table = Table::new(["ID", "KIND", "TITLE", "AREA"]);
    for s in items {
        table.row([
            s.id.clone(),
            s.kind.to_string(),
            s.title.clone(),
            area_cell(s),
        ]);
    }
    table
}

/// The home area, and the responsible area when an event was escalated or handed down.
pub fn area_cell(s: &RecordSummary) -> String {
    match &s.responsible {
        Some(r) if r != &s.area => format!("{} (→ {r})", s.area),
        _ => s.area.clone(),
    }
}

/// "3 persons" style counts for footers.
pub fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_all_but_the_last_four() {
        use gridwork_core::mask;
        assert_eq!(mask("110101199003071234"), "****1234");
        assert_eq!(mask("123"), "****");
        assert_eq!(mask("王小明的证件号"), "****的证件号");
    }

    #[test]
    fn tables_align_wide_characters() {
        let mut t = Table::new(["ID", "NAME", "X"]);
        t.row(["a", "王小明", "1"]);
        t.row(["b", "Li", "2"]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        let col = |l: &str| l[..l.rfind(' ').unwrap()].width();
        assert_eq!(col(lines[1]), col(lines[2]));
    }

    #[test]
    fn times_read_well() {
        assert_eq!(short_time("2026-11-21T16:19:11Z"), "2026-11-21 16:19");
        assert!(long_time("2026-11-21T16:19:11Z").starts_with("2026-11-21 16:19:11 UTC"));
        assert_eq!(short_time("soon"), "soon");
    }
}
