//! Duplicate candidates, offline: before (or after) a person, place or organisation is registered, the
//! records on this device that may be the same one. People: the same ID number; the same name with the
//! same birth date; the same name at the same home. Places: the same name at the same address.
//! Organisations: the same name at the same place or with the same contact phone. Names are compared
//! as written (spaces and case aside) and by their pinyin without tones, so 王芳, 汪芳 and Wang Fang
//! meet.
use super::records::{summaries, NewRecord, RecordSummary};
use super::Store;
use crate::error::Result;
use crate::model::{search_number, Kind};
use gridwork_protocol::duplicates::normalized;
pub use gridwork_protocol::duplicates::{name_key, DuplicateReason};
use serde::{Deserialize, Serialize};

/// A record that may be the same as the one being registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateCandidate {
    pub record: RecordSummary,
    pub reasons: Vec<DuplicateReason>,
}

fn same_text(a: &str, b: &str) -> bool {
    !a.trim().is_empty() && normalized(a) == normalized(b)
}

impl Store {
    /// The records on this device (in this user's scope, not deleted) that may be the same person,
    /// place or organisation as `new`, with why; none for other kinds.
    pub fn duplicate_candidates(&self, new: &NewRecord) -> Result<Vec<DuplicateCandidate>> {
        let Some(kind) = new.kind else {
            return Ok(Vec::new());
        };
        let field = |k: &str| new.fields.get(k).map(String::as_str).unwrap_or("").trim();
        let name = field("name");
        let key = name_key(name);
        let same_name = |other: &str| {
            !name.is_empty()
                && (same_text(name, other) || (!key.is_empty() && name_key(other) == key))
        };
        // (field to compare, reason), for the kind.
        let rules: &[(&str, DuplicateReason)] = match kind {
            Kind::Person => &[
                ("birth_date", DuplicateReason::SameNameAndBirthDate),
                ("home_place", DuplicateReason::SameNameAndHome),
            ],
            Kind::Place => &[("address", DuplicateReason::SameNameAndAddress)],
            Kind::Organisation => &[
                ("place", DuplicateReason::SameNameAndPlace),
                ("contact_phone", DuplicateReason::SameNameAndPhone),
            ],
            _ => return Ok(Vec::new()),
        };
        let inner = self.lock();
        let in_scope = inner.scope();
        let mut found: std::collections::BTreeMap<i64, Vec<DuplicateReason>> = Default::default();
        // The same ID number: through the number index.
        if kind == Kind::Person {
            if let Some(n) = search_number(field("id_number")) {
                let mut st = inner.conn.prepare_cached(
                    "SELECT r.rid, r.area, p.id_number FROM numbers n JOIN records r ON r.rid = n.rid
                     JOIN p_person p ON p.rid = r.rid
                     WHERE n.number = ?1 AND r.deleted = 0",
                )?;
                let rows = st.query_map([&n], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })?;
                for row in rows {
                    let (rid, area, id) = row?;
                    if in_scope(&area) && id.as_deref().and_then(search_number).as_ref() == Some(&n)
                    {
                        found
                            .entry(rid)
                            .or_default()
                            .push(DuplicateReason::SameIdNumber);
                    }
                }
            }
        }
        // The same name with the same value of a field.
        if !name.is_empty() {
            for (column, reason) in rules {
                let value = field(column);
                if value.is_empty() {
                    continue;
                }
                // Dates and record ids are stored in their one valid form: SQLite keeps only the
                // equal rows; addresses and phones are compared loosely, row by row, below.
                let exact = !matches!(*column, "address" | "contact_phone");
                let mut st = inner.conn.prepare_cached(&format!(
                    "SELECT r.rid, r.area, p.name, p.{column} FROM {table} p JOIN records r ON r.rid = p.rid
                     WHERE r.deleted = 0 AND p.{column} IS NOT NULL AND (?1 IS NULL OR p.{column} = ?1)",
                    table = kind.table()
                ))?;
                let key = exact.then(|| normalized(value));
                let rows = st.query_map([key], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })?;
                for row in rows {
                    let (rid, area, other_name, other_value) = row?;
                    let same_value = match *column {
                        "contact_phone" => {
                            search_number(value).is_some()
                                && search_number(value) == search_number(&other_value)
                        }
                        _ => same_text(value, &other_value),
                    };
                    if same_value
                        && in_scope(&area)
                        && same_name(other_name.as_deref().unwrap_or(""))
                    {
                        found.entry(rid).or_default().push(*reason);
                    }
                }
            }
        }
        // The lookups above find the candidates quickly; whether and why each is one is the protocol's
        // rule, the one the relay and the duplicates list apply.
        let mut incoming = crate::model::Record::empty("", kind, new.area.clone());
        incoming.fields = new.fields.clone();
        let mut summaries_found = Vec::new();
        for rid in found.into_keys() {
            if let Some(record) = summaries(&inner, &[rid])?.pop() {
                summaries_found.push(record);
            }
        }
        drop(in_scope);
        drop(inner);
        let mut out = Vec::new();
        for record in summaries_found {
            let other = self.get(&record.id)?;
            let reasons = gridwork_protocol::duplicates::reasons(&incoming, &other);
            if reasons.is_empty() {
                continue;
            }
            let fields = record
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), kind.list_value(k, v)))
                .collect();
            out.push(DuplicateCandidate {
                record: RecordSummary { fields, ..record },
                reasons,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_compared_without_spaces_and_case() {
        assert!(same_text("Li  Wei", "li wei"));
        assert!(!same_text("", ""));
    }
}
