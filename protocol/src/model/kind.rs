//! Record kinds and the fields each one carries. The projection tables and the field validation are
//! both derived from these specs, so adding a field is one line here plus a migration.
use crate::error::{Invalid, Result};
use crate::model::time;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Person,
    Place,
    Object,
    Organisation,
    Event,
    Visit,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldType {
    /// Free text on one line (names, titles).
    Text,
    /// One of a fixed set of values.
    Choice(&'static [&'static str]),
    /// `YYYY-MM-DD`.
    Date,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    DateTime,
    /// Digits with an optional leading `+`, spaces and dashes.
    Phone,
    /// A decimal number within a range.
    Number { min: f64, max: f64 },
    /// The id of another record of the given kind.
    Ref(Kind),
    /// A user id.
    User,
}

#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub ty: FieldType,
    /// Part of the full-text index.
    pub searchable: bool,
    /// Set only by the store (event status, reporter, reviews): not editable with `update`.
    pub managed: bool,
    /// Personal data that list output masks (ID-document numbers).
    pub sensitive: bool,
}

const fn field(name: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        searchable: false,
        managed: false,
        sensitive: false,
    }
}
const fn searchable(name: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        searchable: true,
        managed: false,
        sensitive: false,
    }
}
const fn managed(name: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        searchable: false,
        managed: true,
        sensitive: false,
    }
}

const LAT: FieldType = FieldType::Number {
    min: -90.0,
    max: 90.0,
};
const LON: FieldType = FieldType::Number {
    min: -180.0,
    max: 180.0,
};

pub const SEX: &[&str] = &["female", "male", "other", "unknown"];
pub const PLACE_CATEGORY: &[&str] = &["building", "unit", "shop", "site"];
pub const OBJECT_CATEGORY: &[&str] = &["facility", "hazard", "equipment", "vehicle"];
pub const CONDITION: &[&str] = &["good", "fair", "poor", "broken"];
pub const ORG_CATEGORY: &[&str] = &["company", "shop", "association", "committee"];
pub const EVENT_CATEGORY: &[&str] = &["incident", "dispute", "hazard_report", "service_request"];
pub const PRIORITY: &[&str] = &["low", "normal", "high", "urgent"];
pub const REVIEW: &[&str] = &["pending", "approved", "returned"];
pub const STATUS: &[&str] = &[
    "reported",
    "assigned",
    "in_progress",
    "resolved",
    "verified",
    "closed",
    "returned",
    "reopened",
];

const PERSON: &[FieldSpec] = &[
    searchable("name", FieldType::Text),
    field("sex", FieldType::Choice(SEX)),
    field("birth_date", FieldType::Date),
    field("phone", FieldType::Phone),
    FieldSpec {
        name: "id_number",
        ty: FieldType::Text,
        searchable: false,
        managed: false,
        sensitive: true,
    },
    field("home_place", FieldType::Ref(Kind::Place)),
];
const PLACE: &[FieldSpec] = &[
    field("category", FieldType::Choice(PLACE_CATEGORY)),
    searchable("name", FieldType::Text),
    searchable("address", FieldType::Text),
    field("lat", LAT),
    field("lon", LON),
    field("parent_place", FieldType::Ref(Kind::Place)),
];
const OBJECT: &[FieldSpec] = &[
    field("category", FieldType::Choice(OBJECT_CATEGORY)),
    searchable("name", FieldType::Text),
    field("place", FieldType::Ref(Kind::Place)),
    field("condition", FieldType::Choice(CONDITION)),
    field("last_inspection", FieldType::Date),
];
const ORGANISATION: &[FieldSpec] = &[
    field("category", FieldType::Choice(ORG_CATEGORY)),
    searchable("name", FieldType::Text),
    searchable("contact_name", FieldType::Text),
    field("contact_phone", FieldType::Phone),
    field("place", FieldType::Ref(Kind::Place)),
];
const EVENT: &[FieldSpec] = &[
    field("category", FieldType::Choice(EVENT_CATEGORY)),
    searchable("title", FieldType::Text),
    managed("status", FieldType::Choice(STATUS)),
    managed("reporter", FieldType::User),
    managed("assignee", FieldType::User),
    field("priority", FieldType::Choice(PRIORITY)),
    field("due", FieldType::DateTime),
    managed("reported_at", FieldType::DateTime),
];
const VISIT: &[FieldSpec] = &[
    managed("worker", FieldType::User),
    managed("started_at", FieldType::DateTime),
    managed("ended_at", FieldType::DateTime),
    field("lat", LAT),
    field("lon", LON),
    field(
        "accuracy",
        FieldType::Number {
            min: 0.0,
            max: 100_000.0,
        },
    ),
    searchable("purpose", FieldType::Text),
    managed("review_state", FieldType::Choice(REVIEW)),
    managed("review_comment", FieldType::Text),
    managed("reviewer", FieldType::User),
];

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Person,
        Kind::Place,
        Kind::Object,
        Kind::Organisation,
        Kind::Event,
        Kind::Visit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Person => "person",
            Kind::Place => "place",
            Kind::Object => "object",
            Kind::Organisation => "organisation",
            Kind::Event => "event",
            Kind::Visit => "visit",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The projection table of this kind.
    pub fn table(self) -> &'static str {
        match self {
            Kind::Person => "p_person",
            Kind::Place => "p_place",
            Kind::Object => "p_object",
            Kind::Organisation => "p_organisation",
            Kind::Event => "p_event",
            Kind::Visit => "p_visit",
        }
    }

    pub fn fields(self) -> &'static [FieldSpec] {
        match self {
            Kind::Person => PERSON,
            Kind::Place => PLACE,
            Kind::Object => OBJECT,
            Kind::Organisation => ORGANISATION,
            Kind::Event => EVENT,
            Kind::Visit => VISIT,
        }
    }

    pub fn spec(self, field: &str) -> Result<&'static FieldSpec> {
        self.fields()
            .iter()
            .find(|f| f.name == field)
            .ok_or_else(|| Invalid::UnknownField {
                kind: self.as_str().to_owned(),
                field: field.to_owned(),
            })
    }

    /// Whether values of `field` are looked up as numbers by search (phones, ID-document numbers).
    pub fn is_number_field(self, field: &str) -> bool {
        self.spec(field)
            .is_ok_and(|s| s.ty == FieldType::Phone || s.sensitive)
    }

    /// `value` of `field` as a list shows it: a sensitive field (an ID-document number) masked to its
    /// last four characters ([`mask`]), any other as it is. A record's own page shows it in full.
    pub fn list_value(self, field: &str, value: &str) -> String {
        match self.spec(field) {
            Ok(spec) if spec.sensitive => mask(value),
            _ => value.to_owned(),
        }
    }

    /// The field that names a record of this kind in lists.
    pub fn title_field(self) -> &'static str {
        match self {
            Kind::Event => "title",
            Kind::Visit => "purpose",
            _ => "name",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FieldSpec {
    /// Checks a value for this field. The empty string clears a field and is always valid.
    /// Errors name the field and the rule, never the value: values may be personal data.
    pub fn validate(&self, value: &str) -> Result<()> {
        if value.is_empty() {
            return Ok(());
        }
        if value.len() > 4096 {
            return Err(Invalid::field(self.name, "longer than 4096 bytes"));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(Invalid::field(self.name, "contains control characters"));
        }
        let ok = match self.ty {
            FieldType::Text | FieldType::User => true,
            FieldType::Choice(options) => {
                if !options.contains(&value) {
                    return Err(Invalid::field(
                        self.name,
                        format!("must be one of {}", options.join(", ")),
                    ));
                }
                true
            }
            FieldType::Date => time::parse_date(value).is_some(),
            FieldType::DateTime => time::parse_iso(value).is_some(),
            FieldType::Phone => {
                let digits = value.bytes().filter(u8::is_ascii_digit).count();
                (3..=20).contains(&digits)
                    && value.bytes().enumerate().all(|(i, b)| {
                        b.is_ascii_digit() || b == b' ' || b == b'-' || (b == b'+' && i == 0)
                    })
            }
            FieldType::Number { min, max } => value
                .parse::<f64>()
                .map(|n| n.is_finite() && n >= min && n <= max)
                .unwrap_or(false),
            FieldType::Ref(_) => crate::doc::is_valid_record_id(value),
        };
        if ok {
            Ok(())
        } else {
            Err(Invalid::field(self.name, self.rule()))
        }
    }

    fn rule(&self) -> String {
        match self.ty {
            FieldType::Date => "expected a date YYYY-MM-DD".into(),
            FieldType::DateTime => "expected a UTC time YYYY-MM-DDTHH:MM:SSZ".into(),
            FieldType::Phone => {
                "expected a phone number (digits, spaces, dashes, leading +)".into()
            }
            FieldType::Number { min, max } => format!("expected a number from {min} to {max}"),
            FieldType::Ref(kind) => format!("expected the id of a {kind}"),
            _ => "invalid value".into(),
        }
    }
}

/// Typed edges between records; stored in the source record's document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkType {
    LivesAt,
    MemberOf,
    LocatedAt,
    InvolvedIn,
    Owns,
}

impl LinkType {
    pub const ALL: [LinkType; 5] = [
        LinkType::LivesAt,
        LinkType::MemberOf,
        LinkType::LocatedAt,
        LinkType::InvolvedIn,
        LinkType::Owns,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkType::LivesAt => "lives_at",
            LinkType::MemberOf => "member_of",
            LinkType::LocatedAt => "located_at",
            LinkType::InvolvedIn => "involved_in",
            LinkType::Owns => "owns",
        }
    }

    pub fn parse(s: &str) -> Option<LinkType> {
        LinkType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Which kinds a link of this type may join (source, target).
    pub fn allows(self, source: Kind, target: Kind) -> bool {
        use Kind::*;
        match self {
            LinkType::LivesAt => source == Person && target == Place,
            LinkType::MemberOf => source == Person && target == Organisation,
            LinkType::LocatedAt => {
                matches!(source, Object | Organisation | Event) && target == Place
            }
            LinkType::InvolvedIn => {
                matches!(source, Person | Place | Object | Organisation) && target == Event
            }
            LinkType::Owns => {
                matches!(source, Person | Organisation) && matches!(target, Object | Place)
            }
        }
    }
}

impl std::fmt::Display for LinkType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A visit's review state; only a supervisor of the visit's area sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewState {
    Pending,
    Approved,
    Returned,
}

impl ReviewState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Pending => "pending",
            ReviewState::Approved => "approved",
            ReviewState::Returned => "returned",
        }
    }
    pub fn parse(s: &str) -> Option<ReviewState> {
        Some(match s {
            "pending" => ReviewState::Pending,
            "approved" => ReviewState::Approved,
            "returned" => ReviewState::Returned,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_by_type_without_echoing_values() {
        let phone = Kind::Person.spec("phone").unwrap();
        assert!(phone.validate("+86 138-0013-8000").is_ok());
        let err = phone.validate("13800138000x").unwrap_err().to_string();
        assert!(!err.contains("13800138000"), "{err}");
        assert!(Kind::Person.spec("sex").unwrap().validate("robot").is_err());
        assert!(Kind::Place.spec("lat").unwrap().validate("91").is_err());
        assert!(Kind::Place.spec("lat").unwrap().validate("31.23").is_ok());
        assert!(Kind::Person
            .spec("birth_date")
            .unwrap()
            .validate("1950-02-30")
            .is_err());
        assert!(Kind::Person
            .spec("home_place")
            .unwrap()
            .validate("nope")
            .is_err());
        assert!(Kind::Person
            .spec("name")
            .unwrap()
            .validate("a\u{0}b")
            .is_err());
        assert!(matches!(
            Kind::Person.spec("colour"),
            Err(Invalid::UnknownField { .. })
        ));
    }

    #[test]
    fn link_types_check_kinds() {
        assert!(LinkType::LivesAt.allows(Kind::Person, Kind::Place));
        assert!(!LinkType::LivesAt.allows(Kind::Place, Kind::Person));
        assert!(LinkType::InvolvedIn.allows(Kind::Person, Kind::Event));
    }
}

/// A phone or ID-document number as it is searched for: its digits (and an ID's check letter X),
/// without spaces, dashes, brackets or a leading + / 0086 / 86 country code on an 11-digit Chinese
/// mobile number. `None` for anything with fewer than 5 such characters or with letters other than
/// X: not a number to look up.
pub fn search_number(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '0'..='9' => out.push(c),
            'x' | 'X' => out.push('X'),
            ' ' | '-' | '+' | '(' | ')' | '.' => {}
            _ => return None,
        }
    }
    if out.contains('X')
        && !(out.len() == 18 && out.ends_with('X') && out.matches('X').count() == 1)
    {
        return None;
    }
    for prefix in ["0086", "86"] {
        if let Some(rest) = out.strip_prefix(prefix) {
            if rest.len() == 11 && rest.starts_with('1') {
                return Some(rest.to_owned());
            }
        }
    }
    (out.len() >= 5).then_some(out)
}

/// Hides all but the last 4 characters of a sensitive value (all of it when it is that short).
pub fn mask(value: &str) -> String {
    let n = value.chars().count();
    if n <= 4 {
        "****".into()
    } else {
        let tail: String = value.chars().skip(n - 4).collect();
        format!("****{tail}")
    }
}

#[cfg(test)]
mod number_tests {
    use super::*;

    #[test]
    fn numbers_are_searched_as_their_digits() {
        for (typed, number) in [
            ("138 0013 8000", "13800138000"),
            ("+86 138-0013-8000", "13800138000"),
            ("0086 13800138000", "13800138000"),
            ("(010) 6552-9988", "01065529988"),
            ("11010519491231002x", "11010519491231002X"),
            ("110105194912310021", "110105194912310021"),
            ("8612345", "8612345"),
        ] {
            assert_eq!(search_number(typed).as_deref(), Some(number), "{typed}");
        }
        for not_a_number in ["王小明", "1234", "12a45678", "X1234567", "Road 12", ""] {
            assert_eq!(search_number(not_a_number), None, "{not_a_number}");
        }
        assert!(Kind::Person.is_number_field("phone"));
        assert!(Kind::Person.is_number_field("id_number"));
        assert!(Kind::Organisation.is_number_field("contact_phone"));
        assert!(!Kind::Person.is_number_field("name"));
    }
}
