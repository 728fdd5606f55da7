//! City forms on the device: the forms the relay sent (an operator defines them per kind and area; each
//! covers its area's subtree), the fields a record of a kind in an area carries, and a record's
//! attributes read against them. The rule book checks every attribute value a write sets by these forms
//! (see `gridwork_protocol::rules`), as the relay does on push; a new record must also fill the fields
//! its form requires (a convenience of the form: the relay does not ask it of devices that could not
//! know the form yet).
use super::{meta, set_meta, Store};
use crate::error::{Error, Result};
use crate::model::Kind;
use gridwork_protocol::{form_fields, read_form, FieldValue, Form, FormField};
use rusqlite::{params, Connection, Transaction};

/// `forms_version` of the forms last taken from the relay.
const META_FORMS_VERSION: &str = "forms_version";

/// The forms stored in the store, by id. One that does not read is corruption.
pub(super) fn load_forms(conn: &Connection) -> Result<Vec<Form>> {
    load_definitions(conn, "SELECT definition FROM forms ORDER BY id", "form")
}

/// Definitions (schedules or forms) stored as JSON, read with `sql`.
pub(super) fn load_definitions<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    what: &str,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for def in rows {
        out.push(
            serde_json::from_str(&def?)
                .map_err(|e| Error::Corrupt(format!("a stored {what}: {e}")))?,
        );
    }
    Ok(out)
}

/// Replaces every row of `table` (`id`, `definition`) with `rows` and notes `version` under
/// `meta_key`, in the caller's transaction.
pub(super) fn replace_definitions(
    tx: &Transaction<'_>,
    table: &str,
    rows: &[(&str, String)],
    meta_key: &str,
    version: &str,
) -> Result<()> {
    tx.execute(&format!("DELETE FROM {table}"), [])?;
    let mut insert = tx.prepare(&format!(
        "INSERT OR REPLACE INTO {table} (id, definition) VALUES (?1, ?2)"
    ))?;
    for (id, def) in rows {
        insert.execute(params![id, def])?;
    }
    set_meta(tx, meta_key, version)
}

impl Store {
    /// The city forms this device has from the relay, by id.
    pub fn forms(&self) -> Result<Vec<Form>> {
        Ok(self.lock().forms.clone())
    }

    /// The fields a record of `kind` in `area` carries: every form of the kind on the path from the
    /// root to the area, a deeper area's field replacing an ancestor's of the same key. An app draws
    /// its form from this (labels, types, options, required, help).
    pub fn form_fields(&self, kind: Kind, area: &str) -> Result<Vec<FormField>> {
        let inner = self.lock();
        Ok(form_fields(&inner.forms, &inner.area_paths, kind, area))
    }

    /// A record's attributes read against its form: each form field with its value and whether it is
    /// valid, outdated (entered under an earlier definition), missing (required, empty), then the
    /// attributes no form defines. Nothing is changed: old values stay as they were entered.
    pub fn record_form(&self, id: &str) -> Result<Vec<FieldValue>> {
        let record = self.get(id)?;
        let fields = self.form_fields(record.kind, &record.area)?;
        Ok(read_form(&fields, &record.attrs))
    }

    /// `forms_version` of the forms last taken from the relay.
    pub(crate) fn forms_version(&self) -> Result<Option<String>> {
        meta(&self.lock().conn, META_FORMS_VERSION)
    }

    /// Replaces the forms with the relay's (`version` is their `forms_version`), in one transaction.
    /// Each is checked as the relay checks it; one that is not well-formed is left out.
    pub(crate) fn adopt_forms(&self, forms: &[Form], version: &str) -> Result<()> {
        let mut inner = self.lock();
        inner.check_writable()?;
        let mut kept = Vec::new();
        let mut rows = Vec::new();
        for f in forms {
            if let Err(why) = f.check() {
                tracing::warn!(form = %f.id, %why, "a form from the relay is not well-formed: left out");
                continue;
            }
            let def = serde_json::to_string(f).map_err(|e| Error::InvalidInput(e.to_string()))?;
            rows.push((f.id.as_str(), def));
            kept.push(f.clone());
        }
        let tx = inner.conn.transaction()?;
        replace_definitions(&tx, "forms", &rows, META_FORMS_VERSION, version)?;
        tx.commit()?;
        inner.forms_version = (!kept.is_empty()).then(|| gridwork_protocol::forms_version(&kept));
        inner.forms = kept;
        Ok(())
    }
}

/// The friendly check of a new record's attributes: the fields its form requires are filled.
pub(crate) fn check_required(
    forms: &[Form],
    areas: &std::collections::HashMap<String, String>,
    kind: Kind,
    area: &str,
    attrs: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    if forms.is_empty() {
        return Ok(());
    }
    for f in form_fields(forms, areas, kind, area) {
        if f.required && attrs.get(&f.key).is_none_or(|v| v.trim().is_empty()) {
            return Err(Error::field(
                &format!("attrs.{}", f.key),
                "required by the form",
            ));
        }
    }
    Ok(())
}
