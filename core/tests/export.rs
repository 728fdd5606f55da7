//! Exports read back the way their users read them: the CSV parsed (with its byte-order mark), the
//! XLSX opened with a spreadsheet reader, the GeoJSON as a FeatureCollection of points.
mod common;

use calamine::Reader;
use common::*;
use gridwork_core::*;

fn people(s: &Store) -> (String, String) {
    let a = s
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "王小明")
                .field("phone", "13800138000")
                .field("id_number", "110105194912310021")
                .tag("lives alone"),
        )
        .unwrap();
    let b = s
        .create(
            NewRecord::new(Kind::Person, "g2")
                .field("name", "Smith, \"Jo\"")
                .field("birth_date", "1950-01-02"),
        )
        .unwrap();
    (a, b)
}

#[test]
fn csv_with_a_bom_reads_back_with_chinese_names_and_masked_ids() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "zhao", Role::Supervisor, "c1");
    let (a, b) = people(&s);
    let bytes = s
        .export_records(&ExportQuery::new(Kind::Person), ExportFormat::Csv)
        .unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "UTF-8 byte-order mark");
    let mut r = csv::Reader::from_reader(&bytes[3..]);
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(&header[..4], ["id", "area", "name", "sex"]);
    let col = |h: &str| header.iter().position(|x| x == h).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 2);
    let row_of = |id: &str| rows.iter().find(|r| &r[0] == id).unwrap();
    assert_eq!(&row_of(&a)[col("name")], "王小明");
    assert_eq!(
        &row_of(&a)[col("id_number")],
        "****0021",
        "masked by default"
    );
    assert_eq!(&row_of(&a)[col("phone")], "13800138000");
    assert_eq!(&row_of(&b)[col("name")], "Smith, \"Jo\"", "quoted as CSV");
    // Filters: tag, area.
    let mut q = ExportQuery::new(Kind::Person);
    q.tag = Some("lives alone".into());
    let tagged = s.export_records(&q, ExportFormat::Csv).unwrap();
    assert_eq!(csv::Reader::from_reader(&tagged[3..]).records().count(), 1);
    let mut q = ExportQuery::new(Kind::Person);
    q.area = Some("g2".into());
    let g2 = s.export_records(&q, ExportFormat::Csv).unwrap();
    assert_eq!(csv::Reader::from_reader(&g2[3..]).records().count(), 1);
    // In full, for a supervisor who asks.
    let mut q = ExportQuery::new(Kind::Person);
    q.unmasked = true;
    let full = s.export_records(&q, ExportFormat::Csv).unwrap();
    assert!(String::from_utf8_lossy(&full).contains("110105194912310021"));
}

#[test]
fn a_worker_cannot_export_id_numbers_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    s.create(
        NewRecord::new(Kind::Person, "g1")
            .field("name", "王小明")
            .field("id_number", "110105194912310021"),
    )
    .unwrap();
    let masked = s
        .export_records(&ExportQuery::new(Kind::Person), ExportFormat::Csv)
        .unwrap();
    assert!(!String::from_utf8_lossy(&masked).contains("110105194912310021"));
    let mut q = ExportQuery::new(Kind::Person);
    q.unmasked = true;
    assert!(matches!(
        s.export_records(&q, ExportFormat::Csv),
        Err(Error::Forbidden(_))
    ));
    // Bad requests are typed errors too.
    let mut q = ExportQuery::new(Kind::Person);
    q.from = Some(0);
    assert!(matches!(
        s.export_records(&q, ExportFormat::Csv),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        s.export_records(&ExportQuery::new(Kind::Person), ExportFormat::GeoJson),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn xlsx_opens_in_a_spreadsheet_reader_with_numbers_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "zhao", Role::Supervisor, "c1");
    let (a, _) = people(&s);
    let bytes = s
        .export_records(&ExportQuery::new(Kind::Person), ExportFormat::Xlsx)
        .unwrap();
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(book.sheet_names(), ["person"]);
    let range = book.worksheet_range("person").unwrap();
    let rows: Vec<Vec<String>> = range
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    assert_eq!(rows.len(), 3, "header and two people");
    assert_eq!(&rows[0][..3], ["id", "area", "name"]);
    let phone = rows[0].iter().position(|h| h == "phone").unwrap();
    let mine = rows.iter().find(|r| r[0] == a).unwrap();
    assert_eq!(mine[2], "王小明");
    assert_eq!(mine[phone], "13800138000");
    assert!(matches!(
        range.get_value((1, phone as u32)),
        Some(calamine::Data::String(_) | calamine::Data::Empty)
    ));
}

#[test]
fn geojson_holds_the_places_and_visits_with_coordinates_in_the_period() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    let place = s
        .create(
            NewRecord::new(Kind::Place, "g1")
                .field("name", "幸福路12号")
                .field("lat", "31.2304")
                .field("lon", "121.4737"),
        )
        .unwrap();
    s.create(NewRecord::new(Kind::Place, "g1").field("name", "No coordinates"))
        .unwrap();
    let visit = s
        .start_visit(
            "g1",
            "weekly",
            Some(GeoPoint {
                lat: 31.23,
                lon: 121.47,
                accuracy: 5.0,
            }),
        )
        .unwrap();
    let bytes = s
        .export_records(&ExportQuery::new(Kind::Place), ExportFormat::GeoJson)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["type"], "FeatureCollection");
    let features = v["features"].as_array().unwrap();
    assert_eq!(features.len(), 1, "only the place with coordinates");
    assert_eq!(features[0]["geometry"]["type"], "Point");
    assert_eq!(
        features[0]["geometry"]["coordinates"],
        serde_json::json!([121.4737, 31.2304]),
        "longitude first"
    );
    assert_eq!(features[0]["properties"]["id"], place.as_str());
    assert_eq!(features[0]["properties"]["name"], "幸福路12号");
    // Visits, by the period they started in.
    let now = time::now_secs();
    let mut q = ExportQuery::new(Kind::Visit);
    q.from = Some(now - 3600);
    q.until = Some(now + 3600);
    let v: serde_json::Value =
        serde_json::from_slice(&s.export_records(&q, ExportFormat::GeoJson).unwrap()).unwrap();
    assert_eq!(v["features"][0]["properties"]["id"], visit.as_str());
    q.from = Some(now + 3600);
    q.until = None;
    let v: serde_json::Value =
        serde_json::from_slice(&s.export_records(&q, ExportFormat::GeoJson).unwrap()).unwrap();
    assert!(v["features"].as_array().unwrap().is_empty());
}
