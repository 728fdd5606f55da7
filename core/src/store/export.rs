//! Exports of lists for spreadsheets and other departments: CSV (UTF-8 with a byte-order mark, so
//! spreadsheet programs read Chinese correctly), XLSX, and GeoJSON (records with coordinates). The
//! rows are the records of one kind in this user's scope, filtered like a list (area, tag) and, for
//! visits and events, by period. ID-document numbers are masked as lists show them unless the caller
//! asks for them in full, which only supervisors and operators may.
use super::records::ListQuery;
use super::Store;
use crate::error::{Error, Result};
use crate::model::{time, Kind, Role};
use serde::{Deserialize, Serialize};

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Xlsx,
    GeoJson,
}

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

/// Most records one export holds.
pub const MAX_EXPORT_ROWS: usize = 100_000;

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
        let columns: Vec<&str> = kind.fields().iter().map(|f| f.name).collect();
        let mut rows: Vec<(String, String, Vec<String>)> = Vec::new();
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
                let values = columns
                    .iter()
                    .map(|c| {
                        let v = r.fields.get(*c).map(String::as_str).unwrap_or("");
                        if query.unmasked || v.is_empty() {
                            v.to_owned()
                        } else {
                            kind.list_value(c, v)
                        }
                    })
                    .collect();
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
        let mut header = vec!["id", "area"];
        header.extend(&columns);
        match format {
            ExportFormat::Csv => csv_bytes(&header, &rows),
            ExportFormat::Xlsx => xlsx_bytes(kind, &header, &rows),
            ExportFormat::GeoJson => geojson_bytes(kind, &columns, &rows),
        }
    }
}

fn csv_bytes(header: &[&str], rows: &[(String, String, Vec<String>)]) -> Result<Vec<u8>> {
    // The byte-order mark: without it, spreadsheet programs read UTF-8 as the local code page.
    let mut out = b"\xEF\xBB\xBF".to_vec();
    {
        let mut w = csv::Writer::from_writer(&mut out);
        let failed = |e: csv::Error| Error::InvalidInput(format!("csv: {e}"));
        w.write_record(header).map_err(failed)?;
        for (id, area, values) in rows {
            w.write_record(
                [id.as_str(), area.as_str()]
                    .into_iter()
                    .chain(values.iter().map(String::as_str)),
            )
            .map_err(failed)?;
        }
        w.flush()?;
    }
    Ok(out)
}

fn xlsx_bytes(
    kind: Kind,
    header: &[&str],
    rows: &[(String, String, Vec<String>)],
) -> Result<Vec<u8>> {
    let failed = |e: rust_xlsxwriter::XlsxError| Error::InvalidInput(format!("xlsx: {e}"));
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name(kind.as_str()).map_err(failed)?;
    let bold = rust_xlsxwriter::Format::new().set_bold();
    for (c, h) in header.iter().enumerate() {
        sheet
            .write_string_with_format(0, c as u16, *h, &bold)
            .map_err(failed)?;
    }
    for (r, (id, area, values)) in rows.iter().enumerate() {
        let row = r as u32 + 1;
        sheet.write_string(row, 0, id).map_err(failed)?;
        sheet.write_string(row, 1, area).map_err(failed)?;
        for (c, v) in values.iter().enumerate() {
            // Text, always: an ID or phone number must not turn into a rounded number.
            sheet.write_string(row, c as u16 + 2, v).map_err(failed)?;
        }
    }
    book.save_to_buffer().map_err(failed)
}

fn geojson_bytes(
    kind: Kind,
    columns: &[&str],
    rows: &[(String, String, Vec<String>)],
) -> Result<Vec<u8>> {
    let (Some(lat), Some(lon)) = (
        columns.iter().position(|c| *c == "lat"),
        columns.iter().position(|c| *c == "lon"),
    ) else {
        return Err(Error::InvalidInput(format!(
            "{} records have no coordinates: GeoJSON is for places and visits",
            kind.as_str()
        )));
    };
    let mut features = Vec::new();
    for (id, area, values) in rows {
        let (Ok(y), Ok(x)) = (values[lat].parse::<f64>(), values[lon].parse::<f64>()) else {
            continue;
        };
        let mut props = serde_json::Map::new();
        props.insert("id".into(), id.clone().into());
        props.insert("kind".into(), kind.as_str().into());
        props.insert("area".into(), area.clone().into());
        for (c, v) in columns.iter().zip(values) {
            if !v.is_empty() && *c != "lat" && *c != "lon" {
                props.insert((*c).into(), v.clone().into());
            }
        }
        features.push(serde_json::json!({
            "type": "Feature",
            "id": id,
            "geometry": {"type": "Point", "coordinates": [x, y]},
            "properties": props,
        }));
    }
    let collection = serde_json::json!({"type": "FeatureCollection", "features": features});
    serde_json::to_vec_pretty(&collection).map_err(|e| Error::InvalidInput(e.to_string()))
}
