//! Follow-up schedules: which records must be visited how often. An operator defines them per area
//! (a schedule applies to the area's whole subtree) on the relay; they reach devices on sync, and each
//! device works out what is due from its own records and visits. A finished visit that includes a
//! record fulfils the record's follow-ups, by the visit's end time.
use super::time;
use super::Kind;
use serde::{Deserialize, Serialize};

/// How often: every `n` days, or every `n` calendar months.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Every {
    Days(u32),
    Months(u32),
}

/// Longest interval a schedule may have.
pub const MAX_EVERY_DAYS: u32 = 366;
pub const MAX_EVERY_MONTHS: u32 = 24;

impl Every {
    /// `weekly`, `monthly`, `quarterly`, `yearly`, `<n>d` (days), `<n>w` (weeks) or `<n>m` (months).
    pub fn parse(s: &str) -> Result<Every, String> {
        let s = s.trim().to_ascii_lowercase();
        let every = match s.as_str() {
            "daily" => Every::Days(1),
            "weekly" => Every::Days(7),
            "monthly" => Every::Months(1),
            "quarterly" => Every::Months(3),
            "yearly" => Every::Months(12),
            _ => {
                let (n, unit) = s.split_at(s.len().saturating_sub(1));
                let n: u32 = n
                    .parse()
                    .map_err(|_| format!("interval {s:?}: use weekly, monthly, 10d, 2w or 3m"))?;
                match unit {
                    "d" => Every::Days(n),
                    "w" => Every::Days(n.saturating_mul(7)),
                    "m" => Every::Months(n),
                    _ => {
                        return Err(format!(
                            "interval {s:?}: use weekly, monthly, 10d, 2w or 3m"
                        ))
                    }
                }
            }
        };
        every.check()?;
        Ok(every)
    }

    pub fn check(self) -> Result<(), String> {
        match self {
            Every::Days(n) if (1..=MAX_EVERY_DAYS).contains(&n) => Ok(()),
            Every::Months(n) if (1..=MAX_EVERY_MONTHS).contains(&n) => Ok(()),
            Every::Days(_) => Err(format!("every 1 to {MAX_EVERY_DAYS} days")),
            Every::Months(_) => Err(format!("every 1 to {MAX_EVERY_MONTHS} months")),
        }
    }

    /// When the next follow-up is due after one at `secs`.
    pub fn after(self, secs: i64) -> i64 {
        match self {
            Every::Days(n) => secs + i64::from(n) * 86_400,
            Every::Months(n) => time::add_months(secs, n),
        }
    }
}

impl std::fmt::Display for Every {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Every::Days(7) => f.write_str("weekly"),
            Every::Days(n) => write!(f, "{n}d"),
            Every::Months(1) => f.write_str("monthly"),
            Every::Months(n) => write!(f, "{n}m"),
        }
    }
}

/// A follow-up schedule for the subtree of `area`:
/// - records of `kind` (with `tag`, if given) are due a visit `every` interval after the last finished
///   visit that included them (a record never visited is due now);
/// - for `kind` event: closed events (of `category`, if given) are due one re-check visit `every`
///   interval after they were closed, done by a finished visit that includes the event after that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: String,
    pub area: String,
    pub name: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Events only: their category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub every: Every,
}

impl Schedule {
    /// Checks what an operator may define: the id `[a-z0-9_-]`, 1 to 64 characters; a name of 1 to 200
    /// characters; a tag of 1 to 64; a kind that is visited (not a visit); a bounded interval.
    pub fn check(&self) -> Result<(), String> {
        let id_ok = (1..=64).contains(&self.id.len())
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !id_ok {
            return Err("a schedule id is 1 to 64 of a-z, 0-9, '-' and '_'".into());
        }
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err("a schedule's name is 1 to 200 characters".into());
        }
        if let Some(tag) = &self.tag {
            if tag.trim().is_empty() || tag.chars().count() > 64 {
                return Err("a schedule's tag is 1 to 64 characters".into());
            }
        }
        if self.kind == Kind::Visit {
            return Err("visits are not followed up: choose the kind of record visited".into());
        }
        if let Some(c) = &self.category {
            if self.kind != Kind::Event {
                return Err(
                    "a category is for schedules of events (re-checks after closing)".into(),
                );
            }
            if !super::kind::EVENT_CATEGORY.contains(&c.as_str()) {
                return Err(format!(
                    "event category {c:?} is not one of {}",
                    super::kind::EVENT_CATEGORY.join(", ")
                ));
            }
        }
        self.every.check()
    }
}

/// A digest of the schedules a device is sent (hex SHA-256): equal for the same schedules in any order,
/// different when any of them changes or one comes or goes.
pub fn schedules_version(schedules: &[Schedule]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&Schedule> = schedules.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut h = Sha256::new();
    for s in sorted {
        // One JSON value per line: field order is the struct's, so equal schedules hash alike.
        h.update(serde_json::to_vec(s).unwrap_or_default());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Where a follow-up stands on the caller's calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DueState {
    /// Due before today.
    Overdue,
    Today,
    /// Within the next six days after today.
    ThisWeek,
    Later,
}

impl DueState {
    /// `due` seen at `now` by someone whose clock is `utc_offset_minutes` ahead of UTC (480 in China).
    pub fn of(due: i64, now: i64, utc_offset_minutes: i32) -> DueState {
        let offset = i64::from(utc_offset_minutes) * 60;
        let today = (now + offset).div_euclid(86_400) * 86_400 - offset;
        if due < today {
            DueState::Overdue
        } else if due < today + 86_400 {
            DueState::Today
        } else if due < today + 7 * 86_400 {
            DueState::ThisWeek
        } else {
            DueState::Later
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DueState::Overdue => "overdue",
            DueState::Today => "today",
            DueState::ThisWeek => "this_week",
            DueState::Later => "later",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule {
            id: "alone-weekly".into(),
            area: "c1".into(),
            name: "People living alone, weekly".into(),
            kind: Kind::Person,
            tag: Some("lives alone".into()),
            category: None,
            every: Every::Days(7),
        }
    }

    #[test]
    fn intervals_parse_and_print() {
        assert_eq!(Every::parse("weekly"), Ok(Every::Days(7)));
        assert_eq!(Every::parse("Monthly"), Ok(Every::Months(1)));
        assert_eq!(Every::parse("10d"), Ok(Every::Days(10)));
        assert_eq!(Every::parse("2w"), Ok(Every::Days(14)));
        assert_eq!(Every::parse("3m"), Ok(Every::Months(3)));
        for bad in ["", "0d", "367d", "25m", "week", "d", "-1d", "1y"] {
            assert!(Every::parse(bad).is_err(), "{bad}");
        }
        for e in [
            Every::Days(7),
            Every::Days(10),
            Every::Months(1),
            Every::Months(3),
        ] {
            assert_eq!(Every::parse(&e.to_string()), Ok(e));
        }
    }

    #[test]
    fn checks_what_an_operator_defines() {
        assert_eq!(schedule().check(), Ok(()));
        let bad = [
            Schedule {
                id: "Has Space".into(),
                ..schedule()
            },
            Schedule {
                id: String::new(),
                ..schedule()
            },
            Schedule {
                name: " ".into(),
                ..schedule()
            },
            Schedule {
                tag: Some(String::new()),
                ..schedule()
            },
            Schedule {
                kind: Kind::Visit,
                ..schedule()
            },
            Schedule {
                every: Every::Days(0),
                ..schedule()
            },
            Schedule {
                every: Every::Months(100),
                ..schedule()
            },
        ];
        for s in bad {
            assert!(s.check().is_err(), "{s:?}");
        }
        let recheck = Schedule {
            kind: Kind::Event,
            tag: None,
            category: Some("hazard_report".into()),
            ..schedule()
        };
        assert_eq!(recheck.check(), Ok(()));
    }

    #[test]
    fn the_version_names_the_schedules_not_their_order() {
        let a = schedule();
        let b = Schedule {
            id: "hazards".into(),
            kind: Kind::Object,
            tag: None,
            ..schedule()
        };
        let v = schedules_version(&[a.clone(), b.clone()]);
        assert_eq!(schedules_version(&[b.clone(), a.clone()]), v);
        assert_ne!(schedules_version(std::slice::from_ref(&a)), v);
        let c = Schedule {
            every: Every::Days(14),
            ..a.clone()
        };
        assert_ne!(schedules_version(&[c, b]), v);
    }

    #[test]
    fn due_states_follow_the_callers_calendar_day() {
        // 2026-11-22T02:00:00Z is 10:00 in Beijing (UTC+8).
        let now = time::parse_iso("2026-11-22T02:00:00Z").unwrap();
        let at = |s: &str| time::parse_iso(s).unwrap();
        let state = |s: &str| DueState::of(at(s), now, 480);
        // Beijing's 22 November runs from 2026-11-21T16:00:00Z.
        assert_eq!(state("2026-11-21T15:59:59Z"), DueState::Overdue);
        assert_eq!(state("2026-11-21T16:00:00Z"), DueState::Today);
        assert_eq!(state("2026-11-22T15:59:59Z"), DueState::Today);
        assert_eq!(state("2026-11-22T16:00:00Z"), DueState::ThisWeek);
        assert_eq!(state("2026-11-28T15:59:59Z"), DueState::ThisWeek);
        assert_eq!(state("2026-11-28T16:00:00Z"), DueState::Later);
        // In UTC the same instant is in another day.
        assert_eq!(
            DueState::of(at("2026-11-21T20:00:00Z"), now, 0),
            DueState::Overdue
        );
    }
}
