//! The console's map: area boundaries (GeoJSON an operator uploads per area) with places, visits and
//! open events drawn on them, as SVG made on the relay. No tile server and no script: the relay may
//! have no internet, and the page's Content-Security-Policy allows nothing from other hosts.
use serde_json::Value;

/// Points a boundary may have, and bytes of GeoJSON an upload may be.
pub const MAX_POINTS: usize = 50_000;
pub const MAX_BYTES: usize = 1024 * 1024;

/// A MultiPolygon's coordinates: polygons of rings of (lon, lat).
pub type MultiPolygon = Vec<Vec<Vec<(f64, f64)>>>;

/// Reads a boundary from GeoJSON: a Polygon, a MultiPolygon, a Feature of one, or a FeatureCollection
/// of them (all its polygons). Checks sizes and coordinates; errors say what is wrong, never echo it.
pub fn parse_boundary(text: &str) -> Result<MultiPolygon, String> {
    if text.len() > MAX_BYTES {
        return Err(format!(
            "a boundary is at most {MAX_BYTES} bytes of GeoJSON"
        ));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut out = MultiPolygon::new();
    collect(&v, &mut out, 0)?;
    if out.is_empty() {
        return Err("no Polygon or MultiPolygon in it".into());
    }
    let points: usize = out.iter().flatten().map(Vec::len).sum();
    if points > MAX_POINTS {
        return Err(format!("at most {MAX_POINTS} points"));
    }
    Ok(out)
}

fn collect(v: &Value, out: &mut MultiPolygon, depth: usize) -> Result<(), String> {
    if depth > 3 {
        return Err("nested too deep".into());
    }
    match v.get("type").and_then(Value::as_str) {
        Some("FeatureCollection") => {
            for f in v
                .get("features")
                .and_then(Value::as_array)
                .ok_or("a FeatureCollection lists features")?
            {
                collect(f, out, depth + 1)?;
            }
        }
        Some("Feature") => collect(
            v.get("geometry").ok_or("a Feature has a geometry")?,
            out,
            depth + 1,
        )?,
        Some("Polygon") => out.push(polygon(v.get("coordinates"))?),
        Some("MultiPolygon") => {
            for p in v
                .get("coordinates")
                .and_then(Value::as_array)
                .ok_or("a MultiPolygon has coordinates")?
            {
                out.push(polygon(Some(p))?);
            }
        }
        // Points, lines: not a boundary; left out.
        Some(_) => {}
        None => return Err("GeoJSON objects have a type".into()),
    }
    Ok(())
}

fn polygon(coords: Option<&Value>) -> Result<Vec<Vec<(f64, f64)>>, String> {
    let rings = coords
        .and_then(Value::as_array)
        .ok_or("a Polygon has rings of coordinates")?;
    let mut out = Vec::with_capacity(rings.len());
    for ring in rings {
        let pts = ring.as_array().ok_or("a ring lists positions")?;
        if pts.len() < 4 || pts.len() > MAX_POINTS {
            return Err("a ring has 4 or more positions".into());
        }
        let mut r = Vec::with_capacity(pts.len());
        for p in pts {
            let lon = p.get(0).and_then(Value::as_f64);
            let lat = p.get(1).and_then(Value::as_f64);
            match (lon, lat) {
                (Some(lon), Some(lat))
                    if (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat) =>
                {
                    r.push((lon, lat))
                }
                _ => return Err("a position is [longitude, latitude] in range".into()),
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// The boundary as stored: a GeoJSON MultiPolygon.
pub fn to_geojson(mp: &MultiPolygon) -> String {
    let coords: Vec<Vec<Vec<[f64; 2]>>> = mp
        .iter()
        .map(|p| {
            p.iter()
                .map(|r| r.iter().map(|(x, y)| [*x, *y]).collect())
                .collect()
        })
        .collect();
    serde_json::json!({"type": "MultiPolygon", "coordinates": coords}).to_string()
}

/// What the map draws, in SVG coordinates.
pub struct MapView {
    pub width: u32,
    pub height: u32,
    /// (area id and name, SVG path, label x, label y).
    pub areas: Vec<(String, String, f64, f64)>,
    pub places: Vec<Dot>,
    pub visits: Vec<Dot>,
    pub events: Vec<Dot>,
    pub category: String,
    pub from: String,
    pub until: String,
    pub empty: bool,
    /// Map tiles under it, when the relay is configured with a tile server.
    pub tiles: Vec<Tile>,
}

/// A point on the map, with what to show on hover and the record it links to.
pub struct Dot {
    pub x: f64,
    pub y: f64,
    pub title: String,
    pub id: String,
}

/// Projects (lon, lat) into a `width` x `height` frame around the points (Web Mercator, as map tiles
/// are cut, so tiles drawn under it line up), with a margin.
pub struct Frame {
    min_x: f64,
    min_y: f64,
    /// SVG units per unit of the Mercator square (the whole world is 1 x 1).
    scale: f64,
    margin: f64,
    width: f64,
    height: f64,
}

/// (lon, lat) on the Mercator square: x and y from 0 to 1, y downwards.
fn mercator(lon: f64, lat: f64) -> (f64, f64) {
    let lat = lat.clamp(-85.05, 85.05).to_radians();
    (
        (lon + 180.0) / 360.0,
        (1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0,
    )
}

impl Frame {
    pub fn new(points: &[(f64, f64)], width: f64, height: f64) -> Option<Frame> {
        if points.is_empty() {
            return None;
        }
        let (mut min_x, mut max_x, mut min_y, mut max_y) = (1.0f64, 0.0f64, 1.0f64, 0.0f64);
        for (lon, lat) in points {
            let (x, y) = mercator(*lon, *lat);
            min_x = min_x.min(x);
            max_x = max_x.max(x);
            min_y = min_y.min(y);
            max_y = max_y.max(y);
        }
        let margin = 24.0;
        let span_x = (max_x - min_x).max(1e-9);
        let span_y = (max_y - min_y).max(1e-9);
        let scale = ((width - 2.0 * margin) / span_x).min((height - 2.0 * margin) / span_y);
        Some(Frame {
            min_x,
            min_y,
            scale,
            margin,
            width,
            height,
        })
    }

    pub fn xy(&self, lon: f64, lat: f64) -> (f64, f64) {
        let (x, y) = mercator(lon, lat);
        (
            self.margin + (x - self.min_x) * self.scale,
            self.margin + (y - self.min_y) * self.scale,
        )
    }

    /// An SVG path of a MultiPolygon.
    pub fn path(&self, mp: &MultiPolygon) -> String {
        let mut d = String::new();
        for ring in mp.iter().flatten() {
            for (i, (lon, lat)) in ring.iter().enumerate() {
                let (x, y) = self.xy(*lon, *lat);
                d.push_str(&format!("{}{x:.1} {y:.1} ", if i == 0 { "M" } else { "L" }));
            }
            d.push_str("Z ");
        }
        d
    }

    /// The map tiles (`template` with `{z}`, `{x}`, `{y}`) that cover the frame, at the zoom whose
    /// tiles come closest to 256 units: (URL, x, y, size). At most 64.
    pub fn tiles(&self, template: &str) -> Vec<Tile> {
        let z = (self.scale / 256.0).log2().round().clamp(0.0, 19.0) as i32;
        let n = f64::from(1u32 << z);
        let size = self.scale / n;
        let left = self.min_x - self.margin / self.scale;
        let top = self.min_y - self.margin / self.scale;
        let right = left + self.width / self.scale;
        let bottom = top + self.height / self.scale;
        let (x0, x1) = ((left * n).floor() as i64, (right * n).floor() as i64);
        let (y0, y1) = ((top * n).floor() as i64, (bottom * n).floor() as i64);
        let mut out = Vec::new();
        for ty in y0.max(0)..=y1.min(n as i64 - 1) {
            for tx in x0.max(0)..=x1.min(n as i64 - 1) {
                if out.len() >= 64 {
                    return out;
                }
                let url = template
                    .replace("{z}", &z.to_string())
                    .replace("{x}", &tx.to_string())
                    .replace("{y}", &ty.to_string());
                out.push(Tile {
                    url,
                    x: self.margin + (tx as f64 / n - self.min_x) * self.scale,
                    y: self.margin + (ty as f64 / n - self.min_y) * self.scale,
                    size,
                });
            }
        }
        out
    }
}

/// A map tile drawn under the map.
pub struct Tile {
    pub url: String,
    pub x: f64,
    pub y: f64,
    pub size: f64,
}

/// Checks a tile URL template (`https://tiles.example/{z}/{x}/{y}.png`) and returns its origin, for
/// the page's Content-Security-Policy.
pub fn tile_origin(template: &str) -> Result<String, String> {
    let rest = template
        .strip_prefix("https://")
        .map(|r| ("https://", r))
        .or_else(|| template.strip_prefix("http://").map(|r| ("http://", r)));
    let Some((scheme, rest)) = rest else {
        return Err("map tiles: an http(s) URL".into());
    };
    if !["{z}", "{x}", "{y}"].iter().all(|p| template.contains(p)) {
        return Err("map tiles: the URL holds {z}, {x} and {y}".into());
    }
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
    {
        return Err("map tiles: a host name".into());
    }
    Ok(format!("{scheme}{host}"))
}

/// The map of what a console device holds: the boundaries of the areas it sees, its places, its visits
/// started in the period (`from`, `until`: YYYY-MM-DD, inclusive), its open events (of `category`)
/// where they are located at a place.
pub fn map_view(
    store: &gridwork_core::Store,
    shapes: &[(String, String)],
    category: &str,
    from: &str,
    until: &str,
    tiles: Option<&str>,
) -> gridwork_core::Result<MapView> {
    use gridwork_core::{EventStatus, Kind, LinkType, ListQuery};
    let (width, height) = (960u32, 640u32);
    let areas = store.areas()?;
    let bounds: Vec<(&gridwork_core::Area, MultiPolygon)> = areas
        .iter()
        .filter_map(|a| {
            let (_, g) = shapes.iter().find(|(id, _)| *id == a.id)?;
            Some((a, parse_boundary(g).ok()?))
        })
        .collect();
    let list = |kind: Kind| -> gridwork_core::Result<Vec<gridwork_core::Record>> {
        let mut q = ListQuery::new(kind);
        q.limit = 5000;
        store
            .list(&q)?
            .items
            .iter()
            .map(|s| store.get(&s.id))
            .collect()
    };
    let at = |r: &gridwork_core::Record| -> Option<(f64, f64)> {
        let lat = r.field("lat")?.parse::<f64>().ok()?;
        let lon = r.field("lon")?.parse::<f64>().ok()?;
        Some((lon, lat))
    };
    let title = |r: &gridwork_core::Record| {
        r.field(r.kind.title_field())
            .unwrap_or(r.kind.as_str())
            .to_owned()
    };
    let places: Vec<(gridwork_core::Record, (f64, f64))> = list(Kind::Place)?
        .into_iter()
        .filter_map(|r| at(&r).map(|p| (r, p)))
        .collect();
    let in_period = |t: &str| {
        let day = t.get(..10).unwrap_or("");
        (from.is_empty() || day >= from) && (until.is_empty() || day <= until)
    };
    let visits: Vec<(gridwork_core::Record, (f64, f64))> = list(Kind::Visit)?
        .into_iter()
        .filter(|r| in_period(r.field("started_at").unwrap_or("")))
        .filter_map(|r| at(&r).map(|p| (r, p)))
        .collect();
    let mut events = Vec::new();
    for e in list(Kind::Event)? {
        let open = e
            .field("status")
            .and_then(EventStatus::parse)
            .is_some_and(|s| s.is_open());
        if !open || (!category.is_empty() && e.field("category") != Some(category)) {
            continue;
        }
        let place = e
            .links
            .iter()
            .find(|l| l.link_type == LinkType::LocatedAt)
            .and_then(|l| places.iter().find(|(p, _)| p.id == l.target));
        if let Some((_, p)) = place {
            events.push((e, *p));
        }
    }
    let mut all: Vec<(f64, f64)> = bounds
        .iter()
        .flat_map(|(_, mp)| mp.iter().flatten().flatten().copied())
        .collect();
    all.extend(places.iter().map(|(_, p)| *p));
    all.extend(visits.iter().map(|(_, p)| *p));
    let Some(frame) = Frame::new(&all, f64::from(width), f64::from(height)) else {
        return Ok(MapView {
            width,
            height,
            areas: Vec::new(),
            places: Vec::new(),
            visits: Vec::new(),
            events: Vec::new(),
            category: category.to_owned(),
            from: from.to_owned(),
            until: until.to_owned(),
            empty: true,
            tiles: Vec::new(),
        });
    };
    let dots = |items: &[(gridwork_core::Record, (f64, f64))]| -> Vec<Dot> {
        items
            .iter()
            .map(|(r, (lon, lat))| {
                let (x, y) = frame.xy(*lon, *lat);
                Dot {
                    x,
                    y,
                    title: title(r),
                    id: r.id.clone(),
                }
            })
            .collect()
    };
    let area_paths = bounds
        .iter()
        .map(|(a, mp)| {
            // The label at the middle of the boundary's first ring.
            let ring = &mp[0][0];
            let n = ring.len() as f64;
            let (lon, lat) = ring
                .iter()
                .fold((0.0, 0.0), |(x, y), (a, b)| (x + a / n, y + b / n));
            let (x, y) = frame.xy(lon, lat);
            (format!("{} ({})", a.name, a.id), frame.path(mp), x, y)
        })
        .collect();
    Ok(MapView {
        width,
        height,
        areas: area_paths,
        places: dots(&places),
        visits: dots(&visits),
        events: dots(&events),
        category: category.to_owned(),
        from: from.to_owned(),
        until: until.to_owned(),
        empty: false,
        tiles: tiles.map(|t| frame.tiles(t)).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_read_from_any_polygon_geojson_and_checked() {
        let square = r#"{"type":"Polygon","coordinates":[[[120,30],[120.01,30],[120.01,30.01],[120,30.01],[120,30]]]}"#;
        assert_eq!(parse_boundary(square).unwrap().len(), 1);
        let fc = format!(
            r#"{{"type":"FeatureCollection","features":[{{"type":"Feature","properties":{{}},"geometry":{square}}},{{"type":"Feature","geometry":{{"type":"Point","coordinates":[1,2]}}}}]}}"#
        );
        assert_eq!(parse_boundary(&fc).unwrap().len(), 1);
        let stored = to_geojson(&parse_boundary(square).unwrap());
        assert_eq!(
            parse_boundary(&stored).unwrap(),
            parse_boundary(square).unwrap()
        );
        for bad in [
            "not json",
            r#"{"type":"Point","coordinates":[1,2]}"#,
            r#"{"type":"Polygon","coordinates":[[[200,30],[120,30],[120,31],[200,30]]]}"#,
            r#"{"type":"Polygon","coordinates":[[[120,30],[120,31]]]}"#,
            r#"{"coordinates":[]}"#,
        ] {
            assert!(parse_boundary(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_frame_keeps_points_inside() {
        let f = Frame::new(&[(120.0, 30.0), (120.02, 30.01)], 960.0, 640.0).unwrap();
        for (lon, lat) in [(120.0, 30.0), (120.02, 30.01), (120.01, 30.005)] {
            let (x, y) = f.xy(lon, lat);
            assert!(
                (0.0..=960.0).contains(&x) && (0.0..=640.0).contains(&y),
                "{x} {y}"
            );
        }
    }

    #[test]
    fn tiles_cover_the_frame_at_a_fitting_zoom() {
        let f = Frame::new(&[(120.150, 30.270), (120.160, 30.278)], 960.0, 640.0).unwrap();
        let tiles = f.tiles("https://tiles.example/{z}/{x}/{y}.png");
        assert!(!tiles.is_empty() && tiles.len() <= 64);
        assert!(tiles
            .iter()
            .all(|t| t.url.starts_with("https://tiles.example/1")));
        assert!(
            tiles.iter().all(|t| t.size > 128.0 && t.size < 512.0),
            "about 256 units"
        );
        // Together they cover the whole frame.
        let (min_x, min_y) = tiles
            .iter()
            .fold((f64::MAX, f64::MAX), |(a, b), t| (a.min(t.x), b.min(t.y)));
        let max_x = tiles.iter().map(|t| t.x + t.size).fold(0.0, f64::max);
        let max_y = tiles.iter().map(|t| t.y + t.size).fold(0.0, f64::max);
        assert!(min_x <= 0.0 && min_y <= 0.0 && max_x >= 960.0 && max_y >= 640.0);
        assert_eq!(
            tile_origin("https://tiles.example:8443/{z}/{x}/{y}.png").unwrap(),
            "https://tiles.example:8443"
        );
        assert!(tile_origin("javascript:alert(1)").is_err());
        assert!(tile_origin("https://tiles.example/static.png").is_err());
    }
}
