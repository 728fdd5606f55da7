//! City forms: the attributes each city asks for. An operator defines a form per record kind and area on
//! the relay; a form applies to the area's whole subtree, and a record's form is every form of its kind
//! on the path from the root to its home area, a deeper area's field replacing an ancestor's field of
//! the same key. Forms reach devices on sync like schedules do.
//!
//! A form field is a record attribute (`attrs.<key>`). The rule book checks every attribute value a
//! change *writes* against the field's type, on the device and on the relay; values already stored are
//! never judged again, so a form that changes leaves old values readable, and [`FieldValue::state`]
//! flags those that no longer fit. A required field is asked for by the device when a record is made
//! (a convenience for the form); the relay does not refuse a record without it, because a device that
//! worked offline since the field became required could not have known (ODK Central and CommCare make
//! the same choice: validation of what must be filled is the form's, of what is filled the server's).
use super::Kind;
use crate::rules::Areas;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The type of a form field's value, and how it is stored as attribute text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormType {
    /// One line of text.
    Text,
    /// A decimal number (`-12.5`).
    Number,
    /// `YYYY-MM-DD`.
    Date,
    /// One of the options.
    Choice,
    /// Several of the options, stored joined by `;` in the options' order.
    Choices,
    /// `yes` or `no`.
    YesNo,
    /// A phone number (digits, spaces, dashes, a leading `+`).
    Phone,
    /// A mainland resident ID number (18 characters with a valid check character, or 15 digits):
    /// masked in lists and exports like a person's `id_number`.
    IdNumber,
}

impl FormType {
    pub const ALL: [FormType; 8] = [
        FormType::Text,
        FormType::Number,
        FormType::Date,
        FormType::Choice,
        FormType::Choices,
        FormType::YesNo,
        FormType::Phone,
        FormType::IdNumber,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FormType::Text => "text",
            FormType::Number => "number",
            FormType::Date => "date",
            FormType::Choice => "choice",
            FormType::Choices => "choices",
            FormType::YesNo => "yes_no",
            FormType::Phone => "phone",
            FormType::IdNumber => "id_number",
        }
    }

    pub fn parse(s: &str) -> Option<FormType> {
        FormType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    fn has_options(self) -> bool {
        matches!(self, FormType::Choice | FormType::Choices)
    }
}

/// One field of a form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormField {
    /// The attribute key: 1 to 64 of `a-z`, `0-9` and `_`, starting with a letter.
    pub key: String,
    pub label_zh: String,
    pub label_en: String,
    #[serde(rename = "type")]
    pub ty: FormType,
    #[serde(default)]
    pub required: bool,
    /// The options of a choice (1 to 100, each 1 to 100 characters, no `;`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help_zh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help_en: Option<String>,
}

/// A form: the fields records of `kind` carry in the subtree of `area`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Form {
    pub id: String,
    pub area: String,
    pub kind: Kind,
    pub fields: Vec<FormField>,
}

/// Most fields one form may define.
pub const MAX_FORM_FIELDS: usize = 200;

fn is_id(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn short_text(s: &str, max: usize) -> bool {
    let n = s.trim().chars().count();
    n >= 1 && s.chars().count() <= max && !s.chars().any(char::is_control)
}

impl Form {
    /// Checks what an operator may define: an id of 1 to 64 of `[a-z0-9_-]`, a kind that is not a
    /// visit, 1 to 200 fields with distinct well-formed keys, both labels, options for (and only for)
    /// choices, help texts of at most 1,000 characters.
    pub fn check(&self) -> Result<(), String> {
        if !is_id(&self.id, 64) {
            return Err("a form id is 1 to 64 of a-z, 0-9, '-' and '_'".into());
        }
        if self.kind == Kind::Visit {
            return Err("visits have a checklist, not a form".into());
        }
        if self.fields.is_empty() || self.fields.len() > MAX_FORM_FIELDS {
            return Err(format!("a form has 1 to {MAX_FORM_FIELDS} fields"));
        }
        let mut keys = std::collections::HashSet::new();
        for f in &self.fields {
            let key_ok = f.key.len() <= 64
                && f.key.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && f.key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !key_ok {
                return Err(format!(
                    "field key {:?}: 1 to 64 of a-z, 0-9 and '_', starting with a letter",
                    f.key
                ));
            }
            if !keys.insert(f.key.as_str()) {
                return Err(format!("field key {} appears twice", f.key));
            }
            if !short_text(&f.label_zh, 100) || !short_text(&f.label_en, 100) {
                return Err(format!(
                    "field {}: a Chinese and an English label of 1 to 100 characters",
                    f.key
                ));
            }
            for help in [&f.help_zh, &f.help_en].into_iter().flatten() {
                if help.chars().count() > 1000 || help.chars().any(|c| c.is_control() && c != '\n')
                {
                    return Err(format!("field {}: help is at most 1000 characters", f.key));
                }
            }
            if f.ty.has_options() {
                if f.options.is_empty() || f.options.len() > 100 {
                    return Err(format!("field {}: a choice lists 1 to 100 options", f.key));
                }
                let mut seen = std::collections::HashSet::new();
                for o in &f.options {
                    if !short_text(o, 100) || o.contains(';') || o.trim() != o {
                        return Err(format!(
                            "field {}: an option is 1 to 100 characters of trimmed text without ';'",
                            f.key
                        ));
                    }
                    if !seen.insert(o.as_str()) {
                        return Err(format!("field {}: an option appears twice", f.key));
                    }
                }
            } else if !f.options.is_empty() {
                return Err(format!(
                    "field {}: only choice and choices fields have options",
                    f.key
                ));
            }
        }
        Ok(())
    }
}

impl FormField {
    /// Checks a value written to this field. The empty string clears a field and is always valid.
    /// The error names the field and its rule, never the value (values may be personal data).
    pub fn check_value(&self, value: &str) -> Result<(), String> {
        if value.is_empty() {
            return Ok(());
        }
        let ok = match self.ty {
            FormType::Text => true,
            FormType::Number => value
                .parse::<f64>()
                .is_ok_and(|n| n.is_finite() && value.trim() == value),
            FormType::Date => super::time::parse_date(value).is_some(),
            FormType::Choice => self.options.iter().any(|o| o == value),
            FormType::Choices => {
                // Each listed once, in the options' order.
                let mut at = 0;
                value
                    .split(';')
                    .all(|v| match self.options[at..].iter().position(|o| o == v) {
                        Some(i) => {
                            at += i + 1;
                            true
                        }
                        None => false,
                    })
            }
            FormType::YesNo => value == "yes" || value == "no",
            FormType::Phone => {
                let digits = value.bytes().filter(u8::is_ascii_digit).count();
                (3..=20).contains(&digits)
                    && value.bytes().enumerate().all(|(i, b)| {
                        b.is_ascii_digit() || b == b' ' || b == b'-' || (b == b'+' && i == 0)
                    })
            }
            FormType::IdNumber => is_resident_id(value),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("`attrs.{}`: {}", self.key, self.rule()))
        }
    }

    /// The rule a value must follow, in words.
    pub fn rule(&self) -> String {
        match self.ty {
            FormType::Text => "text".into(),
            FormType::Number => "a number".into(),
            FormType::Date => "a date YYYY-MM-DD".into(),
            FormType::Choice => format!("one of {}", self.options.join(", ")),
            FormType::Choices => format!(
                "some of {} joined by ';' in that order",
                self.options.join(", ")
            ),
            FormType::YesNo => "yes or no".into(),
            FormType::Phone => "a phone number (digits, spaces, dashes, leading +)".into(),
            FormType::IdNumber => {
                "a resident ID number (18 characters with a valid check character, or 15 digits)"
                    .into()
            }
        }
    }

    /// Whether lists and exports mask this field's values.
    pub fn sensitive(&self) -> bool {
        self.ty == FormType::IdNumber
    }
}

/// A mainland resident identity number: 17 digits and a check character (GB 11643, ISO 7064 MOD 11-2),
/// or the old 15 digits.
pub fn is_resident_id(value: &str) -> bool {
    let b = value.as_bytes();
    if b.len() == 15 {
        return b.iter().all(u8::is_ascii_digit);
    }
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = b[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize];
    b[17].to_ascii_uppercase() == check
}

/// The fields of a record of `kind` in `area`: every form of the kind on the path from the root to the
/// area, root first, a deeper area's field replacing one of the same key. Ordered as the forms list
/// them (root forms first). Unknown areas get no fields.
pub fn form_fields(forms: &[Form], areas: &dyn Areas, kind: Kind, area: &str) -> Vec<FormField> {
    let Some(path) = areas.path(area) else {
        return Vec::new();
    };
    let mut applicable: Vec<(usize, &Form)> = forms
        .iter()
        .filter(|f| f.kind == kind)
        .filter_map(|f| {
            let p = areas.path(&f.area)?;
            path.starts_with(p).then_some((p.len(), f))
        })
        .collect();
    // Root first; forms of one area by id, so every device orders them alike.
    applicable.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let mut out: Vec<FormField> = Vec::new();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for (_, form) in applicable {
        for f in &form.fields {
            match at.get(&f.key) {
                Some(&i) => out[i] = f.clone(),
                None => {
                    at.insert(f.key.clone(), out.len());
                    out.push(f.clone());
                }
            }
        }
    }
    out
}

/// How a stored attribute value stands against the record's form now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueState {
    /// Fits the field's current definition.
    Valid,
    /// Entered under an earlier definition and no longer fits it (kept, readable, to be corrected).
    Outdated,
    /// A required field with no value.
    Missing,
    /// An attribute no form defines (kept and readable).
    NotInForm,
}

/// One attribute of a record read against its form: the field's definition (`None` for an attribute
/// no form defines), the value and how it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldValue {
    pub key: String,
    pub field: Option<FormField>,
    pub value: Option<String>,
    pub state: ValueState,
}

/// A record's attributes read against its form fields: the form's fields in order, then attributes no
/// form defines.
pub fn read_form(fields: &[FormField], attrs: &BTreeMap<String, String>) -> Vec<FieldValue> {
    let mut out: Vec<FieldValue> = fields
        .iter()
        .map(|f| {
            let value = attrs.get(&f.key).filter(|v| !v.is_empty()).cloned();
            let state = match &value {
                None if f.required => ValueState::Missing,
                None => ValueState::Valid,
                Some(v) if f.check_value(v).is_ok() => ValueState::Valid,
                Some(_) => ValueState::Outdated,
            };
            FieldValue {
                key: f.key.clone(),
                field: Some(f.clone()),
                value,
                state,
            }
        })
        .collect();
    for (k, v) in attrs {
        if !fields.iter().any(|f| &f.key == k) {
            out.push(FieldValue {
                key: k.clone(),
                field: None,
                value: Some(v.clone()),
                state: ValueState::NotInForm,
            });
        }
    }
    out
}

/// The short form of a [`forms_version`] a change note carries.
pub fn forms_tag(forms_version: &str) -> &str {
    forms_version.get(..16).unwrap_or(forms_version)
}

/// The forms a user whose scope is `scope_path` is sent: those of the areas on the path to it and
/// under it (`areas` by id -> path). As `GET /v1/forms` answers, so `forms_version` of it is what the
/// user's device holds.
pub fn forms_for_scope<'a>(
    forms: &'a [Form],
    areas: &dyn Areas,
    scope_path: &str,
    operator: bool,
) -> Vec<&'a Form> {
    forms
        .iter()
        .filter(|f| {
            operator
                || areas
                    .path(&f.area)
                    .is_some_and(|p| p.starts_with(scope_path) || scope_path.starts_with(p))
        })
        .collect()
}

/// A digest of the forms a device is sent (hex SHA-256), as [`super::schedules_version`] for schedules.
pub fn forms_version<F: std::borrow::Borrow<Form>>(forms: &[F]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&Form> = forms.iter().map(|f| f.borrow()).collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut h = Sha256::new();
    for f in sorted {
        h.update(serde_json::to_vec(f).unwrap_or_default());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn field(key: &str, ty: FormType, options: &[&str]) -> FormField {
        FormField {
            key: key.into(),
            label_zh: "标签".into(),
            label_en: "Label".into(),
            ty,
            required: false,
            options: options.iter().map(|s| s.to_string()).collect(),
            help_zh: None,
            help_en: None,
        }
    }

    #[test]
    fn values_are_checked_by_type() {
        let f = field("n", FormType::Number, &[]);
        assert!(f.check_value("12.5").is_ok() && f.check_value("-3").is_ok());
        assert!(f.check_value("twelve").is_err() && f.check_value("NaN").is_err());
        let c = field("c", FormType::Choices, &["a", "b", "c"]);
        assert!(c.check_value("a;c").is_ok() && c.check_value("b").is_ok());
        assert!(c.check_value("c;a").is_err(), "out of order");
        assert!(c.check_value("a;a").is_err() && c.check_value("d").is_err());
        let y = field("y", FormType::YesNo, &[]);
        assert!(y.check_value("yes").is_ok() && y.check_value("maybe").is_err());
        let d = field("d", FormType::Date, &[]);
        assert!(d.check_value("2026-02-28").is_ok() && d.check_value("2026-02-30").is_err());
        let id = field("id", FormType::IdNumber, &[]);
        assert!(id.check_value("11010519491231002X").is_ok());
        assert!(
            id.check_value("110105194912310021").is_err(),
            "bad check digit"
        );
        let err = id.check_value("110105194912310021").unwrap_err();
        assert!(!err.contains("110105"), "errors never echo values: {err}");
        assert!(field("x", FormType::Text, &[]).check_value("").is_ok());
    }

    #[test]
    fn deeper_forms_replace_fields_of_the_same_key() {
        let areas: HashMap<String, String> = [("d1", "d1/"), ("c1", "d1/c1/"), ("c2", "d1/c2/")]
            .into_iter()
            .map(|(a, p)| (a.to_string(), p.to_string()))
            .collect();
        let city = Form {
            id: "city".into(),
            area: "d1".into(),
            kind: Kind::Person,
            fields: vec![
                field("income", FormType::Number, &[]),
                field("pension", FormType::YesNo, &[]),
            ],
        };
        let community = Form {
            id: "c1-extra".into(),
            area: "c1".into(),
            kind: Kind::Person,
            fields: vec![field("income", FormType::Choice, &["low", "high"])],
        };
        let forms = [community, city];
        let in_c1 = form_fields(&forms, &areas, Kind::Person, "c1");
        assert_eq!(in_c1.len(), 2);
        assert_eq!(
            (in_c1[0].key.as_str(), in_c1[0].ty),
            ("income", FormType::Choice)
        );
        let in_c2 = form_fields(&forms, &areas, Kind::Person, "c2");
        assert_eq!(in_c2[0].ty, FormType::Number);
        assert!(form_fields(&forms, &areas, Kind::Place, "c1").is_empty());
        assert!(form_fields(&forms, &areas, Kind::Person, "nowhere").is_empty());
    }

    #[test]
    fn old_values_are_flagged_not_dropped() {
        let mut required = field("pension", FormType::YesNo, &[]);
        required.required = true;
        let fields = vec![field("income", FormType::Number, &[]), required];
        let attrs: BTreeMap<String, String> = [("income", "about 3000"), ("legacy", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let read = read_form(&fields, &attrs);
        let states: Vec<(&str, ValueState)> =
            read.iter().map(|v| (v.key.as_str(), v.state)).collect();
        assert_eq!(
            states,
            [
                ("income", ValueState::Outdated),
                ("pension", ValueState::Missing),
                ("legacy", ValueState::NotInForm)
            ]
        );
        assert_eq!(read[0].value.as_deref(), Some("about 3000"));
    }

    #[test]
    fn definitions_are_checked() {
        let ok = Form {
            id: "f".into(),
            area: "d1".into(),
            kind: Kind::Person,
            fields: vec![field("a", FormType::Choice, &["x", "y"])],
        };
        assert!(ok.check().is_ok());
        let mut bad = ok.clone();
        bad.fields[0].options.clear();
        assert!(bad.check().is_err(), "a choice without options");
        let mut bad = ok.clone();
        bad.fields.push(field("a", FormType::Text, &[]));
        assert!(bad.check().is_err(), "duplicate key");
        let mut bad = ok.clone();
        bad.fields[0].key = "Bad Key".into();
        assert!(bad.check().is_err());
        let mut bad = ok;
        bad.kind = Kind::Visit;
        assert!(bad.check().is_err());
    }
}
