//! Export files (CSV with BOM, XLSX, GeoJSON) written from rows of record fields: one writer for the
//! device (`Store::export_records`) and the relay (`GET /v1/export`).
use crate::model::Kind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Xlsx,
    GeoJson,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "csv" => Some(ExportFormat::Csv),
            "xlsx" => Some(ExportFormat::Xlsx),
            "geojson" => Some(ExportFormat::GeoJson),
            _ => None,
        }
    }

    /// The media type of the file.
    pub fn media_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Xlsx => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
            ExportFormat::GeoJson => "application/geo+json",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Xlsx => "xlsx",
            ExportFormat::GeoJson => "geojson",
        }
    }
}

/// Most records one export holds.
pub const MAX_EXPORT_ROWS: usize = 100_000;

/// One record's row: its id, area and the kind's fields in order.
pub type Row = (String, String, Vec<String>);

/// A record's fields as an export row shows them: every field of the kind in order, ID-document
/// numbers masked as lists show them unless `unmasked`.
pub fn row_values(kind: Kind, fields: &BTreeMap<String, String>, unmasked: bool) -> Vec<String> {
    kind.fields()
        .iter()
        .map(|spec| {
            let v = fields.get(spec.name).map(String::as_str).unwrap_or("");
            if unmasked || v.is_empty() {
                v.to_owned()
            } else {
                kind.list_value(spec.name, v)
            }
        })
        .collect()
}

/// The file of `rows` (records of `kind`) in `format`; `Err` says why it cannot be made.
pub fn write(kind: Kind, rows: &[Row], format: ExportFormat) -> Result<Vec<u8>, String> {
    let columns: Vec<&str> = kind.fields().iter().map(|f| f.name).collect();
    let mut header = vec!["id", "area"];
    header.extend(&columns);
    match format {
        ExportFormat::Csv => csv_bytes(&header, rows),
        ExportFormat::Xlsx => xlsx_bytes(kind, &header, rows),
        ExportFormat::GeoJson => geojson_bytes(kind, &columns, rows),
    }
}

fn csv_bytes(header: &[&str], rows: &[Row]) -> Result<Vec<u8>, String> {
    // The byte-order mark: without it, spreadsheet programs read UTF-8 as the local code page.
    let mut out = b"\xEF\xBB\xBF".to_vec();
    {
        let mut w = csv::Writer::from_writer(&mut out);
        let failed = |e: csv::Error| format!("csv: {e}");
        w.write_record(header).map_err(failed)?;
        for (id, area, values) in rows {
            w.write_record(
                [id.as_str(), area.as_str()]
                    .into_iter()
                    .chain(values.iter().map(String::as_str)),
            )
            .map_err(failed)?;
        }
        w.flush().map_err(|e| format!("csv: {e}"))?;
    }
    Ok(out)
}

fn xlsx_bytes(
    kind: Kind,
    header: &[&str],
    rows: &[(String, String, Vec<String>)],
) -> Result<Vec<u8>, String> {
    let failed = |e: rust_xlsxwriter::XlsxError| format!("xlsx: {e}");
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
) -> Result<Vec<u8>, String> {
    let (Some(lat), Some(lon)) = (
        columns.iter().position(|c| *c == "lat"),
        columns.iter().position(|c| *c == "lon"),
    ) else {
        return Err(format!(
            "{} records have no coordinates: GeoJSON is for places and visits",
            kind.as_str()
        ));
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
    serde_json::to_vec_pretty(&collection).map_err(|e| e.to_string())
}
