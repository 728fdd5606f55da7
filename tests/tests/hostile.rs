//! The hostile-device suite: the real `gridwork-server` process, as an operator runs it, on both
//! backends (embedded SQLite with SQLCipher, PostgreSQL), against devices that lie.
//!
//! Two kinds of hostile devices push forbidden changes with real tokens:
//! - real stores whose local identity lies (made offline as a supervisor, of another area, with
//!   another user's or device's name): their own rule book believes the lie, so the change is written
//!   and reaches the relay through the ordinary sync client;
//! - [`Forger`]s, which write Automerge changes by hand and push them over HTTP: forged notes, actors,
//!   timeline entries, counters, checksums, and bombs.
//!
//! Every case is one row of a table: who pushes what, the reason the relay must give, and the allowed
//! neighbour (the same thing done by someone allowed, or done right), which must be accepted. After
//! each refusal, what the relay stores (every log entry and every document's heads, as an operator
//! pulls and snapshots them) is exactly what it was before.
use gridwork_core::doc as layout;
use gridwork_core::*;
use gridwork_tests::forge::*;
use gridwork_tests::*;

use automerge::transaction::{Transactable, Transaction};
use automerge::{ActorId, Automerge, Change, ROOT};
use sha2::Digest;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The relay's time limit for a request (`gridwork_server::api::REQUEST_TIMEOUT`): every bomb must be
/// answered before it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A generous bound on the relay's peak resident memory through the bombs: a safety check with ample
/// margin (an unbounded inflate took 7 GB), not a speed goal.
const PEAK_MEMORY: u64 = 300 * 1024 * 1024;

/// The honest users: (user, role, area). Each has a real device (`<user>-dev`, an encrypted store) and
/// a forger (`<user>-forge`); `op` only reads, as an operator.
const USERS: [(&str, Role, &str); 5] = [
    ("wang", Role::Worker, "g1"),
    ("li", Role::Worker, "g1"),
    ("chen", Role::Worker, "g2"),
    ("zhao", Role::Supervisor, "c1"),
    ("sun", Role::Supervisor, "s1"),
];

/// A relay with the area tree d1 > s1 > c1 > {g1, g2} and another district d2 > s9 > c9 > g9, the
/// honest devices of [`USERS`], their forgers, and an operator's token to see what is stored.
struct World {
    dir: tempfile::TempDir,
    relay: Relay,
    op: String,
    devices: BTreeMap<&'static str, Device>,
    forgers: BTreeMap<&'static str, Forger>,
}

impl World {
    fn new(backend: &Backend) -> World {
        let dir = tempfile::tempdir().unwrap();
        let relay = Relay::start_on(backend, &dir.path().join("relay"));
        relay.add_areas();
        relay.add_area_tree(&OTHER_DISTRICT);
        let op = Forger::register(&relay, "op", Role::Operator, "d1", "op-reader").token;
        let mut devices = BTreeMap::new();
        let mut forgers = BTreeMap::new();
        for (user, role, area) in USERS {
            let device = Device::new(&relay, dir.path(), user, role, area);
            device.sync();
            devices.insert(user, device);
            let forger = Forger::register(&relay, user, role, area, &format!("{user}-forge"));
            forgers.insert(user, forger);
        }
        World {
            dir,
            relay,
            op,
            devices,
            forgers,
        }
    }

    fn stored(&self) -> Stored {
        Stored::read(&self.relay, &self.op)
    }

    /// `who`'s honest device: syncs, does `f` on its store, syncs again; everything it pushed must be
    /// accepted. Returns what `f` returned.
    fn honestly<T>(&self, who: &str, f: impl FnOnce(&Store) -> Result<T>) -> T {
        let device = &self.devices[who];
        device.sync();
        let out = f(&device.store).unwrap_or_else(|e| panic!("{who}'s honest write: {e}"));
        let report = device.sync();
        assert_eq!(report.rejected, 0, "{who}'s honest change was refused");
        assert!(device.store.quarantined().unwrap().is_empty());
        assert_eq!(device.store.outbox_len().unwrap(), 0);
        out
    }

    /// The record a row acts on, made through honest devices.
    fn target(&self, target: Target) -> String {
        use EventAction::*;
        let event = |w: &World| {
            w.honestly("wang", |s| {
                s.create(NewRecord::new(Kind::Event, "g1").field("title", "Broken street lamp"))
            })
        };
        let steps = |w: &World, who: &str, ev: &str, actions: Vec<EventAction>| {
            w.honestly(who, |s| {
                actions
                    .into_iter()
                    .try_for_each(|a| s.transition(ev, a, None).map(|_| ()))
            })
        };
        let to_self = |who: &str| Assign {
            assignee: who.into(),
        };
        match target {
            Target::Person => self.honestly("wang", |s| {
                s.create(NewRecord::new(Kind::Person, "g1").field("name", "Wu Fang"))
            }),
            Target::DeletedPerson => {
                let p = self.target(Target::Person);
                self.honestly("wang", |s| s.delete(&p, None));
                p
            }
            Target::FinishedVisit => self.honestly("li", |s| {
                let v = s.start_visit("g1", "home visit", None)?;
                s.finish_visit(&v, Some("All well."))?;
                Ok(v)
            }),
            Target::ReportedEvent => event(self),
            Target::ResolvedEvent => {
                let ev = event(self);
                steps(self, "wang", &ev, vec![to_self("wang"), Start, Resolve]);
                ev
            }
            Target::VerifiedAt(area) => {
                let ev = event(self);
                steps(self, "wang", &ev, vec![Escalate]);
                let owner = if area == "c1" {
                    "zhao"
                } else {
                    steps(self, "zhao", &ev, vec![Escalate]);
                    "sun"
                };
                steps(
                    self,
                    owner,
                    &ev,
                    vec![to_self(owner), Start, Resolve, Verify],
                );
                ev
            }
            Target::Nothing => String::new(),
        }
    }
}

/// What a row acts on, in the state the row needs.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// A person in g1, made by wang.
    Person,
    /// A person in g1, deleted by wang.
    DeletedPerson,
    /// li's finished visit in g1, pending review.
    FinishedVisit,
    /// An event wang reported in g1.
    ReportedEvent,
    /// An event in g1 that wang assigned to itself, started and resolved.
    ResolvedEvent,
    /// An event of g1 escalated to this area (c1 or s1), whose supervisor took it to `verified`.
    VerifiedAt(&'static str),
    /// None: the row makes a new record.
    Nothing,
}

/// Asserts that every answer is a refusal for `reason`, with a detail that says why.
fn assert_refused(case: &str, answers: &[serde_json::Value], reason: &str) {
    assert!(!answers.is_empty(), "{case}: no answer");
    for a in answers {
        assert_eq!(a["status"], "rejected", "{case}: {a}");
        assert_eq!(a["reason"], reason, "{case}: {a}");
        let detail = a["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "{case}: a refusal says why: {a}");
    }
}

fn assert_accepted(case: &str, answers: &[serde_json::Value]) {
    assert!(!answers.is_empty(), "{case}: no answer");
    for a in answers {
        assert_eq!(a["status"], "accepted", "{case}: the neighbour: {a}");
    }
}

// ---------------------------------------------------------------- changes written by hand

/// What a forged row's changes are written against: the relay's document of the target, and the
/// device that writes them.
struct Ctx<'a> {
    world: &'a World,
    by: &'a Forger,
    doc: Automerge,
}

const PHONE: &str = "13800000000";

impl Ctx<'_> {
    /// One change by this device doing `action`: `f` writes it.
    fn write(&self, action: &str, f: impl FnOnce(&mut Transaction<'_>)) -> Vec<u8> {
        self.by.write(&mut self.doc.clone(), action, f)
    }

    fn edit(&self, field: &str, value: &str) -> Vec<u8> {
        self.write("update", |tx| set_field(tx, field, value))
    }

    /// The phone edit, with `note` as the change's note (`None`: no note).
    fn noted(&self, note: Option<String>) -> Vec<u8> {
        self.by.write_noted(&mut self.doc.clone(), note, |tx| {
            set_field(tx, "phone", PHONE)
        })
    }

    fn put_root(&self, key: &str, value: &str) -> Vec<u8> {
        self.write("update", |tx| tx.put(ROOT, key, value).unwrap())
    }

    /// A move to `to` as a device writes it: the home area and a `move` entry.
    fn move_to(&self, to: &str) -> Vec<u8> {
        let from = layout::root_str(&self.doc, layout::AREA).unwrap();
        let me = self.by.user.clone();
        self.write("move", |tx| {
            tx.put(ROOT, layout::AREA, to).unwrap();
            timeline(tx, &me, "move", Some(&from), Some(to));
        })
    }

    /// An escalation that sets the responsible area to `responsible` and says `entry_to`.
    fn escalate(&self, responsible: &str, entry_to: &str) -> Vec<u8> {
        let from = layout::root_str(&self.doc, layout::RESPONSIBLE).unwrap();
        let me = self.by.user.clone();
        self.write("escalate", |tx| {
            tx.put(ROOT, layout::RESPONSIBLE, responsible).unwrap();
            timeline(tx, &me, "escalate", Some(&from), Some(entry_to));
        })
    }

    /// An event step from status `from` to `to`.
    fn step(&self, action: &str, from: &str, to: &str) -> Vec<u8> {
        let me = self.by.user.clone();
        self.write(action, |tx| {
            set_field(tx, "status", to);
            timeline(tx, &me, action, Some(from), Some(to));
        })
    }

    fn assign(&self, assignee: &str) -> Vec<u8> {
        let me = self.by.user.clone();
        self.write("assign", |tx| {
            set_field(tx, "status", "assigned");
            set_field(tx, "assignee", assignee);
            timeline(tx, &me, "assign", Some("reported"), Some(assignee));
        })
    }

    /// A visit review approving it, as a supervisor's device writes it.
    fn approve(&self) -> Vec<u8> {
        let me = self.by.user.clone();
        self.write("review", |tx| {
            set_field(tx, "review_state", "approved");
            set_field(tx, "reviewer", &me);
            timeline(tx, &me, "review", Some("pending"), Some("approved"));
        })
    }

    /// A delete whose timeline entry names `by`.
    fn delete_noting(&self, by: &str) -> Vec<u8> {
        self.write("delete", |tx| {
            tx.put(ROOT, layout::DELETED, true).unwrap();
            timeline(tx, by, "delete", None, None);
        })
    }

    fn restore(&self) -> Vec<u8> {
        let me = self.by.user.clone();
        self.write("restore", |tx| {
            tx.put(ROOT, layout::DELETED, false).unwrap();
            timeline(tx, &me, "restore", None, None);
        })
    }

    /// The phone edit with its operation counter moved to `start`.
    fn counter_at(&self, start: u64) -> Vec<u8> {
        let mut c = Change::try_from(&self.edit("phone", PHONE)[..])
            .unwrap()
            .decode();
        c.start_op = std::num::NonZeroU64::new(start).unwrap();
        Change::from(c).raw_bytes().to_vec()
    }

    /// A first change (no dependencies) for the record again: a new person in g1.
    fn recreate(&self) -> Vec<u8> {
        write_as(
            &self.by.actor,
            &mut Automerge::new(),
            Some(self.by.note("create")),
            |tx| {
                tx.put(ROOT, layout::KIND, "person").unwrap();
                tx.put(ROOT, layout::AREA, "g1").unwrap();
                tx.put(ROOT, layout::DELETED, false).unwrap();
                let f = tx
                    .put_object(ROOT, layout::FIELDS, automerge::ObjType::Map)
                    .unwrap();
                tx.put(&f, "name", "Someone Else").unwrap();
            },
        )
    }

    /// Two phone edits, the second on the first.
    fn two_edits(&self) -> [Vec<u8>; 2] {
        let mut doc = self.doc.clone();
        let first = self
            .by
            .write(&mut doc, "update", |tx| set_field(tx, "phone", PHONE));
        let second = self.by.write(&mut doc, "update", |tx| {
            set_field(tx, "phone", "13900000000")
        });
        [first, second]
    }
}

type Write = Box<dyn Fn(&Ctx) -> Vec<Vec<u8>>>;

/// A forbidden change written by hand, beside its allowed neighbour.
struct Forged {
    case: &'static str,
    target: Target,
    /// The user whose forger pushes the forbidden change.
    by: &'static str,
    forbidden: Write,
    reason: &'static str,
    /// The user whose forger pushes the neighbour, and its changes (all accepted).
    neighbour_by: &'static str,
    neighbour: Write,
}

fn forged(
    case: &'static str,
    target: Target,
    by: &'static str,
    forbidden: impl Fn(&Ctx) -> Vec<Vec<u8>> + 'static,
    reason: &'static str,
    neighbour_by: &'static str,
    neighbour: impl Fn(&Ctx) -> Vec<Vec<u8>> + 'static,
) -> Forged {
    Forged {
        case,
        target,
        by,
        forbidden: Box::new(forbidden),
        reason,
        neighbour_by,
        neighbour: Box::new(neighbour),
    }
}

/// The rule book's rows, each forged by hand.
fn forged_rows() -> Vec<Forged> {
    use Target::*;
    let phone = |c: &Ctx| vec![c.edit("phone", PHONE)];
    vec![
        // Visits: reviews are a supervisor's, never the visit's own worker's.
        forged(
            "self-approval: a worker approves its own visit",
            FinishedVisit,
            "li",
            |c| vec![c.approve()],
            "forbidden_role",
            "zhao",
            |c| vec![c.approve()],
        ),
        forged(
            "a supervisor sets a review without reviewing",
            FinishedVisit,
            "zhao",
            |c| {
                vec![c.write("update", |tx| {
                    set_field(tx, "review_state", "approved");
                    set_field(tx, "reviewer", "zhao");
                })]
            },
            "forbidden_role",
            "zhao",
            |c| vec![c.approve()],
        ),
        forged(
            "a worker edits another worker's visit",
            FinishedVisit,
            "wang",
            |c| vec![c.edit("purpose", "rewritten")],
            "forbidden_role",
            "li",
            |c| vec![c.edit("purpose", "weekly check")],
        ),
        // Authors: the note's user and device, the store, the timeline's `by`.
        forged(
            "the note names another user",
            Person,
            "wang",
            |c| vec![c.noted(Some(note_of("zhao", &c.by.device, "update")))],
            "wrong_author",
            "wang",
            phone,
        ),
        forged(
            "the note names another device of the same user",
            Person,
            "wang",
            |c| vec![c.noted(Some(note_of("wang", "wang-dev", "update")))],
            "wrong_author",
            "wang",
            phone,
        ),
        forged(
            "the change has no note",
            Person,
            "wang",
            |c| vec![c.noted(None)],
            "wrong_author",
            "wang",
            phone,
        ),
        forged(
            "the change was made by another store (the user's other device)",
            Person,
            "wang",
            |c| {
                let other = c.world.devices["wang"].store.actor_hex();
                let other = ActorId::from(hex::decode(other).unwrap());
                vec![write_as(
                    &other,
                    &mut c.doc.clone(),
                    Some(c.by.note("update")),
                    |tx| set_field(tx, "phone", PHONE),
                )]
            },
            "wrong_author",
            "wang",
            phone,
        ),
        forged(
            "a timeline entry names another user",
            Person,
            "wang",
            |c| vec![c.delete_noting("zhao")],
            "wrong_author",
            "wang",
            |c| vec![c.delete_noting("wang")],
        ),
        // Moving a record out of its area, or into another, through any field.
        forged(
            "a worker sets the home area to the next grid without a move",
            Person,
            "wang",
            |c| vec![c.put_root(layout::AREA, "g2")],
            "out_of_scope",
            "zhao",
            |c| vec![c.move_to("g2")],
        ),
        forged(
            "a supervisor sets the home area without a move",
            Person,
            "zhao",
            |c| vec![c.put_root(layout::AREA, "g2")],
            "out_of_scope",
            "zhao",
            |c| vec![c.move_to("g2")],
        ),
        forged(
            "a worker moves a record to the next grid",
            Person,
            "wang",
            |c| vec![c.move_to("g2")],
            "out_of_scope",
            "zhao",
            |c| vec![c.move_to("g2")],
        ),
        forged(
            "a worker moves a record into another district",
            Person,
            "wang",
            |c| vec![c.move_to("g9")],
            "out_of_scope",
            "zhao",
            |c| vec![c.move_to("g2")],
        ),
        forged(
            "a supervisor moves a record into another district",
            Person,
            "zhao",
            |c| vec![c.move_to("g9")],
            "out_of_scope",
            "zhao",
            |c| vec![c.move_to("g2")],
        ),
        forged(
            "a worker gives a person a responsible area",
            Person,
            "wang",
            |c| vec![c.put_root(layout::RESPONSIBLE, "g1")],
            "out_of_scope",
            "wang",
            phone,
        ),
        forged(
            "a worker escalates an event sideways",
            ReportedEvent,
            "wang",
            |c| vec![c.escalate("g2", "g2")],
            "invalid_value",
            "wang",
            |c| vec![c.escalate("c1", "c1")],
        ),
        forged(
            "a worker escalates sideways, its entry claiming the parent",
            ReportedEvent,
            "wang",
            |c| vec![c.escalate("g2", "c1")],
            "out_of_scope",
            "wang",
            |c| vec![c.escalate("c1", "c1")],
        ),
        forged(
            "a worker sets the responsible area without escalating",
            ReportedEvent,
            "wang",
            |c| vec![c.put_root(layout::RESPONSIBLE, "c1")],
            "out_of_scope",
            "wang",
            |c| vec![c.escalate("c1", "c1")],
        ),
        forged(
            "a supervisor escalates into another district",
            ReportedEvent,
            "zhao",
            |c| vec![c.escalate("c9", "c9")],
            "invalid_value",
            "zhao",
            |c| vec![c.escalate("c1", "c1")],
        ),
        // Event roles and escalated events.
        forged(
            "a worker assigns another worker",
            ReportedEvent,
            "wang",
            |c| vec![c.assign("li")],
            "forbidden_role",
            "wang",
            |c| vec![c.assign("wang")],
        ),
        forged(
            "a worker closes an event escalated to its community",
            VerifiedAt("c1"),
            "wang",
            |c| vec![c.step("close", "verified", "closed")],
            "out_of_scope",
            "zhao",
            |c| vec![c.step("close", "verified", "closed")],
        ),
        forged(
            "a community supervisor closes an event escalated to the street",
            VerifiedAt("s1"),
            "zhao",
            |c| vec![c.step("close", "verified", "closed")],
            "out_of_scope",
            "sun",
            |c| vec![c.step("close", "verified", "closed")],
        ),
        forged(
            "a worker verifies its own resolved event",
            ResolvedEvent,
            "wang",
            |c| vec![c.step("verify", "resolved", "verified")],
            "forbidden_role",
            "zhao",
            |c| vec![c.step("verify", "resolved", "verified")],
        ),
        // Set-once fields, append-only lists, values, tombstones.
        forged(
            "the reporter is rewritten",
            ReportedEvent,
            "wang",
            |c| vec![c.edit("reporter", "li")],
            "immutable_field",
            "wang",
            |c| vec![c.edit("title", "Two broken street lamps")],
        ),
        forged(
            "the kind is rewritten",
            Person,
            "wang",
            |c| vec![c.put_root(layout::KIND, "place")],
            "immutable_field",
            "wang",
            phone,
        ),
        forged(
            "a timeline entry is removed",
            ReportedEvent,
            "wang",
            |c| {
                vec![c.write("update", |tx| {
                    let list = layout::root_obj(tx, layout::TIMELINE).unwrap();
                    tx.delete(&list, 0).unwrap();
                })]
            },
            "append_only",
            "wang",
            |c| vec![c.edit("title", "Lamp out since Monday")],
        ),
        forged(
            "a value breaks its field's rule",
            Person,
            "wang",
            |c| vec![c.edit("sex", "not a choice")],
            "invalid_value",
            "wang",
            |c| vec![c.edit("sex", "female")],
        ),
        forged(
            "a deleted record is edited",
            DeletedPerson,
            "wang",
            |c| vec![c.edit("phone", PHONE)],
            "deleted",
            "wang",
            |c| vec![c.restore()],
        ),
        // Changes the log cannot take.
        forged(
            "a record is created again",
            Person,
            "wang",
            |c| vec![c.recreate()],
            "bad_record",
            "wang",
            phone,
        ),
        forged(
            "a change builds on a change the relay never had",
            Person,
            "wang",
            |c| vec![c.two_edits()[1].clone()],
            "missing_deps",
            "wang",
            |c| c.two_edits().to_vec(),
        ),
        forged(
            "a forged operation counter",
            Person,
            "wang",
            |c| vec![c.counter_at(1_000_000)],
            "malformed",
            "wang",
            phone,
        ),
        forged(
            "an operation counter past the record's limit",
            Person,
            "wang",
            |c| vec![c.counter_at(3_000_000)],
            "too_large",
            "wang",
            phone,
        ),
        forged(
            "a checksum that does not match",
            Person,
            "wang",
            |c| {
                let mut bytes = c.edit("phone", PHONE);
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
                vec![bytes]
            },
            "bad_checksum",
            "wang",
            phone,
        ),
    ]
}

fn forged_changes_are_refused_with_their_reason(backend: &Backend) {
    let w = World::new(backend);
    for row in forged_rows() {
        let record = w.target(row.target);
        let ctx = |who: &str| Ctx {
            world: &w,
            by: &w.forgers[who],
            doc: relay_doc(&w.relay, &w.op, &record),
        };
        let before = w.stored();
        let c = ctx(row.by);
        let changes = (row.forbidden)(&c);
        let pushed: Vec<(&str, Vec<u8>)> = changes.into_iter().map(|b| (&record[..], b)).collect();
        assert_refused(row.case, &c.by.push(&w.relay, &pushed), row.reason);
        assert_eq!(w.stored(), before, "{}: nothing stored changed", row.case);

        let c = ctx(row.neighbour_by);
        let changes = (row.neighbour)(&c);
        let pushed: Vec<(&str, Vec<u8>)> = changes.into_iter().map(|b| (&record[..], b)).collect();
        assert_accepted(row.case, &c.by.push(&w.relay, &pushed));
        assert_ne!(w.stored(), before, "{}: the neighbour is stored", row.case);
    }
}

// ---------------------------------------------------------------- stores that lie about themselves

type Act = fn(&Store, &str) -> Result<()>;

/// A forbidden change made by a real store whose identity lies, beside its allowed neighbour.
struct Lie {
    case: &'static str,
    target: Target,
    /// The user whose (new) device token the store holds.
    token_of: &'static str,
    /// What the store believes: user, device (None: the token's), role, area.
    believes: (&'static str, Option<&'static str>, Role, &'static str),
    act: Act,
    reason: &'static str,
    /// The honest device that does the allowed neighbour.
    neighbour_by: &'static str,
    neighbour: Act,
}

fn review(s: &Store, v: &str) -> Result<()> {
    s.review_visit(v, ReviewState::Approved, None)
}
fn move_to_g2(s: &Store, r: &str) -> Result<()> {
    s.move_record(r, "g2")
}
fn assign_li(s: &Store, ev: &str) -> Result<()> {
    let to = EventAction::Assign {
        assignee: "li".into(),
    };
    s.transition(ev, to, None).map(|_| ())
}
fn verify(s: &Store, ev: &str) -> Result<()> {
    s.transition(ev, EventAction::Verify, None).map(|_| ())
}
fn close(s: &Store, ev: &str) -> Result<()> {
    s.transition(ev, EventAction::Close, None).map(|_| ())
}
fn create_in(s: &Store, area: &str) -> Result<()> {
    s.create(NewRecord::new(Kind::Person, area).field("name", "Zhou Min"))
        .map(|_| ())
}
fn create_in_g1(s: &Store, _: &str) -> Result<()> {
    create_in(s, "g1")
}
fn create_in_g9(s: &Store, _: &str) -> Result<()> {
    create_in(s, "g9")
}
fn create_in_g7(s: &Store, _: &str) -> Result<()> {
    create_in(s, "g7")
}
fn edit_phone(s: &Store, r: &str) -> Result<()> {
    s.update(r, Update::new().set("phone", PHONE))
}

/// The rule book's rows, each broken by a store that believes something false about itself.
fn lying_rows() -> Vec<Lie> {
    use Role::*;
    use Target::*;
    let lie =
        |case, target, token_of, believes, act: Act, reason, neighbour_by, neighbour: Act| Lie {
            case,
            target,
            token_of,
            believes,
            act,
            reason,
            neighbour_by,
            neighbour,
        };
    vec![
        lie("a worker's store believing it supervises the community approves a visit",
            FinishedVisit, "wang", ("wang", None, Supervisor, "c1"), review, "forbidden_role",
            "zhao", review),
        lie("a worker's store believing it supervises the community moves a record to the next grid",
            Person, "wang", ("wang", None, Supervisor, "c1"), move_to_g2, "out_of_scope",
            "zhao", move_to_g2),
        lie("a worker's store believing it supervises the community assigns another worker",
            ReportedEvent, "wang", ("wang", None, Supervisor, "c1"), assign_li, "forbidden_role",
            "zhao", assign_li),
        lie("a worker's store believing it supervises the community verifies an event",
            ResolvedEvent, "wang", ("wang", None, Supervisor, "c1"), verify, "forbidden_role",
            "zhao", verify),
        lie("a community supervisor's store believing it supervises the street closes the street's event",
            VerifiedAt("s1"), "zhao", ("zhao", None, Supervisor, "s1"), close, "out_of_scope",
            "sun", close),
        lie("a worker's store believing it supervises another district creates a record there",
            Nothing, "wang", ("wang", None, Supervisor, "d2"), create_in_g9, "out_of_scope",
            "wang", create_in_g1),
        lie("a store believing in a grid the relay does not have creates a record there",
            Nothing, "wang", ("wang", None, Supervisor, "c1"), create_in_g7, "unknown_area",
            "wang", create_in_g1),
        lie("a store naming the user's other device edits a record",
            Person, "wang", ("wang", Some("wang-dev"), Worker, "g1"), edit_phone, "wrong_author",
            "wang", edit_phone),
        lie("a store naming another user edits a record",
            Person, "wang", ("zhao", Some("zhao-dev"), Supervisor, "c1"), edit_phone, "wrong_author",
            "wang", edit_phone),
    ]
}

/// A grid only the lying stores believe in.
const IMAGINED_GRID: [AreaSpec; 1] = [("g7", Some("c1"), AreaLevel::Grid, "Grid 7")];

fn lying_stores_are_refused_with_their_reason(backend: &Backend) {
    let w = World::new(backend);
    for (i, row) in lying_rows().into_iter().enumerate() {
        let record = w.target(row.target);
        let (user, device, role, area) = row.believes;
        let (token_role, token_area) = USERS
            .iter()
            .find(|u| u.0 == row.token_of)
            .map(|u| (u.1, u.2))
            .unwrap();
        let token_device = format!("{}-liar-{i}", row.token_of);
        let token = w
            .relay
            .add_device(row.token_of, token_role, token_area, &token_device);
        let identity = Identity {
            user_id: user.into(),
            device_id: device.map_or(token_device.clone(), str::to_owned),
            role,
            area: area.into(),
        };
        let liar = Device::offline(&w.relay, w.dir.path(), token.clone(), identity);
        for tree in [&AREAS[..], &OTHER_DISTRICT, &IMAGINED_GRID] {
            add_local_area_tree(&liar.store, tree);
        }
        // It holds what its token may pull (as a store that synced before would).
        let chunks: Vec<RemoteChunk> = pull_all(&w.relay, &token, 0)
            .into_iter()
            .map(|(_, record_id, bytes)| RemoteChunk { record_id, bytes })
            .collect();
        liar.store.apply_remote(&chunks).unwrap();
        // Its own rule book believes the lie: the write is made.
        (row.act)(&liar.store, &record)
            .unwrap_or_else(|e| panic!("{}: the lying store refused itself: {e}", row.case));
        assert_eq!(liar.store.outbox_len().unwrap(), 1, "{}", row.case);

        let before = w.stored();
        if user == row.token_of {
            let report = liar.sync();
            assert_eq!((report.pushed, report.rejected), (0, 1), "{}", row.case);
            let q = liar.store.quarantined().unwrap();
            assert_eq!(q.len(), 1, "{}", row.case);
            assert_eq!(q[0].reason, row.reason, "{}", row.case);
            assert!(q[0].detail.as_deref().is_some_and(|d| !d.is_empty()));
        } else {
            // The client refuses a token of another user before it pushes anything; a modified client
            // pushes the store's changes anyway (its store is registered by then).
            match liar.try_sync() {
                Err(Error::Sync(SyncError::WrongUser { .. })) => {}
                other => panic!("{}: expected WrongUser, got {other:?}", row.case),
            }
            let outbox = liar.store.outbox(10).unwrap();
            let changes: Vec<(&str, Vec<u8>)> = outbox
                .iter()
                .map(|c| (c.record_id.as_str(), c.bytes.clone()))
                .collect();
            assert_refused(row.case, &push(&w.relay, &token, &changes), row.reason);
        }
        assert_eq!(w.stored(), before, "{}: nothing stored changed", row.case);

        w.honestly(row.neighbour_by, |s| (row.neighbour)(s, &record));
        assert_ne!(w.stored(), before, "{}: the neighbour is stored", row.case);
    }
}

// ---------------------------------------------------------------- bombs

/// What a bomb must be answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `200`, every change refused for this reason.
    Refused(&'static str),
    /// This status and error code for the whole request.
    Status(u16, &'static str),
}

/// A request that costs the relay far more than its bytes, if the relay lets it: made against a
/// record (`&str`) before the clock starts, then sent.
struct Bomb {
    case: &'static str,
    request: Box<dyn Fn(&str) -> RawRequest>,
    answer: Answer,
}

fn bomb(
    case: &'static str,
    answer: Answer,
    request: impl Fn(&str) -> RawRequest + 'static,
) -> Bomb {
    Bomb {
        case,
        request: Box::new(request),
        answer,
    }
}

fn push_bomb(record: &str, changes: Vec<Vec<u8>>) -> RawRequest {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({"changes": changes
        .iter()
        .map(|b| serde_json::json!({"record": record, "bytes": b64.encode(b)}))
        .collect::<Vec<_>>()});
    RawRequest {
        method: "POST",
        path: "/v1/changes".into(),
        headers: vec![("Content-Type", "application/json".into())],
        body: RawBody::Bytes(serde_json::to_vec(&body).unwrap()),
    }
}

/// A `PUT` of an attachment no device ever completes.
fn attachment_bomb(record: &str, range: Option<String>, body: RawBody) -> RawRequest {
    let sha = hex::encode(sha2::Sha256::digest(NEVER_UPLOADED));
    RawRequest {
        method: "PUT",
        path: format!("/v1/attachments/{sha}?record={record}"),
        headers: range.map(|r| ("Content-Range", r)).into_iter().collect(),
        body,
    }
}

const NEVER_UPLOADED: &[u8] = b"never uploaded";
const MIB: usize = 1024 * 1024;

fn bombs() -> Vec<Bomb> {
    use Answer::*;
    let too_large = Status(413, "payload_too_large");
    vec![
        bomb(
            "an inflate bomb: 64 MiB of zeros in a 65 KB change",
            Refused("too_large"),
            |r| push_bomb(r, vec![deflate_bomb()]),
        ),
        bomb(
            "eighty inflate bombs in one push",
            Refused("too_large"),
            |r| push_bomb(r, vec![deflate_bomb(); 80]),
        ),
        bomb(
            "an operation-count bomb: a billion operations in a few dozen bytes",
            Refused("too_many_ops"),
            |r| push_bomb(r, vec![billion_op_change()]),
        ),
        bomb(
            "a thousand operation-count bombs in one push",
            Refused("too_many_ops"),
            |r| push_bomb(r, vec![billion_op_change(); 1000]),
        ),
        bomb("a push of a thousand and one changes", too_large, |r| {
            push_bomb(r, vec![vec![0u8; 8]; 1001])
        }),
        bomb("a push body above the body limit", too_large, |r| {
            push_bomb(r, vec![vec![7u8; 7 * MIB]])
        }),
        bomb(
            "a push body of unknown length, far above the body limit",
            too_large,
            |_| RawRequest {
                method: "POST",
                path: "/v1/changes".into(),
                headers: vec![("Content-Type", "application/json".into())],
                body: RawBody::Unsized {
                    len: 64 * MIB,
                    byte: b' ',
                },
            },
        ),
        bomb(
            "an attachment declaring more than the attachment limit",
            too_large,
            |r| {
                let range = format!("bytes 0-{}/{}", MIB - 1, limits::MAX_ATTACHMENT_BYTES + 1);
                attachment_bomb(r, Some(range), RawBody::Bytes(vec![1u8; MIB]))
            },
        ),
        bomb("an attachment chunk above the body limit", too_large, |r| {
            let len = 9 * MIB;
            let range = format!("bytes 0-{}/{len}", len - 1);
            attachment_bomb(r, Some(range), RawBody::Bytes(vec![2u8; len]))
        }),
        bomb(
            "a one-shot attachment of unknown length above the body limit",
            too_large,
            |r| {
                attachment_bomb(
                    r,
                    None,
                    RawBody::Unsized {
                        len: 64 * MIB,
                        byte: 3,
                    },
                )
            },
        ),
    ]
}

/// Bombs are answered with their reason before the request timeout, in bounded memory, while another
/// device's honest pushes go through; nothing they carried is stored.
fn bombs_are_answered_in_bounded_time_and_memory(backend: &Backend) {
    let w = World::new(backend);
    let target = w.target(Target::Person);
    let before = w.stored();
    let bombing = AtomicBool::new(true);
    let token = &w.forgers["wang"].token;
    // (record, when its sync started and ended) of every honest push.
    let honest: Vec<(String, Instant, Instant)> = std::thread::scope(|scope| {
        // chen keeps registering people in g2 and syncing for as long as the bombs fall.
        let pusher = scope.spawn(|| {
            let chen = &w.devices["chen"];
            let started = Instant::now();
            let mut made = Vec::new();
            while bombing.load(Ordering::SeqCst) || made.len() < 2 {
                assert!(
                    started.elapsed() < Duration::from_secs(600),
                    "the bombs never ended"
                );
                let p = chen
                    .store
                    .create(NewRecord::new(Kind::Person, "g2").field("name", "Ma Lin"))
                    .unwrap();
                let from = Instant::now();
                let report = chen.sync();
                assert_eq!((report.pushed, report.rejected), (1, 0), "honest push");
                made.push((p, from, Instant::now()));
                std::thread::sleep(Duration::from_millis(20));
            }
            made
        });
        let mut window = None;
        let mut answered = Vec::new();
        for bomb in bombs() {
            let request = (bomb.request)(&target);
            let started = Instant::now();
            let answer = send_raw(&w.relay, token, request);
            let (first, _) = window.get_or_insert((started, started));
            window = Some((*first, Instant::now()));
            answered.push((bomb, started.elapsed(), answer));
        }
        bombing.store(false, Ordering::SeqCst);
        let made = pusher.join().expect("the honest device's pushes succeed");
        let (first, last) = window.unwrap();
        assert!(
            made.iter().any(|(_, from, to)| *from < last && *to > first),
            "an honest push ran while the bombs fell"
        );
        for (bomb, took, answer) in answered {
            eprintln!("{took:?}: {}", bomb.case);
            assert!(
                took < REQUEST_TIMEOUT,
                "{}: answered after {took:?}",
                bomb.case
            );
            let body = answer.json();
            match bomb.answer {
                Answer::Refused(reason) => {
                    assert_eq!(answer.status, 200, "{}: {body}", bomb.case);
                    assert_refused(bomb.case, body["results"].as_array().unwrap(), reason);
                }
                Answer::Status(status, code) => {
                    assert_eq!(answer.status, status, "{}: {body}", bomb.case);
                    assert_eq!(body["error"]["code"], code, "{}", bomb.case);
                }
            }
        }
        made
    });
    let honest: Vec<String> = honest.into_iter().map(|(p, _, _)| p).collect();
    let peak = w.relay.peak_memory();
    eprintln!(
        "relay peak memory: {} MiB; {} honest pushes",
        peak / MIB as u64,
        honest.len()
    );
    assert!(peak < PEAK_MEMORY, "the relay's peak memory: {peak} bytes");
    // Nothing of the bombs is stored: but for the honest device's new records, the relay holds what
    // it held, and keeps no upload of the refused attachments.
    let mut after = w.stored();
    after.log.retain(|(_, r, _)| !honest.contains(r));
    after.heads.retain(|r, _| !honest.contains(r));
    assert_eq!(after, before, "nothing of the bombs is stored");
    let sha = hex::encode(sha2::Sha256::digest(NEVER_UPLOADED));
    let head = http()
        .head(format!("{}/v1/attachments/{sha}", w.relay.url()))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(
        head.status().as_u16(),
        404,
        "no upload of a refused attachment is kept"
    );
    let zhao = &w.devices["zhao"];
    zhao.sync();
    for p in &honest {
        assert!(
            zhao.store.get(p).is_ok(),
            "the honest records reach the supervisor"
        );
    }
}

// ---------------------------------------------------------------- attachments

/// HEAD, GET or PUT of an attachment as `token`: the status, `Upload-Offset`, the error code or the
/// bytes.
struct Reply {
    status: u16,
    offset: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn code(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .map(|v| v["error"]["code"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }
}

fn attachment(
    w: &World,
    method: reqwest::Method,
    token: &str,
    sha: &str,
    query: &str,
    range: Option<String>,
    body: Vec<u8>,
) -> Reply {
    attachment_on(http(), w, method, token, sha, query, range, body).expect("attachment request")
}

/// [`attachment`] on a given client, with the transport's error when there is no answer.
#[allow(clippy::too_many_arguments)]
fn attachment_on(
    client: &reqwest::blocking::Client,
    w: &World,
    method: reqwest::Method,
    token: &str,
    sha: &str,
    query: &str,
    range: Option<String>,
    body: Vec<u8>,
) -> reqwest::Result<Reply> {
    let mut req = client
        .request(
            method,
            format!("{}/v1/attachments/{sha}{query}", w.relay.url()),
        )
        .bearer_auth(token);
    if let Some(r) = range {
        req = req.header("content-range", r);
    }
    if !body.is_empty() {
        req = req.body(body);
    }
    let resp = req.send()?;
    Ok(Reply {
        status: resp.status().as_u16(),
        offset: resp
            .headers()
            .get("upload-offset")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: resp.bytes()?.to_vec(),
    })
}

/// A photo on a new visit of wang's in g1, uploaded by wang's device: (visit, sha, bytes).
fn photo_in_g1(w: &World, seed: u8, len: usize) -> (String, String, Vec<u8>) {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u32 * 7 + seed as u32) as u8)
        .collect();
    let visit = w.honestly("wang", |s| {
        let v = s.start_visit("g1", "stairwell check", None)?;
        let att = s.add_attachment(&v, "stairs.jpg", "image/jpeg", &bytes)?;
        s.attach_to_visit(&v, &att)?;
        s.finish_visit(&v, None)?;
        Ok(v)
    });
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    (visit, sha, bytes)
}

/// What the attachment's owner and an outsider see of it: unchanged by every refusal below.
fn attachment_view(w: &World, sha: &str) -> (u16, Option<String>, Vec<u8>, u16) {
    use reqwest::Method;
    let head = attachment(
        w,
        Method::HEAD,
        &w.forgers["wang"].token,
        sha,
        "",
        None,
        vec![],
    );
    let get = attachment(
        w,
        Method::GET,
        &w.forgers["zhao"].token,
        sha,
        "",
        None,
        vec![],
    );
    let outsider = attachment(
        w,
        Method::GET,
        &w.forgers["chen"].token,
        sha,
        "",
        None,
        vec![],
    );
    (head.status, head.offset, get.body, outsider.status)
}

/// Another grid's attachment through every route, the attachment limit, and another device's upload:
/// each refused, nothing stored changed, and each allowed neighbour accepted.
fn attachments_of_other_grids_and_devices_are_refused(backend: &Backend) {
    use reqwest::Method;
    let w = World::new(backend);
    let tok = |who: &str| w.forgers[who].token.clone();
    // chen's own visit in g2, and a visit of the supervisor in g2.
    let chen_visit = w.honestly("chen", |s| s.start_visit("g2", "meter reading", None));
    let zhao_visit = w.honestly("zhao", |s| s.start_visit("g2", "inspection", None));

    let (visit, sha, bytes) = photo_in_g1(&w, 1, 1_500_000);
    let view = attachment_view(&w, &sha);
    assert_eq!(
        view,
        (200, Some(bytes.len().to_string()), bytes.clone(), 403)
    );
    let size = bytes.len();
    let own_query = format!("?record={chen_visit}");
    // (case, who, method, query, range, body, status, code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Method,
        String,
        Option<String>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let refused: Vec<Case> = vec![
        (
            "GET of another grid's attachment",
            "chen",
            Method::GET,
            String::new(),
            None,
            vec![],
            403,
            "out_of_scope",
        ),
        (
            "HEAD of another grid's attachment",
            "chen",
            Method::HEAD,
            String::new(),
            None,
            vec![],
            404,
            "",
        ),
        (
            "HEAD linking another grid's attachment to one's own record",
            "chen",
            Method::HEAD,
            own_query.clone(),
            None,
            vec![],
            404,
            "",
        ),
        (
            "PUT for another grid's record",
            "chen",
            Method::PUT,
            format!("?record={visit}"),
            None,
            bytes.clone(),
            403,
            "out_of_scope",
        ),
        (
            "PUT of one byte to link it to one's own record",
            "chen",
            Method::PUT,
            own_query.clone(),
            Some(format!("bytes 0-0/{size}")),
            bytes[..1].to_vec(),
            200,
            "",
        ),
    ];
    for (case, who, method, query, range, body, status, code) in refused {
        let r = attachment(&w, method, &tok(who), &sha, &query, range, body);
        assert_eq!(r.status, status, "{case}");
        if !code.is_empty() {
            assert_eq!(r.code(), code, "{case}");
        }
        assert_eq!(attachment_view(&w, &sha), view, "{case}: nothing changed");
    }
    // The allowed neighbours: the owner's grid reads it; the supervisor, who may read it, links it to
    // its own visit in g2; chen proves it holds the bytes by uploading them whole.
    let li = attachment(&w, Method::GET, &tok("li"), &sha, "", None, vec![]);
    assert_eq!(
        (li.status, li.body == bytes),
        (200, true),
        "the same grid reads it"
    );
    let linked = attachment(
        &w,
        Method::HEAD,
        &tok("zhao"),
        &sha,
        &format!("?record={zhao_visit}"),
        None,
        vec![],
    );
    assert_eq!(
        (linked.status, linked.offset),
        (200, Some(size.to_string()))
    );
    let chen_get = attachment(&w, Method::GET, &tok("chen"), &sha, "", None, vec![]);
    assert_eq!(
        (chen_get.status, chen_get.body == bytes),
        (200, true),
        "linked to a g2 record"
    );

    // Uploading in full for one's own record links it (a new photo, so chen cannot read it before).
    let (_, sha2, bytes2) = photo_in_g1(&w, 2, 300_000);
    let before = attachment(&w, Method::GET, &tok("chen"), &sha2, "", None, vec![]);
    assert_eq!(before.status, 403);
    let whole = attachment(
        &w,
        Method::PUT,
        &tok("chen"),
        &sha2,
        &own_query,
        None,
        bytes2.clone(),
    );
    assert_eq!(whole.status, 200);
    let after = attachment(&w, Method::GET, &tok("chen"), &sha2, "", None, vec![]);
    assert_eq!((after.status, after.body == bytes2), (200, true));

    // Over the attachment limit: refused before a byte is kept; at the limit a session opens.
    let max = limits::MAX_ATTACHMENT_BYTES;
    let big = hex::encode(sha2::Sha256::digest(b"a very large scan"));
    for (total, status) in [(max + 1, 413), (max, 200)] {
        let range = Some(format!("bytes 0-{}/{total}", MIB - 1));
        // On a client of its own: the relay answers an oversized upload from its headers and may
        // close the connection while the body is still being sent, so the answer can be lost to a
        // reset (and that connection must not serve the next request).
        let own = reqwest::blocking::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let r = attachment_on(
            &own,
            &w,
            Method::PUT,
            &tok("wang"),
            &big,
            &format!("?record={visit}"),
            range,
            vec![0u8; MIB],
        );
        match r {
            Ok(r) => assert_eq!(r.status, status, "a total of {total} bytes"),
            Err(e) => assert!(
                status == 413 && e.is_request(),
                "a total of {total} bytes: unexpected error {e}"
            ),
        }
        let head = attachment(&w, Method::HEAD, &tok("wang"), &big, "", None, vec![]);
        let kept = (status == 200).then(|| MIB.to_string());
        assert_eq!(head.offset, kept, "a total of {total} bytes");
    }

    // Another device cannot spoil a device's upload: li (same grid) sends garbage under the same
    // name, at the owner's offset and then whole; the owner's upload is untouched and completes.
    let wang = &w.devices["wang"];
    let v = w.honestly("wang", |s| s.start_visit("g1", "roof check", None));
    let photo: Vec<u8> = (0..2_500_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let psha = hex::encode(sha2::Sha256::digest(&photo));
    let half = photo.len() / 2;
    let first = attachment(
        &w,
        Method::PUT,
        &wang.config.token,
        &psha,
        &format!("?record={v}"),
        Some(format!("bytes 0-{}/{}", half - 1, photo.len())),
        photo[..half].to_vec(),
    );
    assert_eq!(first.status, 200);
    let mut garbage = photo.clone();
    garbage[half + 10] ^= 0xff;
    let resume = attachment(
        &w,
        Method::PUT,
        &tok("li"),
        &psha,
        &format!("?record={v}"),
        Some(format!("bytes {half}-{}/{}", photo.len() - 1, photo.len())),
        garbage[half..].to_vec(),
    );
    assert_eq!(
        (resume.status, resume.offset.as_deref()),
        (409, Some("0")),
        "li's own session"
    );
    let foreign = attachment(
        &w,
        Method::PUT,
        &tok("chen"),
        &psha,
        &own_query,
        Some(format!("bytes {half}-{}/{}", photo.len() - 1, photo.len())),
        garbage[half..].to_vec(),
    );
    assert_eq!(
        (foreign.status, foreign.offset.as_deref()),
        (409, Some("0")),
        "another grid"
    );
    let probe = attachment(&w, Method::HEAD, &tok("chen"), &psha, "", None, vec![]);
    assert_eq!(probe.status, 404, "another grid does not see the upload");
    let spoil = attachment(
        &w,
        Method::PUT,
        &tok("li"),
        &psha,
        &format!("?record={v}"),
        None,
        garbage,
    );
    assert_eq!(
        (spoil.status, spoil.code().as_str()),
        (422, "hash_mismatch")
    );
    let head = attachment(
        &w,
        Method::HEAD,
        &wang.config.token,
        &psha,
        "",
        None,
        vec![],
    );
    assert_eq!(
        (head.status, head.offset),
        (308, Some(half.to_string())),
        "the owner's upload"
    );
    let unseen = attachment(&w, Method::GET, &tok("zhao"), &psha, "", None, vec![]);
    assert_eq!(unseen.status, 404, "no attachment from garbage");
    // The owner's device resumes where the relay says and finishes.
    w.honestly("wang", |s| {
        let att = s.add_attachment(&v, "roof.jpg", "image/jpeg", &photo)?;
        s.attach_to_visit(&v, &att)?;
        s.finish_visit(&v, None)
    });
    let done = attachment(&w, Method::GET, &tok("zhao"), &psha, "", None, vec![]);
    assert_eq!((done.status, done.body == photo), (200, true));
}

/// Every case on both backends: SQLite always; PostgreSQL when `GRIDWORK_TEST_POSTGRES_URL` is set
/// (skipped without it, a failure in CI).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::Backend::Sqlite)
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    match super::Backend::postgres() {
                        Some(b) => super::$name(&b),
                        None => eprintln!("skipped: set GRIDWORK_TEST_POSTGRES_URL to run the PostgreSQL suite"),
                    }
                }
            )*
        }
    };
}

on_both_backends!(
    forged_changes_are_refused_with_their_reason,
    lying_stores_are_refused_with_their_reason,
    bombs_are_answered_in_bounded_time_and_memory,
    attachments_of_other_grids_and_devices_are_refused,
);
