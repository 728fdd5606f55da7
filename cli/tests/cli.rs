//! The real `gridwork` binary against stores in temporary directories.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gridwork");

/// One device: a store directory and the environment to run the binary with.
struct Dev {
    store: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Dev {
    fn new(root: &Path, name: &str) -> Dev {
        Dev {
            store: root.join(name),
            env: Vec::new(),
        }
    }

    fn with_env(mut self, key: &'static str, value: impl Into<String>) -> Dev {
        self.env.push((key, value.into()));
        self
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("--store").arg(&self.store).args(args);
        for var in [
            "GRIDWORK_KEY",
            "GRIDWORK_PASSPHRASE",
            "GRIDWORK_STORE",
            "GRIDWORK_LOG",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().expect("binary runs")
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "gridwork {args:?} failed ({:?}):\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs a read command with --json and parses its output.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{text}"))
    }

    /// Runs a command that must fail with `code`; returns its stderr.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "gridwork {args:?} should exit {code}; stdout:\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    /// `add` prints the new id.
    fn add(&self, args: &[&str]) -> String {
        let mut all = vec!["add"];
        all.extend_from_slice(args);
        let id = self.ok(&all).trim().to_owned();
        assert_eq!(id.len(), 32, "an id: {id}");
        id
    }

    fn init(&self, user: &str, role: &str, area: &str) {
        self.init_as(user, &format!("{user}-phone"), role, area)
    }

    fn init_as(&self, user: &str, device: &str, role: &str, area: &str) {
        self.ok(&[
            "init", "--user", user, "--device", device, "--role", role, "--area", area,
        ]);
        for (id, level, name, parent) in [
            ("d1", "district", "East District", None),
            ("s1", "street", "River Street", Some("d1")),
            ("c1", "community", "柳树社区", Some("s1")),
            ("g1", "grid", "Grid 1", Some("c1")),
            ("g2", "grid", "Grid 2", Some("c1")),
        ] {
            let mut args = vec!["area", "add", id, "--level", level, "--name", name];
            if let Some(p) = parent {
                args.extend(["--parent", p]);
            }
            self.ok(&args);
        }
    }
}

fn ids(v: &Value) -> Vec<String> {
    let items = v.get("items").unwrap_or(v);
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn init_writes_a_private_key_and_builds_the_area_tree() {
    let root = tempfile::tempdir().unwrap();
    let wang = Dev::new(root.path(), "wang");
    let out = wang.ok(&[
        "init", "--user", "wang", "--device", "p1", "--role", "worker", "--area", "g1",
    ]);
    assert!(out.contains("platform keystore"), "{out}");
    assert!(wang.store.join("gridwork.db").exists());
    let key = wang.store.join("store.key");
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = wang.fails(
        1,
        &[
            "init", "--user", "wang", "--device", "p1", "--role", "worker", "--area", "g1",
        ],
    );
    assert!(again.contains("already exists"), "{again}");

    wang.ok(&["area", "add", "d1", "--level", "district", "--name", "East"]);
    wang.ok(&[
        "area", "add", "s1", "--level", "street", "--name", "River", "--parent", "d1",
    ]);
    wang.ok(&[
        "area",
        "add",
        "c1",
        "--level",
        "village",
        "--name",
        "柳树村",
        "--parent",
        "s1",
    ]);
    wang.ok(&[
        "area", "add", "g1", "--level", "grid", "--name", "Grid 1", "--parent", "c1",
    ]);
    let err = wang.fails(
        1,
        &[
            "area", "add", "g9", "--level", "grid", "--name", "X", "--parent", "d1",
        ],
    );
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("cannot be placed under"), "{err}");
    let err = wang.fails(
        1,
        &[
            "area", "add", "g9", "--level", "grid", "--name", "X", "--parent", "nope",
        ],
    );
    assert!(err.contains("no area with id nope"), "{err}");

    let areas = wang.json(&["area", "list"]);
    let paths: Vec<&str> = areas
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["d1/", "d1/s1/", "d1/s1/c1/", "d1/s1/c1/g1/"]);
    let table = wang.ok(&["area", "list"]);
    assert!(
        table.contains("柳树村") && table.contains("community"),
        "{table}"
    );

    let me = wang.json(&["whoami"]);
    assert_eq!(me["identity"]["user_id"], "wang");
    assert_eq!(me["identity"]["role"], "worker");
}

#[test]
fn usage_errors_exit_2_and_missing_stores_exit_1() {
    let root = tempfile::tempdir().unwrap();
    let dev = Dev::new(root.path(), "none");
    dev.fails(2, &[]);
    dev.fails(2, &["list", "dragon"]);
    dev.fails(
        2,
        &["add", "person", "--area", "g1", "--set", "no-equals-sign"],
    );
    dev.fails(2, &["list", "person", "--only-area"]);
    let err = dev.fails(1, &["list", "person"]);
    assert!(err.contains("no Gridwork store"), "{err}");
    assert!(
        !dev.store.join("gridwork.db").exists(),
        "no empty store left behind"
    );
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("platform keystore") && help.contains("EXAMPLES"),
        "{help}"
    );
}

#[test]
fn add_every_kind_edit_show_and_list_with_masking() {
    let root = tempfile::tempdir().unwrap();
    let wang = Dev::new(root.path(), "wang");
    wang.init("wang", "worker", "g1");

    let block = wang.add(&[
        "place",
        "--area",
        "g1",
        "--set",
        "name=Block 3",
        "--set",
        "category=building",
        "--set",
        "address=幸福路12号",
    ]);
    let person = wang.add(&[
        "person",
        "--area",
        "g1",
        "--set",
        "name=王小明",
        "--set",
        "sex=male",
        "--set",
        "birth_date=1948-03-02",
        "--set",
        "id_number=110101194803021234",
        "--set",
        &format!("home_place={block}"),
        "--attr",
        "hukou=local",
        "--tag",
        "lives alone",
        "--notes",
        "Needs a weekly call.",
    ]);
    let hydrant = wang.add(&[
        "object",
        "--area",
        "g1",
        "--set",
        "name=Fire hydrant",
        "--set",
        "category=facility",
        "--set",
        "condition=good",
    ]);
    let committee = wang.add(&[
        "organisation",
        "--area",
        "g1",
        "--set",
        "name=Residents' committee",
        "--set",
        "category=committee",
        "--set",
        "contact_phone=+86 21 5555 0101",
    ]);
    let event = wang.add(&[
        "event",
        "--area",
        "g1",
        "--set",
        "title=Broken stair light",
        "--set",
        "category=hazard_report",
        "--set",
        "due=2030-01-01 18:00",
    ]);
    let e = wang.json(&["show", &event]);
    assert_eq!(
        e["fields"]["due"], "2030-01-01T18:00:00Z",
        "times are normalised"
    );
    assert_eq!(e["fields"]["status"], "reported");

    // Invalid input: a clear message naming the field, never the value, exit 1.
    let err = wang.fails(
        1,
        &[
            "add",
            "person",
            "--area",
            "g1",
            "--set",
            "name=X",
            "--set",
            "colour=red",
        ],
    );
    assert!(
        err.contains("colour") && err.contains("fields of a person"),
        "{err}"
    );
    let err = wang.fails(
        1,
        &[
            "add",
            "person",
            "--area",
            "g1",
            "--set",
            "name=X",
            "--set",
            "phone=12ab34",
        ],
    );
    assert!(err.contains("`phone`") && !err.contains("12ab34"), "{err}");
    let err = wang.fails(1, &["add", "person", "--area", "g1", "--set", "sex=male"]);
    assert!(err.contains("`name`") && err.contains("required"), "{err}");
    let err = wang.fails(1, &["add", "person", "--area", "g2", "--set", "name=X"]);
    assert!(err.contains("outside your scope"), "{err}");
    let err = wang.fails(
        1,
        &[
            "add",
            "event",
            "--area",
            "g1",
            "--set",
            "title=T",
            "--set",
            "status=closed",
        ],
    );
    assert!(err.contains("cannot be edited directly"), "{err}");

    wang.ok(&[
        "edit",
        &person,
        "--set",
        "phone=+86 138 0013 8000",
        "--attr",
        "floor=3",
        "--unset-attr",
        "hukou",
        "--tag",
        "needs care",
        "--untag",
        "lives alone",
        "--notes",
        "Calls on Mondays.",
    ]);
    let err = wang.fails(1, &["edit", &person]);
    assert!(err.contains("nothing to change"), "{err}");
    let err = wang.fails(
        1,
        &[
            "edit",
            "0123456789abcdef0123456789abcdef",
            "--set",
            "sex=male",
        ],
    );
    assert!(err.contains("no record with id"), "{err}");
    wang.ok(&["link", &person, "lives_at", &block]);
    wang.ok(&["link", &committee, "owns", &hydrant]);
    let err = wang.fails(1, &["link", &block, "lives_at", &person]);
    assert!(err.contains("cannot be `lives_at`"), "{err}");

    let p = wang.json(&["show", &person]);
    assert_eq!(p["kind"], "person");
    assert_eq!(p["fields"]["phone"], "+86 138 0013 8000");
    assert_eq!(p["attrs"]["floor"], "3");
    assert!(p["attrs"].get("hukou").is_none());
    assert_eq!(p["tags"], serde_json::json!(["needs care"]));
    assert_eq!(p["notes"], "Calls on Mondays.");
    assert_eq!(p["links"][0]["target"], block.as_str());

    // `show` prints everything in full, with links both ways.
    let shown = wang.ok(&["show", &person]);
    for needle in [
        "王小明",
        "110101194803021234",
        "floor",
        "needs care",
        "lives_at",
        "Block 3",
        "Calls on Mondays.",
    ] {
        assert!(shown.contains(needle), "show lacks {needle}:\n{shown}");
    }
    let shown_place = wang.ok(&["show", &block]);
    assert!(
        shown_place.contains("←") && shown_place.contains("王小明"),
        "{shown_place}"
    );

    // Lists mask sensitive fields in tables, not in JSON.
    let table = wang.ok(&["list", "person"]);
    assert!(
        table.contains("王小明") && table.contains("****1234"),
        "{table}"
    );
    assert!(!table.contains("110101194803021234"), "{table}");
    let listed = wang.json(&["list", "person"]);
    assert_eq!(ids(&listed), vec![person.clone()]);
    for (kind, id) in [
        ("place", &block),
        ("object", &hydrant),
        ("organisation", &committee),
        ("event", &event),
    ] {
        assert_eq!(ids(&wang.json(&["list", kind])), vec![id.clone()], "{kind}");
    }
    assert_eq!(
        ids(&wang.json(&["list", "person", "--tag", "needs care"])).len(),
        1
    );
    assert_eq!(
        ids(&wang.json(&["list", "person", "--where", "sex=female"])).len(),
        0
    );
    assert_eq!(
        ids(&wang.json(&["list", "person", "--area", "c1"])).len(),
        1,
        "subtree"
    );
    assert_eq!(
        ids(&wang.json(&["list", "person", "--area", "c1", "--only-area"])).len(),
        0
    );
    let err = wang.fails(1, &["list", "person", "--where", "colour=red"]);
    assert!(err.contains("colour"), "{err}");

    // Delete, list with --deleted, restore, move within scope.
    wang.ok(&["delete", &hydrant, "--reason", "removed by the city"]);
    assert!(ids(&wang.json(&["list", "object"])).is_empty());
    let with_deleted = wang.json(&["list", "object", "--deleted"]);
    assert_eq!(with_deleted["items"][0]["deleted"], true);
    let err = wang.fails(1, &["edit", &hydrant, "--set", "condition=poor"]);
    assert!(err.contains("is deleted"), "{err}");
    wang.ok(&["restore", &hydrant]);
    assert_eq!(ids(&wang.json(&["list", "object"])).len(), 1);
    let err = wang.fails(1, &["move", &hydrant, "--area", "g2"]);
    assert!(err.contains("outside your scope"), "{err}");
    wang.ok(&["unlink", &committee, "owns", &hydrant]);
    assert!(wang.json(&["show", &committee])["links"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn paging_and_search_with_chinese_and_latin_text() {
    let root = tempfile::tempdir().unwrap();
    let wang = Dev::new(root.path(), "wang");
    wang.init("wang", "worker", "g1");
    let xiaoming = wang.add(&["person", "--area", "g1", "--set", "name=王小明"]);
    let li = wang.add(&[
        "person",
        "--area",
        "g1",
        "--set",
        "name=李明华",
        "--notes",
        "独居老人，腿脚不便",
    ]);
    let smith = wang.add(&["person", "--area", "g1", "--set", "name=John Smith"]);
    let shop = wang.add(&[
        "place",
        "--area",
        "g1",
        "--set",
        "name=Corner shop",
        "--set",
        "address=幸福路12号",
    ]);

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(ids(&wang.json(&["search", "小明"])), vec![xiaoming.clone()]);
    assert_eq!(
        sorted(ids(&wang.json(&["search", "明"]))),
        sorted(vec![xiaoming.clone(), li.clone()])
    );
    assert_eq!(ids(&wang.json(&["search", "独居"])), vec![li.clone()]);
    assert_eq!(ids(&wang.json(&["search", "smi"])), vec![smith.clone()]);
    assert_eq!(
        ids(&wang.json(&["search", "JOHN smith"])),
        vec![smith.clone()]
    );
    assert_eq!(
        ids(&wang.json(&["search", "幸福路", "--kind", "place"])),
        vec![shop.clone()]
    );
    assert!(ids(&wang.json(&["search", "幸福路", "--kind", "person"])).is_empty());
    assert!(ids(&wang.json(&["search", "\"*)("])).is_empty());
    assert_eq!(
        ids(&wang.json(&["list", "person", "--text", "明"])).len(),
        2
    );
    assert_eq!(
        ids(&wang.json(&["list", "person", "--text", "smith"])),
        vec![smith]
    );

    let table = wang.ok(&["search", "明"]);
    assert!(
        table.contains("王小明") && table.contains("李明华") && table.contains("2 results"),
        "{table}"
    );
    assert!(wang.ok(&["search", "小红"]).contains("no matches"));

    let page = wang.json(&["list", "person", "--limit", "2"]);
    assert_eq!(ids(&page).len(), 2);
    assert_eq!(page["next_offset"], 2);
    let rest = wang.json(&["list", "person", "--limit", "2", "--offset", "2"]);
    assert_eq!(ids(&rest).len(), 1);
    assert!(rest["next_offset"].is_null());
    assert!(wang
        .ok(&["list", "person", "--limit", "2"])
        .contains("--offset 2"));
}

#[test]
fn event_lifecycle_with_forbidden_steps() {
    let root = tempfile::tempdir().unwrap();
    let wang = Dev::new(root.path(), "wang");
    wang.init("wang", "worker", "g1");
    let e = wang.add(&[
        "event",
        "--area",
        "g1",
        "--set",
        "title=Broken stair light",
        "--set",
        "due=2020-01-01T00:00:00Z",
    ]);

    let err = wang.fails(1, &["event", "close", &e]);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("`close` is not allowed from status `reported`") && err.contains("assign"),
        "{err}"
    );
    let err = wang.fails(1, &["event", "assign", &e, "li"]);
    assert!(
        err.contains("not allowed") && err.contains("supervisor"),
        "{err}"
    );
    let out = wang.ok(&["event", "assign", &e, "wang"]);
    assert!(out.contains("reported → assigned"), "{out}");
    wang.ok(&["event", "start", &e]);
    wang.ok(&["event", "resolve", &e, "--comment", "Bulb replaced"]);
    let err = wang.fails(1, &["event", "verify", &e]);
    assert!(err.contains("needs a supervisor"), "{err}");
    wang.fails(2, &["event", "return", &e]);
    let mine = wang.json(&["event", "mine"]);
    assert_eq!(ids(&mine), vec![e.clone()]);
    assert_eq!(ids(&wang.json(&["event", "overdue"])), vec![e.clone()]);
    wang.ok(&[
        "event",
        "comment",
        &e,
        "--comment",
        "Waiting for the supervisor",
    ]);
    wang.fails(2, &["start", &e]);
    let escalated = wang.json(&["event", "escalate", &e, "--comment", "Wiring fault"]);
    assert_eq!(escalated["status"], "reported");
    assert_eq!(escalated["responsible"], "c1");
    // Escalated to c1: out of a worker's reach now.
    let err = wang.fails(1, &["event", "comment", &e, "--comment", "hello?"]);
    assert!(err.contains("outside your scope"), "{err}");

    // A supervisor of the community runs the whole lifecycle on its own store.
    let zhao = Dev::new(root.path(), "zhao");
    zhao.init("zhao", "supervisor", "c1");
    let e2 = zhao.add(&[
        "event",
        "--area",
        "g1",
        "--set",
        "title=Blocked fire exit",
        "--set",
        "priority=urgent",
    ]);
    zhao.ok(&["event", "assign", &e2, "wang"]);
    zhao.ok(&["event", "start", &e2]);
    zhao.ok(&["event", "resolve", &e2]);
    let err = zhao.fails(1, &["event", "return", &e2, "--comment", " "]);
    assert!(err.contains("comment"), "{err}");
    zhao.ok(&[
        "event",
        "return",
        &e2,
        "--comment",
        "Still blocked on floor 2",
    ]);
    zhao.ok(&["event", "start", &e2]);
    zhao.ok(&["event", "resolve", &e2]);
    zhao.ok(&["event", "verify", &e2]);
    let closed = zhao.json(&["event", "close", &e2]);
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["from"], "verified");
    let err = zhao.fails(1, &["event", "close", &e2]);
    assert!(
        err.contains("from status `closed`") && err.contains("reopen"),
        "{err}"
    );
    zhao.ok(&["event", "reopen", &e2, "--comment", "Blocked again"]);
    zhao.ok(&["event", "escalate", &e2]);
    let handed = zhao.json(&["event", "hand-down", &e2, "--area", "g1"]);
    assert_eq!(handed["responsible"], "g1");
    let err = zhao.fails(1, &["event", "hand-down", &e2, "--area", "g2"]);
    assert!(err.contains("hand down"), "{err}");

    let shown = zhao.json(&["show", &e2]);
    let actions: Vec<&str> = shown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "report",
            "assign",
            "start",
            "resolve",
            "return",
            "start",
            "resolve",
            "verify",
            "close",
            "reopen",
            "escalate",
            "hand_down"
        ]
    );
    let text = zhao.ok(&["show", &e2]);
    assert!(
        text.contains("timeline") && text.contains("Still blocked on floor 2"),
        "{text}"
    );
    assert!(zhao.ok(&["event", "mine"]).contains("no open events"));
}

#[test]
fn visits_start_record_attach_finish_and_review() {
    let root = tempfile::tempdir().unwrap();
    let wang = Dev::new(root.path(), "wang");
    wang.init("wang", "worker", "g1");
    let person = wang.add(&["person", "--area", "g1", "--set", "name=王小明"]);
    let v = wang.ok(&[
        "visit",
        "start",
        "--area",
        "g1",
        "--purpose",
        "Weekly call",
        "--lat",
        "31.2304",
        "--lon",
        "121.4737",
        "--accuracy",
        "8",
    ]);
    let v = v.trim().to_owned();
    wang.ok(&["visit", "record", &v, &person]);
    wang.ok(&["visit", "answer", &v, "smoke alarm works", "yes"]);
    let photo = root.path().join("stairwell.jpg");
    std::fs::write(&photo, b"\xff\xd8\xff not really a jpeg").unwrap();
    let att = wang.json(&["visit", "attach", &v, photo.to_str().unwrap()]);
    assert_eq!(att["mime"], "image/jpeg");
    assert_eq!(att["sha256"].as_str().unwrap().len(), 64);
    let err = wang.fails(1, &["visit", "attach", &person, photo.to_str().unwrap()]);
    assert!(err.contains("not a visit"), "{err}");
    assert!(
        wang.json(&["visit", "queue"])
            .as_array()
            .unwrap()
            .is_empty(),
        "not finished yet"
    );
    wang.ok(&["visit", "finish", &v, "--notes", "All well."]);
    let err = wang.fails(1, &["visit", "finish", &v]);
    assert!(err.contains("already finished"), "{err}");
    let err = wang.fails(1, &["visit", "review", &v, "approve"]);
    assert!(err.contains("supervisor"), "{err}");

    let shown = wang.json(&["show", &v]);
    assert_eq!(shown["kind"], "visit");
    assert_eq!(shown["fields"]["lat"], "31.2304");
    assert_eq!(shown["fields"]["worker"], "wang");
    assert!(shown["fields"]["ended_at"].is_string());
    assert_eq!(shown["visited"], serde_json::json!([person]));
    assert_eq!(shown["checklist"]["smoke alarm works"], "yes");
    assert_eq!(shown["attachments"][0]["name"], "stairwell.jpg");
    assert_eq!(shown["notes"], "All well.");
    let text = wang.ok(&["show", &v]);
    for needle in ["visited", "王小明", "checklist", "stairwell.jpg", "UTC"] {
        assert!(text.contains(needle), "show lacks {needle}:\n{text}");
    }
    assert_eq!(ids(&wang.json(&["visit", "queue"])), vec![v.clone()]);
    assert_eq!(ids(&wang.json(&["list", "visit"])), vec![v.clone()]);
    wang.fails(
        2,
        &[
            "visit",
            "start",
            "--area",
            "g1",
            "--purpose",
            "x",
            "--lat",
            "1",
        ],
    );

    // A supervisor reviews the visits of its subtree, but never its own (reviews of other workers'
    // visits, which need a sync, are in the relay tests below and in tests/tests/e2e.rs).
    let zhao = Dev::new(root.path(), "zhao");
    zhao.init("zhao", "supervisor", "c1");
    let zv = zhao.ok(&["visit", "start", "--area", "g2", "--purpose", "Spot check"]);
    let zv = zv.trim();
    let err = zhao.fails(1, &["visit", "review", zv, "approve"]);
    assert!(err.contains("nobody reviews their own visit"), "{err}");
    zhao.ok(&["visit", "finish", zv]);
    let err = zhao.fails(
        1,
        &["visit", "review", zv, "return", "--comment", "Add a photo"],
    );
    assert!(err.contains("nobody reviews their own visit"), "{err}");
    let r = zhao.json(&["show", zv]);
    assert_eq!(r["fields"]["review_state"], "pending");
}

#[test]
fn history_outbox_and_export_as_standard_automerge() {
    use automerge::ReadDoc;
    let root = tempfile::tempdir().unwrap();
    let wang = Dev::new(root.path(), "wang");
    wang.init("wang", "worker", "g1");
    let p = wang.add(&["person", "--area", "g1", "--set", "name=王小明"]);
    wang.ok(&["edit", &p, "--set", "sex=male"]);
    wang.ok(&["delete", &p]);
    wang.ok(&["restore", &p]);

    let history = wang.json(&["history", &p]);
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create", "edit", "delete", "restore"]);
    assert!(history
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["user"] == "wang" && h["device"] == "wang-phone"));
    // What each change did, old and new.
    assert_eq!(
        history[1]["changes"],
        serde_json::json!([{"field": "sex", "old": null, "new": "male"}])
    );
    assert_eq!(
        history[2]["changes"],
        serde_json::json!([{"field": "deleted", "old": "false", "new": "true"}])
    );
    let table = wang.ok(&["history", &p]);
    assert!(
        table.contains("wang-phone") && table.contains("4 changes"),
        "{table}"
    );
    assert!(table.contains("sex  - -> male"), "{table}");

    let outbox = wang.json(&["outbox"]);
    assert_eq!(outbox["count"], 4);
    assert_eq!(outbox["changes"].as_array().unwrap().len(), 4);
    assert!(wang.ok(&["outbox"]).contains("4 changes waiting"));
    assert!(wang.json(&["quarantine"]).as_array().unwrap().is_empty());
    assert!(wang.json(&["conflicts"]).as_array().unwrap().is_empty());
    assert!(wang.ok(&["conflicts"]).contains("no conflicts"));
    let err = wang.fails(1, &["resolve", &p, "sex", "female"]);
    assert!(err.contains("no conflict"), "{err}");

    let file = root.path().join("person.automerge");
    let out = wang.json(&["export", &p, "--out", file.to_str().unwrap()]);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(out["bytes"], bytes.len());
    let doc = automerge::Automerge::load(&bytes).expect("standard automerge bytes");
    let kind = doc.get(automerge::ROOT, "kind").unwrap().unwrap().0;
    assert_eq!(kind.as_str(), Some("person"));
    assert_eq!(doc.get_changes(&[]).len(), 4);
    let err = wang.fails(
        1,
        &[
            "export",
            "0123456789abcdef0123456789abcdef",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(err.contains("no record"), "{err}");
}

#[test]
fn keys_from_files_env_and_passphrases_and_wrong_keys_fail_clearly() {
    let root = tempfile::tempdir().unwrap();
    // Default key file.
    let wang = Dev::new(root.path(), "wang");
    wang.init("wang", "worker", "g1");
    wang.add(&["person", "--area", "g1", "--set", "name=王小明"]);
    let wrong = Dev::new(root.path(), "wang").with_env("GRIDWORK_KEY", "00".repeat(32));
    let err = wrong.fails(1, &["list", "person"]);
    assert!(err.contains("error: wrong key"), "{err}");
    assert!(!err.contains("hmac"), "no SQLCipher noise: {err}");
    assert!(!err.contains("王小明"));
    let bad = Dev::new(root.path(), "wang").with_env("GRIDWORK_KEY", "xyz");
    assert!(bad
        .fails(1, &["list", "person"])
        .contains("64 hex characters"));

    // A hex key file given explicitly: nothing is written next to the store.
    let keyfile = root.path().join("li.hex");
    std::fs::write(&keyfile, format!("{}\n", "ab".repeat(32))).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let li = Dev::new(root.path(), "li");
    let kf = keyfile.to_str().unwrap();
    li.ok(&[
        "--key-file",
        kf,
        "init",
        "--user",
        "li",
        "--device",
        "li-pad",
        "--role",
        "worker",
        "--area",
        "g2",
    ]);
    assert!(!li.store.join("store.key").exists());
    for (id, level, parent) in [
        ("d1", "district", None),
        ("s1", "street", Some("d1")),
        ("c1", "community", Some("s1")),
        ("g2", "grid", Some("c1")),
    ] {
        let mut args = vec![
            "--key-file",
            kf,
            "area",
            "add",
            id,
            "--level",
            level,
            "--name",
            id,
        ];
        args.extend(parent.iter().flat_map(|p| ["--parent", *p]));
        li.ok(&args);
    }
    li.ok(&[
        "--key-file",
        kf,
        "add",
        "person",
        "--area",
        "g2",
        "--set",
        "name=Li",
    ]);
    let err = li.fails(1, &["list", "person"]);
    assert!(err.contains("no store key"), "{err}");
    let same_as_env = Dev::new(root.path(), "li").with_env("GRIDWORK_KEY", "ab".repeat(32));
    assert_eq!(ids(&same_as_env.json(&["list", "person"])).len(), 1);
    let short = root.path().join("short.key");
    std::fs::write(&short, "abc").unwrap();
    let err = li.fails(
        1,
        &["--key-file", short.to_str().unwrap(), "list", "person"],
    );
    assert!(err.contains("32 raw bytes or 64 hex characters"), "{err}");

    // A passphrase.
    let zhao = Dev::new(root.path(), "zhao").with_env("GRIDWORK_PASSPHRASE", "correct horse");
    zhao.ok(&[
        "init", "--user", "zhao", "--device", "z1", "--role", "operator", "--area", "d1",
    ]);
    assert!(!zhao.store.join("store.key").exists());
    zhao.ok(&["area", "list"]);
    let wrong = Dev::new(root.path(), "zhao").with_env("GRIDWORK_PASSPHRASE", "battery staple");
    assert!(wrong.fails(1, &["area", "list"]).contains("wrong key"));
}

#[test]
fn two_stores_exchanging_nothing_stay_apart() {
    let root = tempfile::tempdir().unwrap();
    let wang = Dev::new(root.path(), "wang");
    let li = Dev::new(root.path(), "li");
    wang.init("wang", "worker", "g1");
    li.init("li", "worker", "g2");
    let a = wang.add(&["person", "--area", "g1", "--set", "name=王小明"]);
    let b = li.add(&["person", "--area", "g2", "--set", "name=李明华"]);
    assert_eq!(ids(&wang.json(&["list", "person"])), vec![a.clone()]);
    assert_eq!(ids(&li.json(&["list", "person"])), vec![b.clone()]);
    let err = wang.fails(1, &["show", &b]);
    assert!(err.contains("no record with id"), "{err}");
    assert_eq!(wang.json(&["outbox"])["count"], 1);
    assert_eq!(li.json(&["outbox"])["count"], 1);
    assert!(wang.json(&["conflicts"]).as_array().unwrap().is_empty());
    assert!(li.json(&["quarantine"]).as_array().unwrap().is_empty());
    // Each store opens only with its own key.
    let key = std::fs::read(wang.store.join("store.key")).unwrap();
    let li_with_wang_key = Dev::new(root.path(), "li").with_env("GRIDWORK_KEY", hex_of(&key));
    assert!(li_with_wang_key
        .fails(1, &["list", "person"])
        .contains("wrong key"));
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An embedded relay (SQLite, loopback, as `gridwork demo` runs it) with the area tree
/// d1 > s1 > c1 > {g1, g2}, users wang (worker of g1) and zhao (supervisor of c1), and device tokens.
struct TestRelay {
    url: String,
    storage: gridwork_server::StorageConfig,
    runtime: tokio::runtime::Runtime,
    server: Option<gridwork_server::RunningServer>,
    tokens: std::collections::HashMap<&'static str, String>,
}

impl TestRelay {
    fn start(dir: &Path) -> TestRelay {
        use gridwork_server::{Admin, AreaLevel, RelayKey, Role, ServerConfig, StorageConfig};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let storage = StorageConfig::sqlite(dir.join("relay"), RelayKey::generate());
        let tokens = runtime.block_on(async {
            let admin = Admin::open(&storage).await.unwrap();
            for (id, parent, level) in [
                ("d1", None, AreaLevel::District),
                ("s1", Some("d1"), AreaLevel::Street),
                ("c1", Some("s1"), AreaLevel::Community),
                ("g1", Some("c1"), AreaLevel::Grid),
                ("g2", Some("c1"), AreaLevel::Grid),
            ] {
                admin.add_area(id, parent, level, id).await.unwrap();
            }
            admin
                .add_user("wang", "Wang", Role::Worker, "g1")
                .await
                .unwrap();
            admin
                .add_user("zhao", "Zhao", Role::Supervisor, "c1")
                .await
                .unwrap();
            let mut tokens = std::collections::HashMap::new();
            for (name, user, device) in [
                ("wang", "wang", "wang-phone"),
                ("wang2", "wang", "wang-tablet"),
                ("wang3", "wang", "wang-old"),
                ("zhao", "zhao", "zhao-ipad"),
            ] {
                let d = admin.add_device(user, Some(device)).await.unwrap();
                tokens.insert(name, d.token);
            }
            admin.close().await;
            tokens
        });
        let server = runtime
            .block_on(gridwork_server::start(ServerConfig::new(
                "127.0.0.1:0".parse().unwrap(),
                storage.clone(),
            )))
            .unwrap();
        TestRelay {
            url: format!("http://{}", server.local_addr()),
            storage,
            runtime,
            server: Some(server),
            tokens,
        }
    }

    fn token(&self, name: &str) -> &str {
        &self.tokens[name]
    }

    /// Defines a follow-up schedule, as an operator does with `gridwork-server admin schedule add`.
    fn put_schedule(&self, schedule: gridwork_server::Schedule) {
        self.runtime.block_on(async {
            let admin = gridwork_server::Admin::open(&self.storage).await.unwrap();
            admin.put_schedule(schedule).await.unwrap();
            admin.close().await;
        });
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

#[test]
fn init_from_the_relay_takes_the_identity_of_the_token() {
    let root = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(root.path());
    let url = relay.url.as_str();

    // The identity and the area tree come from the token.
    let wang = Dev::new(root.path(), "wang");
    let out = wang.ok(&[
        "init",
        "--server",
        url,
        "--token",
        relay.token("wang"),
        "--remember",
    ]);
    assert!(out.contains("from the relay"), "{out}");
    let me = wang.json(&["whoami"]);
    assert_eq!(me["identity"]["user_id"], "wang");
    assert_eq!(me["identity"]["device_id"], "wang-phone");
    assert_eq!(me["identity"]["role"], "worker");
    assert_eq!(me["identity"]["area"], "g1");
    assert_eq!(me["identity_confirmed"], true);
    let areas: Vec<String> = wang
        .json(&["area", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        areas,
        ["d1", "s1", "c1", "g1"],
        "the worker's grid and its ancestors"
    );
    assert!(wang.ok(&["whoami"]).contains("confirmed by the relay"));
    // The remembered relay: `sync` needs no flags.
    wang.add(&["person", "--area", "g1", "--set", "name=Relay Made"]);
    let synced = wang.json(&["sync", "--quiet"]);
    assert_eq!(synced["pushed"], 1);

    // Flags that disagree with the token are an error, and nothing is left behind.
    let claims = Dev::new(root.path(), "claims");
    for (flag, value, says) in [
        ("--role", "supervisor", "role `worker`, not `supervisor`"),
        ("--area", "g2", "area `g1`, not `g2`"),
        ("--user", "zhao", "user `wang`, not `zhao`"),
        (
            "--device",
            "zhao-ipad",
            "device `wang-tablet`, not `zhao-ipad`",
        ),
    ] {
        let err = claims.fails(
            1,
            &[
                "init",
                "--server",
                url,
                "--token",
                relay.token("wang2"),
                flag,
                value,
            ],
        );
        assert!(err.contains(says), "{err}");
        assert!(!claims.store.join("gridwork.db").exists());
        assert!(!claims.store.join("store.key").exists());
    }
    // Flags that agree are fine.
    claims.ok(&[
        "init",
        "--server",
        url,
        "--token",
        relay.token("wang2"),
        "--user",
        "wang",
        "--area",
        "g1",
    ]);

    // A token already bound to a store is refused for a second one.
    let copy = Dev::new(root.path(), "copy");
    let err = copy.fails(
        1,
        &["init", "--server", url, "--token", relay.token("wang")],
    );
    assert!(err.contains("registered to another store"), "{err}");
    assert!(!copy.store.join("gridwork.db").exists());

    // Offline, the store believes what it was told until its first sync; then the relay corrects it.
    // (Its device id is the one the operator issued the token for: changes naming another device are
    // refused as `wrong_author`.)
    let offline = Dev::new(root.path(), "offline");
    offline.init_as("wang", "wang-old", "supervisor", "c1");
    assert!(offline
        .ok(&["whoami"])
        .contains("not confirmed by the relay"));
    // Believing it is the community's supervisor, it registers someone in the other grid.
    offline.add(&["person", "--area", "g2", "--set", "name=Wrong Grid"]);
    let sync = || {
        offline.json(&[
            "sync",
            "--quiet",
            "--server",
            url,
            "--token",
            relay.token("wang3"),
        ])
    };
    let report = sync();
    assert_eq!(report["rejected"], 1, "{report}");
    let me = offline.json(&["whoami"]);
    assert_eq!(me["identity"]["role"], "worker");
    assert_eq!(me["identity"]["area"], "g1");
    assert_eq!(me["identity"]["device_id"], "wang-old");
    assert_eq!(me["identity_confirmed"], true);

    // The refused record waits in the quarantine with the relay's reason; discarding it removes it.
    let q = offline.json(&["quarantine"]);
    let q = q.as_array().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["reason"], "out_of_scope");
    assert_eq!(q[0]["origin"], "refused");
    let message = q[0]["message"].as_str().unwrap();
    assert!(message.contains("kept only on this device"), "{message}");
    let text = offline.ok(&["quarantine", "list"]);
    assert!(text.contains("out_of_scope"), "{text}");
    let hash = q[0]["hash"].as_str().unwrap();
    let err = offline.fails(1, &["quarantine", "discard", "ffffffff"]);
    assert!(err.contains("no quarantined change"), "{err}");
    let done = offline.json(&["quarantine", "discard", &hash[..12]]);
    assert_eq!(done["record_removed"], true);
    assert!(offline.json(&["quarantine"]).as_array().unwrap().is_empty());
    // What is left is what the relay gave this worker of g1: the record the first store pushed.
    let titles = |d: &Dev| -> Vec<String> {
        d.json(&["list", "person"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["title"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(titles(&offline), ["Relay Made"]);
    let again = sync();
    assert_eq!(
        (again["pushed"].as_u64(), again["rejected"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(titles(&offline), ["Relay Made"]);
}

#[test]
fn due_lists_what_the_relays_schedules_make_due() {
    let root = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(root.path());
    relay.put_schedule(gridwork_server::Schedule {
        id: "alone".into(),
        area: "c1".into(),
        name: "Living alone: weekly visit".into(),
        kind: gridwork_server::Kind::Person,
        tag: Some("lives alone".into()),
        category: None,
        every: gridwork_server::Every::Days(7),
    });
    let wang = Dev::new(root.path(), "wang");
    wang.ok(&[
        "init",
        "--server",
        &relay.url,
        "--token",
        relay.token("wang"),
        "--remember",
    ]);
    assert!(wang.ok(&["due"]).contains("nothing due"));
    wang.json(&["sync", "--quiet"]);
    let schedules = wang.ok(&["schedules"]);
    assert!(
        schedules.contains("alone") && schedules.contains("weekly"),
        "{schedules}"
    );
    let li = wang.add(&[
        "person",
        "--area",
        "g1",
        "--set",
        "name=Li Hua",
        "--tag",
        "lives alone",
    ]);
    wang.add(&["person", "--area", "g1", "--set", "name=Not Tagged"]);
    let table = wang.ok(&["due"]);
    assert!(
        table.contains("Li Hua") && table.contains("never visited"),
        "{table}"
    );
    assert!(!table.contains("Not Tagged"), "{table}");
    let due = wang.json(&["due", "--overdue"]);
    assert_eq!(due.as_array().unwrap().len(), 1, "{due}");
    assert_eq!(due[0]["record_id"], li.as_str());
    assert_eq!(due[0]["state"], "overdue");
    // A finished visit that includes her: due a week later, not overdue now.
    let v = wang.ok(&["visit", "start", "--area", "g1", "--purpose", "weekly"]);
    let v = v.trim();
    wang.ok(&["visit", "record", v, &li]);
    wang.ok(&["visit", "finish", v]);
    assert!(wang
        .json(&["due", "--overdue"])
        .as_array()
        .unwrap()
        .is_empty());
    let later = wang.json(&["due"]);
    assert!(later[0]["due_at"].is_string(), "{later}");
    let at = "2099-01-01T00:00:00Z";
    assert_eq!(
        wang.json(&["due", "--overdue", "--at", at])[0]["record_id"],
        li.as_str()
    );
    wang.fails(2, &["due", "--utc-offset", "+99:00"]);
    // New for wang: nothing but what is due (her visit is not due for a week), then nothing.
    let other = wang.add(&[
        "person",
        "--area",
        "g1",
        "--set",
        "name=Zhou Min",
        "--tag",
        "lives alone",
    ]);
    let inbox = wang.json(&["inbox"]);
    assert_eq!(inbox.as_array().unwrap().len(), 1, "{inbox}");
    assert_eq!(inbox[0]["what"], "followup_due");
    assert_eq!(inbox[0]["record_id"], other.as_str());
    assert!(wang.ok(&["inbox", "--seen"]).contains("now marked seen"));
    assert!(wang.ok(&["inbox"]).contains("nothing new"));
    // Statistics, as the relay would count them.
    let s = wang.json(&["stats"]);
    assert_eq!(s["records_per_kind"]["person"], 3);
    assert_eq!(s["visits_per_worker"]["wang"], 1);
    assert_eq!(s["coverage"][0]["records"], 2);
    assert_eq!(s["coverage"][0]["up_to_date"], 1);
    assert!(wang.ok(&["stats"]).contains("UP TO DATE"));
}

/// The README's first command: the whole story on an embedded relay, ending with every device equal.
#[test]
fn the_demo_runs_to_the_end() {
    let out = Command::new(BIN).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("王建国 in g1, last visit"), "{stdout}");
    assert!(
        stdout.contains("conflicts: 0, birth date 1941-06-12"),
        "{stdout}"
    );
    assert!(
        stdout.contains("nothing entered offline was lost"),
        "{stdout}"
    );
}

#[test]
fn report_writes_csv_xlsx_and_geojson_files() {
    let root = tempfile::tempdir().unwrap();
    let zhao = Dev::new(root.path(), "zhao");
    zhao.init("zhao", "supervisor", "c1");
    zhao.add(&[
        "person",
        "--area",
        "g1",
        "--set",
        "name=王小明",
        "--set",
        "id_number=110105194912310021",
        "--tag",
        "lives alone",
    ]);
    zhao.add(&[
        "place",
        "--area",
        "g1",
        "--set",
        "name=幸福路12号",
        "--set",
        "lat=31.23",
        "--set",
        "lon=121.47",
    ]);
    let out = root.path().join("people.csv");
    let o = out.to_str().unwrap();
    let written = zhao.json(&["report", "person", "--format", "csv", "--out", o]);
    assert!(written["bytes"].as_u64().unwrap() > 3);
    let csv = std::fs::read(&out).unwrap();
    assert!(csv.starts_with(b"\xEF\xBB\xBF"));
    let text = String::from_utf8_lossy(&csv);
    assert!(
        text.contains("王小明") && text.contains("****0021"),
        "{text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    zhao.ok(&[
        "report",
        "person",
        "--format",
        "csv",
        "--out",
        o,
        "--unmasked",
    ]);
    assert!(String::from_utf8_lossy(&std::fs::read(&out).unwrap()).contains("110105194912310021"));
    let x = root.path().join("people.xlsx");
    zhao.ok(&[
        "report",
        "person",
        "--format",
        "xlsx",
        "--out",
        x.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&x).unwrap().starts_with(b"PK"),
        "a zip container"
    );
    let g = root.path().join("places.geojson");
    zhao.ok(&[
        "report",
        "place",
        "--format",
        "geojson",
        "--out",
        g.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&std::fs::read(&g).unwrap()).unwrap();
    assert_eq!(
        v["features"][0]["geometry"]["coordinates"],
        serde_json::json!([121.47, 31.23])
    );
    // A worker's export masks, and asking for more is refused.
    let wang = Dev::new(root.path(), "wang");
    wang.init("wang", "worker", "g1");
    let err = wang.fails(
        1,
        &[
            "report",
            "person",
            "--format",
            "csv",
            "--out",
            o,
            "--unmasked",
        ],
    );
    assert!(err.contains("supervisors and operators"), "{err}");
    let err = wang.fails(1, &["report", "person", "--format", "geojson", "--out", o]);
    assert!(err.contains("coordinates"), "{err}");
}

#[test]
fn add_warns_of_a_possible_duplicate() {
    let root = tempfile::tempdir().unwrap();
    let wang = Dev::new(root.path(), "wang");
    wang.init("wang", "worker", "g1");
    let first = wang.add(&[
        "person",
        "--area",
        "g1",
        "--set",
        "name=王芳",
        "--set",
        "birth_date=1950-03-02",
    ]);
    let out = wang.run(&[
        "add",
        "person",
        "--area",
        "g1",
        "--set",
        "name=汪芳",
        "--set",
        "birth_date=1950-03-02",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("may be the same person as {first}"))
            && stderr.contains("same name and birth date"),
        "{stderr}"
    );
    let v = wang.json(&[
        "add",
        "person",
        "--area",
        "g1",
        "--set",
        "name=Wang Fang",
        "--set",
        "birth_date=1950-03-02",
    ]);
    assert_eq!(v["duplicates"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["duplicates"][0]["reasons"][0], "same_name_and_birth_date");
    let third = v["id"].as_str().unwrap().to_owned();
    // The three are three pairs; merge one, dismiss another.
    let pairs = wang.json(&["duplicates"]);
    assert_eq!(pairs.as_array().unwrap().len(), 3, "{pairs}");
    assert!(wang
        .ok(&["duplicates"])
        .contains("same name and birth date"));
    let second = ids(&wang.json(&["list", "person"]))
        .into_iter()
        .find(|id| *id != first && *id != third)
        .unwrap();
    let merged = wang.json(&["merge", &first, &second]);
    assert_eq!(merged["merged_away"], second.as_str());
    assert_eq!(merged["conflicts"], serde_json::json!(["name"]));
    let conflicts = wang.json(&["conflicts"]);
    assert_eq!(conflicts[0]["record_id"], first.as_str());
    assert_eq!(conflicts[0]["values"][1]["merged_from"], second.as_str());
    assert!(wang
        .ok(&["conflicts"])
        .contains(&format!("merged {second}")));
    wang.ok(&["resolve", &first, "name", "王芳"]);
    assert_eq!(wang.json(&["duplicates"]).as_array().unwrap().len(), 1);
    wang.ok(&["not-duplicate", &first, &third]);
    assert!(wang.ok(&["duplicates"]).contains("no duplicate candidates"));
    let err = wang.fails(1, &["edit", &second, "--set", "phone=1"]);
    assert!(err.contains(&first), "points at the kept record: {err}");
    // No city form on this offline store.
    assert!(wang.ok(&["form", "person"]).contains("no form for person"));
}

#[test]
fn move_household_moves_the_place_and_its_residents() {
    let root = tempfile::tempdir().unwrap();
    let zhao = Dev::new(root.path(), "zhao");
    zhao.init("zhao", "supervisor", "c1");
    let home = zhao.add(&["place", "--area", "g1", "--set", "name=3栋201室"]);
    let resident = zhao.add(&[
        "person",
        "--area",
        "g1",
        "--set",
        "name=王丽",
        "--set",
        &format!("home_place={home}"),
    ]);
    let v = zhao.json(&["move-household", &home, "--area", "g2"]);
    assert_eq!(
        v["moved"],
        serde_json::json!([home.clone(), resident.clone()]),
        "{v}"
    );
    assert_eq!(zhao.json(&["show", &resident])["area"], "g2");
    assert!(zhao
        .ok(&["move-household", &home, "--area", "g2"])
        .contains("no link crosses areas"));
}
