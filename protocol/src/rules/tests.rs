//! The rule book as tables: one row per case, each with the actor, the state before, the state after and
//! the verdict. Builders below make records directly (no Automerge), so each row reads as the state
//! change it is about.
use super::*;
use crate::model::{AttachmentRef, Link, LinkType};

const T0: &str = "2026-11-20T08:00:00Z";
const T1: &str = "2026-11-20T09:00:00Z";

/// d1 > s1 > c1 > {g1, g2}; d1 > s2 > c2 > g3; d2 > s3 > c3 > g9.
fn tree() -> HashMap<String, String> {
    [
        ("d1", "d1/"),
        ("s1", "d1/s1/"),
        ("c1", "d1/s1/c1/"),
        ("g1", "d1/s1/c1/g1/"),
        ("g2", "d1/s1/c1/g2/"),
        ("s2", "d1/s2/"),
        ("c2", "d1/s2/c2/"),
        ("g3", "d1/s2/c2/g3/"),
        ("d2", "d2/"),
        ("s3", "d2/s3/"),
        ("c3", "d2/s3/c3/"),
        ("g9", "d2/s3/c3/g9/"),
    ]
    .into_iter()
    .map(|(a, p)| (a.to_owned(), p.to_owned()))
    .collect()
}

fn actor(user: &str, role: Role, area: &str) -> Actor {
    Actor {
        user: user.into(),
        device: format!("{user}-phone"),
        role,
        area_path: tree()[area].clone(),
    }
}

fn wang() -> Actor {
    actor("wang", Role::Worker, "g1")
}
fn li() -> Actor {
    actor("li", Role::Worker, "g2")
}
fn zhao() -> Actor {
    actor("zhao", Role::Supervisor, "c1")
}
fn sun() -> Actor {
    actor("sun", Role::Supervisor, "s1")
}
fn qian() -> Actor {
    actor("qian", Role::Supervisor, "s2")
}
fn op() -> Actor {
    actor("op", Role::Operator, "d1")
}

fn base(kind: Kind, area: &str) -> Record {
    Record::empty("0123456789abcdef0123456789abcdef", kind, area)
}

fn set(mut r: Record, field: &str, value: &str) -> Record {
    if value.is_empty() {
        r.fields.remove(field);
    } else {
        r.fields.insert(field.into(), value.into());
    }
    r
}

fn entry(by: &str, action: &str, from: Option<&str>, to: Option<&str>) -> TimelineEntry {
    TimelineEntry {
        at: T1.into(),
        by: by.into(),
        action: action.into(),
        from: from.map(str::to_owned),
        to: to.map(str::to_owned),
        comment: None,
    }
}

fn with_entry(mut r: Record, e: TimelineEntry) -> Record {
    r.timeline.push(e);
    r
}

fn person(area: &str) -> Record {
    set(base(Kind::Person, area), "name", "王芳")
}

/// An event at home in `area`, responsible `responsible`, with `status` and `assignee`.
fn event(area: &str, responsible: &str, status: &str, assignee: &str) -> Record {
    let mut r = set(base(Kind::Event, area), "title", "漏水");
    r.responsible = Some(responsible.into());
    r = set(r, "status", status);
    r = set(r, "reporter", "wang");
    r = set(r, "reported_at", T0);
    r = set(r, "priority", "normal");
    r = set(r, "assignee", assignee);
    r.timeline.push(TimelineEntry {
        at: T0.into(),
        by: "wang".into(),
        action: "report".into(),
        from: None,
        to: Some("reported".into()),
        comment: None,
    });
    r
}

fn transition(ev: &Record, by: &str, action: &str, status: &str, to: &str) -> Record {
    let from = ev.field("status").unwrap().to_owned();
    with_entry(
        set(ev.clone(), "status", status),
        entry(by, action, Some(&from), Some(to)),
    )
}

/// A visit in `area` by `worker`, finished or not.
fn visit(area: &str, worker: &str, finished: bool) -> Record {
    let mut r = base(Kind::Visit, area);
    r = set(r, "worker", worker);
    r = set(r, "started_at", T0);
    r = set(r, "review_state", "pending");
    r = set(r, "purpose", "走访");
    if finished {
        r = set(r, "ended_at", T1);
    }
    r
}

fn review(v: &Record, by: &str, state: &str, comment: &str) -> Record {
    let mut r = set(v.clone(), "review_state", state);
    r = set(r, "review_comment", comment);
    r = set(r, "reviewer", by);
    let mut e = entry(by, "review", Some("pending"), Some(state));
    e.comment = (!comment.is_empty()).then(|| comment.to_owned());
    with_entry(r, e)
}

fn moved(r: &Record, by: &str, to: &str) -> Record {
    let mut m = r.clone();
    let from = m.area.clone();
    m.area = to.into();
    with_entry(m, entry(by, "move", Some(&from), Some(to)))
}

fn deleted(r: &Record, by: &str) -> Record {
    let mut d = r.clone();
    d.deleted = true;
    with_entry(d, entry(by, "delete", None, None))
}

fn attachment(sha: &str) -> AttachmentRef {
    AttachmentRef {
        sha256: sha.into(),
        name: "photo.jpg".into(),
        mime: "image/jpeg".into(),
        size: 1000,
    }
}

fn conflicted(mut r: Record, field: &str, values: &[&str]) -> RecordState {
    r.conflicted_fields.push(field.into());
    let mut s = RecordState::of(r);
    s.conflicts
        .insert(field.into(), values.iter().map(|v| v.to_string()).collect());
    s
}

/// Runs rows of (name, actor, before, after, expected verdict).
fn check(
    rows: Vec<(
        &str,
        Actor,
        Option<RecordState>,
        RecordState,
        Result<(), Reason>,
    )>,
) {
    let areas = tree();
    let forms = city_forms();
    let mut failures = Vec::new();
    for (name, actor, before, after, want) in rows {
        let got = authorize(&actor, &areas, &forms, before.as_ref(), &after).map_err(|r| r.reason);
        if got != want {
            failures.push(format!("{name}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn s(r: Record) -> RecordState {
    RecordState::of(r)
}

fn new_event(area: &str, reporter: &str) -> Record {
    let mut e = event(area, area, "reported", "");
    e = set(e, "reporter", reporter);
    e.timeline[0].by = reporter.into();
    e
}

#[test]
fn creating() {
    use Reason::*;
    let bad_phone = set(person("g1"), "phone", "call me");
    let no_name = set(person("g1"), "name", "");
    let mut person_with_responsible = person("g1");
    person_with_responsible.responsible = Some("g1".into());
    let mut event_elsewhere = new_event("g1", "wang");
    event_elsewhere.responsible = Some("c1".into());
    let closed_event = set(new_event("g1", "wang"), "status", "closed");
    let assigned_event = set(new_event("g1", "wang"), "assignee", "li");
    let approved_visit = set(visit("g1", "wang", false), "review_state", "approved");
    let finished_visit = visit("g1", "wang", true);
    let mut person_deleted = person("g1");
    person_deleted.deleted = true;
    let mut person_with_checklist = person("g1");
    person_with_checklist
        .checklist
        .insert("q".into(), "a".into());
    let unknown_field = set(person("g1"), "colour", "red");
    check(vec![
        (
            "worker registers a resident in its grid",
            wang(),
            None,
            s(person("g1")),
            Ok(()),
        ),
        (
            "worker registers in another grid",
            wang(),
            None,
            s(person("g2")),
            Err(OutOfScope),
        ),
        (
            "worker registers in another district",
            wang(),
            None,
            s(person("g9")),
            Err(OutOfScope),
        ),
        (
            "in an area that does not exist",
            wang(),
            None,
            s(person("g77")),
            Err(UnknownArea),
        ),
        (
            "supervisor registers in a grid below it",
            zhao(),
            None,
            s(person("g2")),
            Ok(()),
        ),
        (
            "operator registers anywhere",
            op(),
            None,
            s(person("g9")),
            Ok(()),
        ),
        (
            "a phone number that is no number",
            wang(),
            None,
            s(bad_phone),
            Err(InvalidValue),
        ),
        (
            "a person without a name",
            wang(),
            None,
            s(no_name),
            Err(InvalidValue),
        ),
        (
            "a field the kind does not have",
            wang(),
            None,
            s(unknown_field),
            Err(InvalidValue),
        ),
        (
            "a person with a responsible area",
            wang(),
            None,
            s(person_with_responsible),
            Err(InvalidValue),
        ),
        (
            "a person with a checklist",
            wang(),
            None,
            s(person_with_checklist),
            Err(InvalidValue),
        ),
        (
            "a record made deleted",
            wang(),
            None,
            s(person_deleted),
            Err(InvalidValue),
        ),
        (
            "worker reports an event",
            wang(),
            None,
            s(new_event("g1", "wang")),
            Ok(()),
        ),
        (
            "an event reported in another's name",
            wang(),
            None,
            s(new_event("g1", "li")),
            Err(WrongAuthor),
        ),
        (
            "an event responsible elsewhere",
            wang(),
            None,
            s(event_elsewhere),
            Err(InvalidValue),
        ),
        (
            "an event made closed",
            wang(),
            None,
            s(closed_event),
            Err(InvalidValue),
        ),
        (
            "an event made assigned",
            wang(),
            None,
            s(assigned_event),
            Err(InvalidValue),
        ),
        (
            "worker starts a visit",
            wang(),
            None,
            s(visit("g1", "wang", false)),
            Ok(()),
        ),
        (
            "a visit in another worker's name",
            wang(),
            None,
            s(visit("g1", "li", false)),
            Err(InvalidValue),
        ),
        (
            "a visit made approved",
            wang(),
            None,
            s(approved_visit),
            Err(InvalidValue),
        ),
        (
            "a visit made finished",
            wang(),
            None,
            s(finished_visit),
            Err(InvalidValue),
        ),
    ]);
}

#[test]
fn editing_and_moving() {
    use Reason::*;
    let p = person("g1");
    let renamed = set(p.clone(), "name", "王小芳");
    let mut area_set = p.clone();
    area_set.area = "g9".into();
    let mut kind_changed = renamed.clone();
    kind_changed.kind = Kind::Place;
    let mut with_responsible = p.clone();
    with_responsible.responsible = Some("g9".into());
    let mut tagged = p.clone();
    tagged.tags.push("独居".into());
    let mut long_attr = p.clone();
    long_attr.attrs.insert("x".into(), "y".repeat(5000));
    let mut linked = p.clone();
    linked.links.push(Link {
        link_type: LinkType::LivesAt,
        target: "fedcba9876543210fedcba9876543210".into(),
    });
    let mut bad_link = p.clone();
    bad_link.links.push(Link {
        link_type: LinkType::LivesAt,
        target: "nope".into(),
    });
    let mut forged_entry = renamed.clone();
    forged_entry
        .timeline
        .push(entry("li", "move", Some("g1"), Some("g1")));
    check(vec![
        (
            "worker renames a resident of its grid",
            wang(),
            Some(s(p.clone())),
            s(renamed.clone()),
            Ok(()),
        ),
        (
            "worker renames a resident of another grid",
            li(),
            Some(s(p.clone())),
            s(renamed.clone()),
            Err(OutOfScope),
        ),
        (
            "supervisor of another street renames",
            qian(),
            Some(s(p.clone())),
            s(renamed.clone()),
            Err(OutOfScope),
        ),
        (
            "worker adds a tag",
            wang(),
            Some(s(p.clone())),
            s(tagged),
            Ok(()),
        ),
        (
            "worker adds a link",
            wang(),
            Some(s(p.clone())),
            s(linked),
            Ok(()),
        ),
        (
            "a link to no record id",
            wang(),
            Some(s(p.clone())),
            s(bad_link),
            Err(InvalidValue),
        ),
        (
            "an attribute over 4096 bytes",
            wang(),
            Some(s(p.clone())),
            s(long_attr),
            Err(InvalidValue),
        ),
        (
            "the kind changes",
            wang(),
            Some(s(p.clone())),
            s(kind_changed),
            Err(ImmutableField),
        ),
        (
            "area set to another district without a move",
            wang(),
            Some(s(p.clone())),
            s(area_set.clone()),
            Err(OutOfScope),
        ),
        (
            "area set without a move, even by an operator",
            op(),
            Some(s(p.clone())),
            s(area_set),
            Err(OutOfScope),
        ),
        (
            "a person given a responsible area",
            wang(),
            Some(s(p.clone())),
            s(with_responsible),
            Err(OutOfScope),
        ),
        (
            "worker moves its resident to another grid",
            wang(),
            Some(s(p.clone())),
            s(moved(&p, "wang", "g2")),
            Err(OutOfScope),
        ),
        (
            "supervisor moves between its grids",
            zhao(),
            Some(s(p.clone())),
            s(moved(&p, "zhao", "g2")),
            Ok(()),
        ),
        (
            "supervisor moves out of its community",
            zhao(),
            Some(s(p.clone())),
            s(moved(&p, "zhao", "g3")),
            Err(OutOfScope),
        ),
        (
            "supervisor moves into a grid that does not exist",
            zhao(),
            Some(s(p.clone())),
            s(moved(&p, "zhao", "g77")),
            Err(UnknownArea),
        ),
        (
            "operator moves between districts",
            op(),
            Some(s(p.clone())),
            s(moved(&p, "op", "g9")),
            Ok(()),
        ),
        (
            "a timeline entry in another user's name",
            wang(),
            Some(s(p.clone())),
            s(forged_entry),
            Err(WrongAuthor),
        ),
    ]);
}

#[test]
fn deleting_and_restoring() {
    use Reason::*;
    let p = person("g1");
    let gone = deleted(&p, "wang");
    let mut silently_gone = p.clone();
    silently_gone.deleted = true;
    let restored = {
        let mut r = gone.clone();
        r.deleted = false;
        with_entry(r, entry("wang", "restore", None, None))
    };
    let edited_while_gone = set(gone.clone(), "name", "x");
    let v = visit("g1", "wang", true);
    check(vec![
        (
            "worker deletes a resident",
            wang(),
            Some(s(p.clone())),
            s(gone.clone()),
            Ok(()),
        ),
        (
            "worker of another grid deletes",
            li(),
            Some(s(p.clone())),
            s(deleted(&p, "li")),
            Err(OutOfScope),
        ),
        (
            "deleted without saying so",
            wang(),
            Some(s(p.clone())),
            s(silently_gone),
            Err(InvalidTransition),
        ),
        (
            "deleted twice",
            wang(),
            Some(s(gone.clone())),
            s(deleted(&gone, "wang")),
            Err(InvalidTransition),
        ),
        (
            "restored",
            wang(),
            Some(s(gone.clone())),
            s(restored),
            Ok(()),
        ),
        (
            "edited while deleted",
            wang(),
            Some(s(gone.clone())),
            s(edited_while_gone),
            Err(Deleted),
        ),
        (
            "another worker deletes a visit",
            li(),
            Some(s(v.clone())),
            s(deleted(&v, "li")),
            Err(OutOfScope),
        ),
        (
            "a supervisor deletes a visit",
            zhao(),
            Some(s(v.clone())),
            s(deleted(&v, "zhao")),
            Ok(()),
        ),
    ]);
}

#[test]
fn event_lifecycle() {
    use Reason::*;
    let reported = event("g1", "g1", "reported", "");
    let assigned_wang = event("g1", "g1", "assigned", "wang");
    let assigned_li = event("g1", "g1", "assigned", "li");
    let resolved = event("g1", "g1", "resolved", "wang");
    let verified = event("g1", "g1", "verified", "wang");
    let escalated = event("g1", "c1", "reported", "");
    let at_street = event("g1", "s1", "reported", "");

    let assign = |ev: &Record, by: &str, to: &str| {
        let from = ev.field("status").unwrap().to_owned();
        with_entry(
            set(set(ev.clone(), "status", "assigned"), "assignee", to),
            entry(by, "assign", Some(&from), Some(to)),
        )
    };
    let escalate = |ev: &Record, by: &str, to: &str| {
        let mut e = set(set(ev.clone(), "status", "reported"), "assignee", "");
        let from = e.responsible.replace(to.into());
        with_entry(e, entry(by, "escalate", from.as_deref(), Some(to)))
    };
    let hand_down = |ev: &Record, by: &str, to: &str| {
        let mut e = set(set(ev.clone(), "status", "reported"), "assignee", "");
        let from = e.responsible.replace(to.into());
        with_entry(e, entry(by, "hand_down", from.as_deref(), Some(to)))
    };
    let mut returned_without_comment =
        transition(&resolved, "zhao", "return", "returned", "returned");
    returned_without_comment
        .timeline
        .last_mut()
        .unwrap()
        .comment = None;
    let mut returned = transition(&resolved, "zhao", "return", "returned", "returned");
    returned.timeline.last_mut().unwrap().comment = Some("照片不清楚".into());
    let silently_closed = set(verified.clone(), "status", "closed");
    let reporter_changed = set(reported.clone(), "reporter", "li");
    let mut two_actions = transition(
        &assigned_wang,
        "wang",
        "start",
        "in_progress",
        "in_progress",
    );
    two_actions
        .timeline
        .push(entry("wang", "comment", None, None));
    let mut entry_removed = reported.clone();
    entry_removed.timeline.clear();
    let mut sideways = escalate(&reported, "wang", "g2");
    sideways.timeline.last_mut().unwrap().to = Some("c1".into());
    check(vec![
        (
            "worker takes an event itself",
            wang(),
            Some(s(reported.clone())),
            s(assign(&reported, "wang", "wang")),
            Ok(()),
        ),
        (
            "worker assigns someone else",
            wang(),
            Some(s(reported.clone())),
            s(assign(&reported, "wang", "li")),
            Err(ForbiddenRole),
        ),
        (
            "supervisor assigns a worker",
            zhao(),
            Some(s(reported.clone())),
            s(assign(&reported, "zhao", "li")),
            Ok(()),
        ),
        (
            "assignee starts",
            wang(),
            Some(s(assigned_wang.clone())),
            s(transition(
                &assigned_wang,
                "wang",
                "start",
                "in_progress",
                "in_progress",
            )),
            Ok(()),
        ),
        (
            "a worker starts someone else's event",
            wang(),
            Some(s(assigned_li.clone())),
            s(transition(
                &assigned_li,
                "wang",
                "start",
                "in_progress",
                "in_progress",
            )),
            Err(ForbiddenRole),
        ),
        (
            "resolving what was not started",
            wang(),
            Some(s(assigned_wang.clone())),
            s(transition(
                &assigned_wang,
                "wang",
                "resolve",
                "resolved",
                "resolved",
            )),
            Err(InvalidTransition),
        ),
        (
            "worker verifies",
            wang(),
            Some(s(resolved.clone())),
            s(transition(
                &resolved, "wang", "verify", "verified", "verified",
            )),
            Err(ForbiddenRole),
        ),
        (
            "supervisor verifies",
            zhao(),
            Some(s(resolved.clone())),
            s(transition(
                &resolved, "zhao", "verify", "verified", "verified",
            )),
            Ok(()),
        ),
        (
            "worker closes",
            wang(),
            Some(s(verified.clone())),
            s(transition(&verified, "wang", "close", "closed", "closed")),
            Err(ForbiddenRole),
        ),
        (
            "supervisor closes",
            zhao(),
            Some(s(verified.clone())),
            s(transition(&verified, "zhao", "close", "closed", "closed")),
            Ok(()),
        ),
        (
            "closed without an action",
            zhao(),
            Some(s(verified.clone())),
            s(silently_closed),
            Err(InvalidTransition),
        ),
        (
            "returned without a comment",
            zhao(),
            Some(s(resolved.clone())),
            s(returned_without_comment),
            Err(InvalidValue),
        ),
        (
            "returned with a comment",
            zhao(),
            Some(s(resolved.clone())),
            s(returned),
            Ok(()),
        ),
        (
            "the reporter rewritten",
            wang(),
            Some(s(reported.clone())),
            s(reporter_changed),
            Err(ImmutableField),
        ),
        (
            "two actions in one change",
            wang(),
            Some(s(assigned_wang.clone())),
            s(two_actions),
            Err(InvalidTransition),
        ),
        (
            "the timeline emptied",
            wang(),
            Some(s(reported.clone())),
            s(entry_removed),
            Err(AppendOnly),
        ),
        (
            "worker escalates to its community",
            wang(),
            Some(s(reported.clone())),
            s(escalate(&reported, "wang", "c1")),
            Ok(()),
        ),
        (
            "escalated sideways to a neighbour grid",
            wang(),
            Some(s(reported.clone())),
            s(escalate(&reported, "wang", "g2")),
            Err(InvalidValue),
        ),
        (
            "escalated sideways, entry claiming the parent",
            wang(),
            Some(s(reported.clone())),
            s(sideways),
            Err(OutOfScope),
        ),
        (
            "escalated past the parent",
            wang(),
            Some(s(reported.clone())),
            s(escalate(&reported, "wang", "s1")),
            Err(InvalidValue),
        ),
        (
            "grid worker closes an event escalated away",
            wang(),
            Some(s(escalated.clone())),
            s(transition(&escalated, "wang", "close", "closed", "closed")),
            Err(OutOfScope),
        ),
        (
            "grid worker escalates what the community holds",
            wang(),
            Some(s(escalated.clone())),
            s(escalate(&escalated, "wang", "s1")),
            Err(OutOfScope),
        ),
        (
            "community supervisor escalates to the street",
            zhao(),
            Some(s(escalated.clone())),
            s(escalate(&escalated, "zhao", "s1")),
            Ok(()),
        ),
        (
            "community supervisor acts on the street's event",
            zhao(),
            Some(s(at_street.clone())),
            s(assign(&at_street, "zhao", "wang")),
            Err(OutOfScope),
        ),
        (
            "street supervisor hands down to the community",
            sun(),
            Some(s(at_street.clone())),
            s(hand_down(&at_street, "sun", "c1")),
            Ok(()),
        ),
        (
            "street supervisor hands down to a grid off the event's home",
            sun(),
            Some(s(at_street.clone())),
            s(hand_down(&at_street, "sun", "g2")),
            Err(InvalidTransition),
        ),
        (
            "worker hands down",
            wang(),
            Some(s(escalated.clone())),
            s(hand_down(&escalated, "wang", "g1")),
            Err(OutOfScope),
        ),
        (
            "another street's supervisor assigns",
            qian(),
            Some(s(reported.clone())),
            s(assign(&reported, "qian", "qian")),
            Err(OutOfScope),
        ),
        (
            "worker edits the title of its event",
            wang(),
            Some(s(reported.clone())),
            s(set(reported.clone(), "title", "漏水了")),
            Ok(()),
        ),
    ]);
}

#[test]
fn visits_and_reviews() {
    use Reason::*;
    let open = visit("g1", "wang", false);
    let done = visit("g1", "wang", true);
    let zhao_visit = visit("g1", "zhao", true);
    let finished = set(open.clone(), "ended_at", T1);
    let mut checklist = done.clone();
    checklist.checklist.insert("燃气".into(), "正常".into());
    let sha = "a".repeat(64);
    let mut attached = done.clone();
    attached.attachments.push(attachment(&sha));
    let mut detached = attached.clone();
    detached.attachments.clear();
    let mut bad_attachment = done.clone();
    bad_attachment.attachments.push(attachment("not-a-hash"));
    let silently_approved = set(
        set(done.clone(), "review_state", "approved"),
        "reviewer",
        "zhao",
    );
    let worker_changed = set(done.clone(), "worker", "li");
    let mut visited = done.clone();
    visited
        .visited
        .push("fedcba9876543210fedcba9876543210".into());
    let mut unvisited = visited.clone();
    unvisited.visited.clear();
    check(vec![
        (
            "worker finishes its visit",
            wang(),
            Some(s(open.clone())),
            s(finished.clone()),
            Ok(()),
        ),
        (
            "another worker finishes it",
            li(),
            Some(s(open.clone())),
            s(finished),
            Err(OutOfScope),
        ),
        (
            "worker answers its checklist",
            wang(),
            Some(s(done.clone())),
            s(checklist.clone()),
            Ok(()),
        ),
        (
            "a supervisor answers a worker's checklist",
            zhao(),
            Some(s(done.clone())),
            s(checklist),
            Err(ForbiddenRole),
        ),
        (
            "worker attaches a photo",
            wang(),
            Some(s(done.clone())),
            s(attached.clone()),
            Ok(()),
        ),
        (
            "an attachment removed",
            wang(),
            Some(s(attached)),
            s(detached),
            Err(AppendOnly),
        ),
        (
            "an attachment without a hash",
            wang(),
            Some(s(done.clone())),
            s(bad_attachment),
            Err(InvalidValue),
        ),
        (
            "worker marks a record visited",
            wang(),
            Some(s(done.clone())),
            s(visited.clone()),
            Ok(()),
        ),
        (
            "a visited record removed",
            wang(),
            Some(s(visited)),
            s(unvisited),
            Err(AppendOnly),
        ),
        (
            "the worker of a visit rewritten",
            wang(),
            Some(s(done.clone())),
            s(worker_changed),
            Err(ImmutableField),
        ),
        (
            "worker approves its own visit",
            wang(),
            Some(s(done.clone())),
            s(review(&done, "wang", "approved", "")),
            Err(ForbiddenRole),
        ),
        (
            "supervisor approves a finished visit",
            zhao(),
            Some(s(done.clone())),
            s(review(&done, "zhao", "approved", "")),
            Ok(()),
        ),
        (
            "supervisor returns with a comment",
            zhao(),
            Some(s(done.clone())),
            s(review(&done, "zhao", "returned", "再去一次")),
            Ok(()),
        ),
        (
            "supervisor returns without a comment",
            zhao(),
            Some(s(done.clone())),
            s(review(&done, "zhao", "returned", "")),
            Err(InvalidValue),
        ),
        (
            "supervisor approves an unfinished visit",
            zhao(),
            Some(s(open.clone())),
            s(review(&open, "zhao", "approved", "")),
            Err(InvalidTransition),
        ),
        (
            "supervisor approves its own visit",
            zhao(),
            Some(s(zhao_visit.clone())),
            s(review(&zhao_visit, "zhao", "approved", "")),
            Err(ForbiddenRole),
        ),
        (
            "another street's supervisor approves",
            qian(),
            Some(s(done.clone())),
            s(review(&done, "qian", "approved", "")),
            Err(OutOfScope),
        ),
        (
            "approval written without a review",
            zhao(),
            Some(s(done.clone())),
            s(silently_approved),
            Err(ForbiddenRole),
        ),
        (
            "a review in another supervisor's name",
            zhao(),
            Some(s(done.clone())),
            s(review(&done, "sun", "approved", "")),
            Err(WrongAuthor),
        ),
    ]);
}

#[test]
fn conflicts_and_their_resolution() {
    use Reason::*;
    let p = person("g1");
    let mut at_g2 = p.clone();
    at_g2.area = "g2".into();
    let area_conflict = conflicted(p.clone(), "area", &["g2", "g1"]);
    let ev = event("g1", "g1", "closed", "wang");
    let status_conflict = conflicted(ev.clone(), "status", &["assigned", "closed"]);
    let to_assigned = set(ev.clone(), "status", "assigned");
    let to_reopened = set(ev.clone(), "status", "reopened");
    let new_conflict = conflicted(set(p.clone(), "name", "x"), "name", &["x", "y"]);
    check(vec![
        (
            "supervisor resolves an area conflict to one of its values",
            zhao(),
            Some(area_conflict.clone()),
            s(at_g2.clone()),
            Ok(()),
        ),
        (
            "worker resolves it to an area outside its scope",
            wang(),
            Some(area_conflict),
            s(at_g2),
            Err(OutOfScope),
        ),
        (
            "status conflict resolved to one of its values",
            zhao(),
            Some(status_conflict.clone()),
            s(to_assigned),
            Ok(()),
        ),
        (
            "status conflict resolved to another value",
            zhao(),
            Some(status_conflict),
            s(to_reopened),
            Err(InvalidTransition),
        ),
        (
            "a change that makes a conflict by itself",
            wang(),
            Some(s(p.clone())),
            new_conflict,
            Err(Malformed),
        ),
    ]);
}

#[test]
fn authors() {
    let a = wang();
    let note = |user: &str, device: Option<&str>| ChangeNote {
        user: user.into(),
        device: device.map(str::to_owned),
        action: "edit".into(),
        fields: vec![],
        forms: None,
    };
    let rows: Vec<(&str, Option<&str>, &str, Option<ChangeNote>, bool)> = vec![
        (
            "the registered store, the token's user and device",
            Some("aa"),
            "aa",
            Some(note("wang", Some("wang-phone"))),
            true,
        ),
        (
            "an older note without a device",
            Some("aa"),
            "aa",
            Some(note("wang", None)),
            true,
        ),
        (
            "no store registered",
            None,
            "aa",
            Some(note("wang", None)),
            false,
        ),
        (
            "another store's actor",
            Some("aa"),
            "bb",
            Some(note("wang", None)),
            false,
        ),
        (
            "another user named",
            Some("aa"),
            "aa",
            Some(note("zhao", None)),
            false,
        ),
        (
            "another device named",
            Some("aa"),
            "aa",
            Some(note("wang", Some("zhao-ipad"))),
            false,
        ),
        ("no note", Some("aa"), "aa", None, false),
    ];
    for (name, bound, actor_hex, n, ok) in rows {
        let got = check_author(&a, bound, actor_hex, n.as_ref());
        assert_eq!(got.is_ok(), ok, "{name}: {got:?}");
        if let Err(r) = got {
            assert_eq!(r.reason, Reason::WrongAuthor, "{name}");
        }
    }
}

#[test]
fn unconfirmed_identities_cover_nothing() {
    let mut a = wang();
    a.area_path = String::new();
    assert!(!a.covers(&tree(), "g1"));
    let mut o = op();
    o.area_path = String::new();
    assert!(o.covers(&tree(), "g1"));
}

#[test]
fn reasons_round_trip() {
    for r in Reason::ALL {
        assert_eq!(Reason::parse(r.as_str()), Some(r));
    }
    assert!(Reason::Busy.is_transient());
    assert!(!Reason::OutOfScope.is_transient());
}

/// A city form on d1 for people (`income`, a number) and one on c1 that makes `income` a choice there.
fn city_forms() -> Vec<Form> {
    use crate::model::{FormField, FormType};
    let field = |key: &str, ty: FormType, options: &[&str]| FormField {
        key: key.into(),
        label_zh: "字段".into(),
        label_en: "Field".into(),
        ty,
        required: true,
        options: options.iter().map(|o| o.to_string()).collect(),
        help_zh: None,
        help_en: None,
    };
    vec![
        Form {
            id: "city".into(),
            area: "d1".into(),
            kind: Kind::Person,
            fields: vec![
                field("income", FormType::Number, &[]),
                field("pension", FormType::YesNo, &[]),
            ],
        },
        Form {
            id: "c1-income".into(),
            area: "c1".into(),
            kind: Kind::Person,
            fields: vec![field(
                "income",
                FormType::Choice,
                &["low", "middle", "high"],
            )],
        },
    ]
}

fn with_attr(mut r: Record, key: &str, value: &str) -> Record {
    r.attrs.insert(key.into(), value.into());
    r
}

#[test]
fn form_values() {
    use Reason::*;
    // Stored under an earlier form (free text where a choice is asked now).
    let old_value = with_attr(person("g1"), "income", "about 3000");
    check(vec![
        (
            "a value of the form's type",
            wang(),
            None,
            s(with_attr(person("g1"), "pension", "yes")),
            Ok(()),
        ),
        (
            "a value that breaks its field's type",
            wang(),
            None,
            s(with_attr(person("g1"), "pension", "perhaps")),
            Err(InvalidValue),
        ),
        (
            "the community's form replaces the city's field: a number is not an option in c1",
            wang(),
            None,
            s(with_attr(person("g1"), "income", "3000")),
            Err(InvalidValue),
        ),
        (
            "the city's field holds elsewhere",
            qian(),
            None,
            s(with_attr(person("g3"), "income", "3000")),
            Ok(()),
        ),
        (
            "a required field left empty is the device's concern, not a refusal",
            wang(),
            None,
            s(person("g1")),
            Ok(()),
        ),
        (
            "attributes no form defines are free",
            wang(),
            None,
            s(with_attr(person("g1"), "nickname", "小王")),
            Ok(()),
        ),
        (
            "an old value that no longer fits is not judged again by an unrelated edit",
            wang(),
            Some(s(old_value.clone())),
            s(with_attr(old_value.clone(), "pension", "no")),
            Ok(()),
        ),
        (
            "but rewriting it must fit the form",
            wang(),
            Some(s(old_value.clone())),
            s(with_attr(old_value.clone(), "income", "about 4000")),
            Err(InvalidValue),
        ),
        (
            "and correcting it to an option is fine",
            wang(),
            Some(s(old_value.clone())),
            s(with_attr(old_value, "income", "middle")),
            Ok(()),
        ),
    ]);
}

const KEPT: &str = "fedcba9876543210fedcba9876543210";

fn merged_away(r: &Record, by: &str) -> Record {
    let mut m = r.clone();
    m.deleted = true;
    with_entry(m, entry(by, "merge", None, Some(KEPT)))
}

fn absorbing(r: &Record, by: &str, away: &str) -> Record {
    let mut a = r.clone();
    a.dups.insert(away.into(), "merged".into());
    a.fields.insert("phone".into(), "13800000000".into());
    with_entry(a, entry(by, "absorb", Some(away), None))
}

fn with_dup(mut r: Record, key: &str, value: &str) -> Record {
    r.dups.insert(key.into(), value.into());
    r
}

#[test]
fn merging_duplicates() {
    use Reason::*;
    let p = person("g1");
    let p2 = person("g2");
    let away_id = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let absorbed = absorbing(&p, "wang", away_id);
    let mut no_tombstone = p.clone();
    no_tombstone = with_entry(no_tombstone, entry("wang", "merge", None, Some(KEPT)));
    let ev = new_event("g1", "wang");
    let mut merged_event = ev.clone();
    merged_event.deleted = true;
    merged_event = with_entry(merged_event, entry("wang", "merge", None, Some(KEPT)));
    let gone = merged_away(&p, "wang");
    let mut restored = gone.clone();
    restored.deleted = false;
    restored = with_entry(restored, entry("wang", "restore", None, None));
    let mut marker_only = p.clone();
    marker_only.dups.insert(away_id.into(), "merged".into());
    let mut entry_only = with_entry(p.clone(), entry("wang", "absorb", Some(away_id), None));
    entry_only
        .fields
        .insert("phone".into(), "13800000000".into());
    let mut undone = absorbed.clone();
    undone.dups.clear();
    check(vec![
        (
            "the grid's own worker merges a resident away",
            wang(),
            Some(s(p.clone())),
            s(gone.clone()),
            Ok(()),
        ),
        (
            "a supervisor of the area merges",
            zhao(),
            Some(s(p2.clone())),
            s(merged_away(&p2, "zhao")),
            Ok(()),
        ),
        (
            "a worker of another grid does not",
            li(),
            Some(s(p.clone())),
            s(merged_away(&p, "li")),
            Err(OutOfScope),
        ),
        (
            "a merge leaves a tombstone",
            wang(),
            Some(s(p.clone())),
            s(no_tombstone),
            Err(InvalidTransition),
        ),
        (
            "events are not merged",
            wang(),
            Some(s(ev)),
            s(merged_event),
            Err(InvalidTransition),
        ),
        (
            "a merged record stays merged",
            wang(),
            Some(s(gone)),
            s(restored),
            Err(InvalidTransition),
        ),
        (
            "the kept record absorbs the other",
            wang(),
            Some(s(p.clone())),
            s(absorbed.clone()),
            Ok(()),
        ),
        (
            "no absorbing without its entry",
            wang(),
            Some(s(p.clone())),
            s(marker_only),
            Err(InvalidTransition),
        ),
        (
            "an absorb entry records the merged-away record",
            wang(),
            Some(s(p.clone())),
            s(entry_only),
            Err(InvalidValue),
        ),
        (
            "a merge is not undone",
            zhao(),
            Some(s(absorbed.clone())),
            s(undone),
            Err(AppendOnly),
        ),
        (
            "a settled value is the merger's to write",
            wang(),
            Some(s(absorbed.clone())),
            s(with_dup(
                absorbed.clone(),
                &format!("{away_id}/phone"),
                "139",
            )),
            Ok(()),
        ),
        (
            "not a duplicate: the grid's worker decides",
            wang(),
            Some(s(p.clone())),
            s(with_dup(p.clone(), away_id, "distinct")),
            Ok(()),
        ),
        (
            "a decision is merged or distinct",
            wang(),
            Some(s(p.clone())),
            s(with_dup(p.clone(), away_id, "maybe")),
            Err(InvalidValue),
        ),
        (
            "a street supervisor's scope covers the grid",
            sun(),
            Some(s(p.clone())),
            s(with_dup(p.clone(), away_id, "distinct")),
            Ok(()),
        ),
        (
            "another street's supervisor does not",
            qian(),
            Some(s(p.clone())),
            s(with_dup(p.clone(), away_id, "distinct")),
            Err(OutOfScope),
        ),
        (
            "a new record has no decisions",
            wang(),
            None,
            s(with_dup(person("g1"), away_id, "distinct")),
            Err(InvalidValue),
        ),
    ]);
}
