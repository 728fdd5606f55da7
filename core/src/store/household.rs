//! Moving a household: a place with the people living there (linked `lives_at` to it, or with it as
//! their home) to another area in one call. Every move is judged by the rule book before any is made,
//! so a household the user may not move entirely is not split; links that now cross areas (a resident's
//! membership of an organisation in the old grid, say) are reported for someone to look at.
use super::records::check_area;
use super::Store;
use crate::error::{Error, Result};
use crate::model::{Kind, LinkEdge, LinkType};
use gridwork_protocol::rules;
use serde::{Deserialize, Serialize};

/// What moving a household did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdMove {
    /// The place, then its residents, that moved.
    pub moved: Vec<String>,
    /// Links of the moved records whose other end is in another area now.
    pub crossing_links: Vec<LinkEdge>,
}

impl Store {
    /// Moves `place` and the people living there to `area`.
    pub fn move_household(&self, place: &str, area: &str) -> Result<HouseholdMove> {
        let residents = {
            let mut inner = self.lock();
            let before = inner.editable(place, Some(Kind::Place))?;
            check_area(&inner.area_paths, area)?;
            let mut residents: Vec<String> = Vec::new();
            let mut st = inner.conn.prepare_cached(
                "SELECT r.id FROM links l JOIN records r ON r.rid = l.src
                 WHERE l.dst = ?1 AND l.type = ?2 AND r.kind = 'person' AND r.deleted = 0
                 UNION
                 SELECT r.id FROM p_person p JOIN records r ON r.rid = p.rid
                 WHERE p.home_place = ?1 AND r.deleted = 0
                 ORDER BY 1",
            )?;
            let rows = st.query_map([place, LinkType::LivesAt.as_str()], |r| r.get(0))?;
            for id in rows {
                residents.push(id?);
            }
            drop(st);
            // Judge every move first: all of the household moves, or none of it.
            let mut records = vec![before.record];
            for id in &residents {
                records.push(inner.editable(id, Some(Kind::Person))?.record);
            }
            for r in &records {
                if r.area != area {
                    inner.check(&r.id, |actor, areas| rules::may_move(actor, areas, r, area))?;
                }
            }
            residents
        };
        let mut moved = vec![place.to_owned()];
        moved.extend(residents);
        for id in &moved {
            self.move_record(id, area).map_err(|e| match e {
                // Judged above; a refusal now means the store changed meanwhile.
                Error::Forbidden(m) | Error::OutOfScope(m) => Error::InvalidInput(format!(
                    "the household was only partly moved (at {id}): {m}"
                )),
                other => other,
            })?;
        }
        let mut crossing_links = Vec::new();
        for id in &moved {
            for edge in self.links_of(id)? {
                let other = if &edge.source == id {
                    &edge.target
                } else {
                    &edge.source
                };
                if moved.contains(other) || crossing_links.contains(&edge) {
                    continue;
                }
                let other_area = match self.get(other) {
                    Ok(r) => r.area,
                    Err(Error::UnknownRecord(_)) => continue,
                    Err(e) => return Err(e),
                };
                if other_area != area {
                    crossing_links.push(edge);
                }
            }
        }
        Ok(HouseholdMove {
            moved,
            crossing_links,
        })
    }
}
