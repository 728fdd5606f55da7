//! Area paths and scope: who sees which records.
//!
//! An area's path is the ids from the root joined and terminated by `/` (`d1/s1/c1/g1/`), so
//! "area X is inside area Y" is `path(X).starts_with(path(Y))`. Per log entry and per record the relay
//! stores every *ancestor prefix* of the paths involved (`d1/`, `d1/s1/`, ...), so a caller's scope
//! query is an exact index match on its own area path, whatever its level.

use crate::model::Role;

/// What a caller may read and write. Workers and supervisors both see the subtree under their area
/// (a worker's area is normally a grid, so its subtree is the grid itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub role: Role,
    /// The caller's area path; ignored for operators.
    pub prefix: String,
}

impl Scope {
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// Is an area path inside the scope?
    pub fn contains(&self, path: &str) -> bool {
        self.is_operator() || path.starts_with(&self.prefix)
    }

    /// Is a record whose areas have these paths visible? (Visible from any of its areas.)
    /// An empty list (a record without a known area) is visible to operators only.
    pub fn allows_any<S: AsRef<str>>(&self, paths: &[S]) -> bool {
        self.is_operator() || paths.iter().any(|p| self.contains(p.as_ref()))
    }
}

/// Every prefix of a path that ends at a `/`: `a/b/` -> `a/`, `a/b/`.
pub fn ancestor_prefixes(path: &str) -> impl Iterator<Item = &str> {
    path.char_indices()
        .filter(|(_, c)| *c == '/')
        .map(move |(i, _)| &path[..=i])
}

/// The sorted, deduplicated ancestor prefixes of several paths: what the scope index stores.
pub fn scope_keys<S: AsRef<str>>(paths: &[S]) -> Vec<String> {
    let mut keys: Vec<String> = paths
        .iter()
        .flat_map(|p| ancestor_prefixes(p.as_ref()).map(str::to_owned))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Paths are stored as one text column, newline-separated (area ids cannot contain newlines).
pub fn join_paths<S: AsRef<str>>(paths: &[S]) -> String {
    paths
        .iter()
        .map(|p| p.as_ref())
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn split_paths(s: &str) -> Vec<String> {
    s.split('\n')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let v: Vec<_> = ancestor_prefixes("d1/s1/g1/").collect();
        assert_eq!(v, ["d1/", "d1/s1/", "d1/s1/g1/"]);
        assert_eq!(
            scope_keys(&["d1/s1/", "d1/s2/"]),
            ["d1/", "d1/s1/", "d1/s2/"]
        );
        let s = Scope {
            role: Role::Worker,
            prefix: "d1/s1/".into(),
        };
        assert!(s.allows_any(&["d1/s1/g1/"]));
        assert!(!s.allows_any(&["d1/s10/"]));
        assert!(!s.allows_any::<&str>(&[]));
    }
}
