use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AreaLevel {
    District,
    Street,
    Community,
    Grid,
}

impl AreaLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AreaLevel::District => "district",
            AreaLevel::Street => "street",
            AreaLevel::Community => "community",
            AreaLevel::Grid => "grid",
        }
    }
    pub fn parse(s: &str) -> Option<AreaLevel> {
        Some(match s {
            "district" => AreaLevel::District,
            "street" | "town" => AreaLevel::Street,
            "community" | "village" => AreaLevel::Community,
            "grid" => AreaLevel::Grid,
            _ => return None,
        })
    }
    /// 1 for a district down to 4 for a grid (the relay stores levels as this number).
    pub fn rank(self) -> i64 {
        match self {
            AreaLevel::District => 1,
            AreaLevel::Street => 2,
            AreaLevel::Community => 3,
            AreaLevel::Grid => 4,
        }
    }
    pub fn from_rank(rank: i64) -> Option<AreaLevel> {
        Some(match rank {
            1 => AreaLevel::District,
            2 => AreaLevel::Street,
            3 => AreaLevel::Community,
            4 => AreaLevel::Grid,
            _ => return None,
        })
    }
    /// The level a child of this level has.
    pub fn child(self) -> Option<AreaLevel> {
        match self {
            AreaLevel::District => Some(AreaLevel::Street),
            AreaLevel::Street => Some(AreaLevel::Community),
            AreaLevel::Community => Some(AreaLevel::Grid),
            AreaLevel::Grid => None,
        }
    }
}

/// The one rule of the area tree, applied by the relay when an operator adds or moves an area and by a
/// device for areas it adds itself: a district is a root, and every other area sits exactly one level
/// below its parent (district > street > community > grid). The message names levels, never names.
pub fn check_placement(level: AreaLevel, parent: Option<AreaLevel>) -> Result<(), String> {
    match parent {
        None if level == AreaLevel::District => Ok(()),
        None => Err(format!(
            "a {} needs a parent; only a district is a root",
            level.as_str()
        )),
        Some(p) if p.child() == Some(level) => Ok(()),
        Some(p) => Err(format!(
            "a {} cannot be placed under a {} (district > street > community > grid)",
            level.as_str(),
            p.as_str()
        )),
    }
}

impl std::fmt::Display for AreaLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AreaLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AreaLevel::parse(s).ok_or_else(|| {
            format!("unknown level {s:?} (district | street/town | community/village | grid)")
        })
    }
}

/// A node of the area tree. `path` is the ids from the root, each followed by `/`
/// (`d1/s1/c1/g1/`), so "inside" is a prefix test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Area {
    pub id: String,
    pub parent: Option<String>,
    pub level: AreaLevel,
    pub name: String,
    pub path: String,
}

impl Area {
    pub fn contains_path(&self, other_path: &str) -> bool {
        other_path.starts_with(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AreaLevel::*;

    #[test]
    fn placement_rule_one_row_per_case() {
        let rows: &[(AreaLevel, Option<AreaLevel>, bool)] = &[
            (District, None, true),
            (Street, None, false),
            (Grid, None, false),
            (Street, Some(District), true),
            (Community, Some(Street), true),
            (Grid, Some(Community), true),
            (Grid, Some(District), false),
            (Grid, Some(Street), false),
            (Community, Some(District), false),
            (District, Some(District), false),
            (Street, Some(Grid), false),
            (Grid, Some(Grid), false),
        ];
        for (level, parent, ok) in rows {
            assert_eq!(
                check_placement(*level, *parent).is_ok(),
                *ok,
                "{level:?} under {parent:?}"
            );
        }
    }

    #[test]
    fn ranks_round_trip_and_aliases_parse() {
        for l in [District, Street, Community, Grid] {
            assert_eq!(AreaLevel::from_rank(l.rank()), Some(l));
            assert_eq!(l.as_str().parse::<AreaLevel>(), Ok(l));
        }
        assert_eq!("town".parse::<AreaLevel>(), Ok(Street));
        assert_eq!("village".parse::<AreaLevel>(), Ok(Community));
        assert!("county".parse::<AreaLevel>().is_err());
    }
}
