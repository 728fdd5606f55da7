//! Exports of lists for spreadsheets and other departments: CSV (UTF-8 with a byte-order mark, so
//! spreadsheet programs read Chinese correctly), XLSX, and GeoJSON (records with coordinates). The
//! rows are the records of one kind in this user's scope, filtered like a list (area, tag) and, for
//! visits and events, by period. ID-document numbers are masked as lists show them unless the caller
//! asks for them in full, which only supervisors and operators may.
use super::records::ListQuery;
use super::Store;
use crate::error::{Error, Result};
use crate::model::{time, Kind, Role};
use gridwork_protocol::export::{row_values, write, Row};
pub use gridwork_protocol::export::{ExportFormat, MAX_EXPORT_ROWS};
use serde::{Deserialize, Serialize};

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportQuery {
    pub kind: Kind,
    /// Only records in this area's subtree.
    pub area: Option<String>,
    /// Only records with this tag.
    pub tag: Option<String>,
    /// Visits by start, events by report time: from (inclusive) and until (exclusive), seconds since
    /// the epoch.
    pub from: Option<i64>,
    pub until: Option<i64>,
    /// ID-document numbers in full (supervisors and operators only).
    pub unmasked: bool,
}

impl ExportQuery {
    pub fn new(kind: Kind) -> Self {
        ExportQuery {
            kind,
            area: None,
            tag: None,
            from: None,
            until: None,
            unmasked: false,
        }
    }
}

impl Store {
    /// The records `query` selects, as a file in `format`.
    pub fn export_records(&self, query: &ExportQuery, format: ExportFormat) -> Result<Vec<u8>> {
        if query.unmasked && self.identity().role == Role::Worker {
            return Err(Error::Forbidden(
                "ID numbers in full are for supervisors and operators; a worker's export masks them"
                    .into(),
            ));
        }
        let kind = query.kind;
        let period_field = match kind {
            Kind::Visit => Some("started_at"),
            Kind::Event => Some("reported_at"),
            _ => None,
        };
        if (query.from.is_some() || query.until.is_some()) && period_field.is_none() {
            return Err(Error::InvalidInput(
                "a period applies to visits and events".into(),
            ));
        }
        let (from, until) = (
            query.from.map(time::iso_from_secs),
            query.until.map(time::iso_from_secs),
        );
        let mut list = ListQuery::new(kind);
        list.area = query.area.clone();
        list.tag = query.tag.clone();
        list.limit = 1000;
        let mut rows: Vec<Row> = Vec::new();
        loop {
            let page = self.list(&list)?;
            for r in page.items {
                if let Some(field) = period_field {
                    let at = r.fields.get(field).map(String::as_str).unwrap_or("");
                    if from.as_deref().is_some_and(|f| at < f)
                        || until.as_deref().is_some_and(|u| at >= u)
                    {
                        continue;
                    }
                }
                let values = row_values(kind, &r.fields, query.unmasked);
                rows.push((r.id, r.area, values));
                if rows.len() > MAX_EXPORT_ROWS {
                    return Err(Error::InvalidInput(format!(
                        "more than {MAX_EXPORT_ROWS} records: narrow the export by area, tag or period"
                    )));
                }
            }
            match page.next_offset {
                Some(next) => list.offset = next,
                None => break,
            }
        }
        write(kind, &rows, format).map_err(Error::InvalidInput)
    }
}
