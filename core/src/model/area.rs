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
