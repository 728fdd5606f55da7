//! `gridwork demo`: the whole system in one command, nothing to set up.
//!
//! Starts an embedded relay (SQLite) on a free loopback port, creates an area tree, two grid workers and a
//! supervisor with their own encrypted stores; the workers work offline (register a household, log a visit,
//! edit the same person at the same time, report an event and hand it over); then everyone syncs and the
//! demo prints what each one sees: the merged record, the conflict, the supervisor's review queue, the
//! follow-ups due; then a resident registered twice is found and merged, and read against the city's form.
use crate::ctx::{CliError, CliResult};
use crate::output;
use clap::Args;
use gridwork_core::{
    CancelToken, EventAction, FollowupQuery, GeoPoint, Identity, Kind, LinkType, ListQuery,
    NewRecord, NoProgress, ReviewState, Role, Store, StoreKey, StoreOptions, SyncConfig, Update,
};
use gridwork_server::{Admin, AreaLevel, ServerConfig, StorageConfig};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the relay's data and the three stores in this directory, with their keys (`relay.key`,
    /// `<device>.key`, mode 0600) so they can be opened again (default: a temporary directory, removed at
    /// the end). The directory must not hold an earlier demo.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the relay and its web console running after the story, until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
}

struct Device {
    name: &'static str,
    store: Store,
    config: SyncConfig,
}

impl Device {
    fn sync(&self) -> CliResult<()> {
        let r = self
            .store
            .sync(&self.config, &NoProgress, &CancelToken::new())?;
        println!(
            "  {:<6} synced: pushed {:>2}, pulled {:>2}, {} record(s) changed",
            self.name, r.pushed, r.pulled, r.records_changed
        );
        Ok(())
    }
}

fn section(title: &str) {
    println!("\n== {title}");
}

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::user(format!("demo: {e}"))
}

pub fn run(args: &DemoArgs) -> CliResult<()> {
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            if d.join("relay").exists() {
                return Err(err(format!(
                    "{} holds an earlier demo; choose an empty directory",
                    d.display()
                )));
            }
            std::fs::create_dir_all(d).map_err(err)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
            }
            d.clone()
        }
        None => {
            temp = tempdir()?;
            temp.0.clone()
        }
    };
    // The relay runs on its own runtime threads; the devices sync from this thread, as an app's
    // background thread would.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(err)?;
    // A fresh key per run: the demo's relay is encrypted like any other. A kept demo keeps its keys.
    let relay_key = gridwork_server::RelayKey::generate();
    if args.dir.is_some() {
        relay_key
            .write_new_file(&dir.join("relay.key"))
            .map_err(err)?;
    }
    let storage = StorageConfig::sqlite(dir.join("relay"), relay_key);
    // zhao's password for the web console, new each run.
    let console_password = {
        let mut b = [0u8; 9];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
        hex::encode(b)
    };

    section("An embedded relay and an area tree");
    let tokens = runtime.block_on(async {
        let admin = Admin::open(&storage).await?;
        admin
            .add_area("d1", None, AreaLevel::District, "East District")
            .await?;
        admin
            .add_area("s1", Some("d1"), AreaLevel::Street, "River Street")
            .await?;
        admin
            .add_area("c1", Some("s1"), AreaLevel::Community, "Willow Community")
            .await?;
        admin
            .add_area("g1", Some("c1"), AreaLevel::Grid, "Willow Grid 1")
            .await?;
        admin
            .add_area("g2", Some("c1"), AreaLevel::Grid, "Willow Grid 2")
            .await?;
        admin
            .add_user("wang", "Wang Fang", gridwork_server::Role::Worker, "g1")
            .await?;
        admin
            .add_user("li", "Li Wei", gridwork_server::Role::Worker, "g1")
            .await?;
        admin
            .add_user("zhao", "Zhao Min", gridwork_server::Role::Supervisor, "c1")
            .await?;
        // Residents living alone are visited every week (a follow-up schedule for the community).
        admin
            .put_schedule(gridwork_server::Schedule {
                id: "alone-weekly".into(),
                area: "c1".into(),
                name: "Living alone: a visit a week".into(),
                kind: Kind::Person,
                tag: Some("lives alone".into()),
                category: None,
                every: gridwork_server::Every::Days(7),
            })
            .await?;
        // The city's form for people: two attributes every person carries.
        admin
            .put_form(serde_json::from_value(serde_json::json!({
                "id": "city-person", "area": "d1", "kind": "person",
                "fields": [
                    {"key": "hukou", "label_zh": "户籍", "label_en": "Household registration",
                     "type": "choice", "options": ["local", "elsewhere"]},
                    {"key": "pension", "label_zh": "领取养老金", "label_en": "Receives a pension",
                     "type": "yes_no"}
                ]
            }))
            .map_err(|e| gridwork_server::Error::Invalid(e.to_string()))?)
            .await?;
        admin.set_web_password("zhao", &console_password).await?;
        let mut tokens = Vec::new();
        for (user, device) in [
            ("wang", "wang-phone"),
            ("li", "li-phone"),
            ("zhao", "zhao-ipad"),
        ] {
            tokens.push(admin.add_device(user, Some(device)).await?.token);
        }
        admin.close().await;
        Ok::<_, gridwork_server::Error>(tokens)
    });
    let tokens = tokens.map_err(err)?;
    let server = runtime
        .block_on(gridwork_server::start(ServerConfig::new(
            "127.0.0.1:0".parse().expect("address"),
            storage,
        )))
        .map_err(err)?;
    let url = format!("http://{}", server.local_addr());
    println!(
        "  relay listening on {url} (SQLite in {})",
        dir.join("relay").display()
    );
    println!("  East District > River Street > Willow Community > Grid 1, Grid 2");
    println!("  wang and li: grid workers of Grid 1; zhao: supervisor of Willow Community");

    let people = [
        ("wang", "wang-phone", Role::Worker, "g1"),
        ("li", "li-phone", Role::Worker, "g1"),
        ("zhao", "zhao-ipad", Role::Supervisor, "c1"),
    ];
    let mut devices = Vec::new();
    for ((user, device, role, area), token) in people.into_iter().zip(tokens) {
        let key = if args.dir.is_some() {
            crate::key::create_key_file(&dir.join(format!("{device}.key")))?
        } else {
            let mut key = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
            StoreKey::Raw(key)
        };
        let store = Store::open(
            StoreOptions::new(dir.join(format!("{device}.db")), key).identity(Identity {
                user_id: user.into(),
                device_id: device.into(),
                role,
                area: area.into(),
            }),
        )?;
        devices.push(Device {
            name: user,
            store,
            config: SyncConfig::new(url.clone(), token),
        });
    }
    let result = story(&devices);
    println!("\nThe web console: {url}/console  (sign in as zhao, password {console_password})");
    if result.is_ok() && args.serve {
        println!("Serving until Ctrl-C.");
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    }
    runtime.block_on(server.shutdown());
    result
}

fn story(devices: &[Device]) -> CliResult<()> {
    let (wang, li, zhao) = (&devices[0], &devices[1], &devices[2]);
    section("First sync: each device receives the area tree");
    for d in devices {
        d.sync()?;
    }

    section("wang registers a household offline");
    let unit = wang.store.create(
        NewRecord::new(Kind::Place, "g1")
            .field("category", "unit")
            .field("name", "3栋201室")
            .field("address", "幸福路12号3栋201室"),
    )?;
    let grandpa = wang.store.create(
        NewRecord::new(Kind::Person, "g1")
            .field("name", "王建国")
            .field("sex", "male")
            .field("birth_date", "1941-05-12")
            .field("phone", "13800138000")
            .field("home_place", unit.clone())
            .tag("lives alone")
            .notes("Hard of hearing; knock loudly."),
    )?;
    let daughter = wang.store.create(
        NewRecord::new(Kind::Person, "g1")
            .field("name", "王丽")
            .field("sex", "female")
            .field("phone", "13900139000"),
    )?;
    wang.store.link(&grandpa, LinkType::LivesAt, &unit)?;
    println!("  place {unit}  幸福路12号3栋201室");
    println!("  person {grandpa}  王建国 (lives alone)");
    println!("  person {daughter}  王丽");
    let visit = wang.store.start_visit(
        "g1",
        "monthly check on elderly residents",
        Some(GeoPoint {
            lat: 31.2304,
            lon: 121.4737,
            accuracy: 8.0,
        }),
    )?;
    wang.store.add_visited(&visit, &grandpa)?;
    wang.store
        .answer_checklist(&visit, "smoke alarm works", "yes")?;
    wang.store
        .answer_checklist(&visit, "medicine for a week", "no")?;
    wang.store
        .finish_visit(&visit, Some("Needs someone to collect medicine."))?;
    println!("  visit {visit} logged and finished (waiting for review)");
    wang.sync()?;
    li.sync()?;

    section("Both workers go offline and edit the same person");
    wang.store.update(
        &grandpa,
        Update::new()
            .set("phone", "13800138001")
            .notes("Hard of hearing; knock loudly. Daughter visits on Sundays."),
    )?;
    wang.store
        .update(&grandpa, Update::new().set("birth_date", "1941-05-21"))?;
    println!("  wang: new phone number, a note about the daughter, birth date 1941-05-21");
    li.store.update(
        &grandpa,
        Update::new()
            .add_tag("needs care")
            .set("birth_date", "1941-06-12"),
    )?;
    println!("  li:   tag 'needs care', birth date 1941-06-12 (from the household register)");

    section("li reports an event and hands it over to the community");
    let event = li.store.create(
        NewRecord::new(Kind::Event, "g1")
            .field("category", "hazard_report")
            .field("title", "楼道灯坏了 (stairwell light broken), building 3")
            .field("priority", "high")
            .field("due", "2026-12-01T18:00:00Z"),
    )?;
    li.store.link(&grandpa, LinkType::InvolvedIn, &event)?;
    li.store.transition(
        &event,
        EventAction::Escalate,
        Some("Needs an electrician from the community"),
    )?;
    println!("  event {event} reported, escalated to Willow Community");

    section("Everyone syncs");
    for d in [wang, li, zhao, wang, li] {
        d.sync()?;
    }

    section("zhao hands the event back to Grid 1 and assigns it to wang");
    zhao.store.transition(
        &event,
        EventAction::HandDown { area: "g1".into() },
        Some("Electrician booked; please meet him"),
    )?;
    zhao.store.transition(
        &event,
        EventAction::Assign {
            assignee: "wang".into(),
        },
        None,
    )?;
    zhao.sync()?;
    wang.sync()?;
    wang.store.transition(&event, EventAction::Start, None)?;
    println!(
        "  wang's events: {}",
        wang.store
            .assigned_to_me(10)?
            .iter()
            .map(|e| e.title.clone())
            .collect::<Vec<_>>()
            .join(", ")
    );

    section("What each device sees in Grid 1");
    for d in devices {
        let people = d.store.list(&ListQuery::new(Kind::Person).area("g1"))?;
        let names: Vec<String> = people.items.iter().map(|p| p.title.clone()).collect();
        println!(
            "  {:<6} {} people: {}",
            d.name,
            names.len(),
            names.join(", ")
        );
    }

    section("The merged record of 王建国 (identical on every device)");
    let merged = wang.store.get(&grandpa)?;
    for d in devices {
        let same = d.store.get(&grandpa)? == merged;
        println!(
            "  {:<6} {}",
            d.name,
            if same { "same document" } else { "DIFFERENT" }
        );
        if !same {
            return Err(CliError::user(
                "demo: devices disagree about the merged record",
            ));
        }
    }
    for (k, v) in &merged.fields {
        println!("    {k:<12} {v}");
    }
    println!("    {:<12} {}", "tags", merged.tags.join(", "));
    println!("    {:<12} {}", "notes", merged.notes);

    section("The conflict: both workers changed the birth date");
    for c in zhao.store.conflicts()? {
        println!("  {} of {} {}:", c.field, c.kind, c.record_id);
        for v in &c.values {
            println!(
                "    {:<12} by {:<5} on {}{}",
                v.value,
                v.user,
                v.device,
                if v.winner {
                    "  (shown until resolved)"
                } else {
                    ""
                }
            );
        }
    }

    section("zhao's review queue");
    for v in zhao.store.review_queue(10)? {
        println!(
            "  visit {} in {}: {} (by {})",
            v.id,
            v.area,
            v.title,
            v.fields.get("worker").cloned().unwrap_or_default()
        );
    }
    zhao.store.review_visit(
        &visit,
        ReviewState::Approved,
        Some("Good; arrange the medicine delivery"),
    )?;
    zhao.store
        .resolve_conflict(&grandpa, "birth_date", "1941-06-12")?;
    println!("  zhao approves the visit and resolves the birth date to 1941-06-12");

    section(
        "Follow-ups: residents living alone are visited every week (a schedule from the relay)",
    );
    for f in zhao.store.followups(&FollowupQuery {
        utc_offset_minutes: 480,
        ..Default::default()
    })? {
        println!(
            "  {}: {} in {}, last visit {}, next due {} ({})",
            f.schedule_name,
            f.title,
            f.area,
            f.last_visit
                .as_deref()
                .map(output::short_time)
                .unwrap_or_else(|| "never".into()),
            f.due_at
                .as_deref()
                .map(output::short_time)
                .unwrap_or_else(|| "now".into()),
            f.state.as_str().replace('_', " ")
        );
    }

    section("li registered 王建国 again, on his own: the duplicate is found and merged");
    let again = li.store.create(
        NewRecord::new(Kind::Person, "g1")
            .field("name", "Wang Jianguo")
            .field("birth_date", "1941-06-12")
            .field("id_number", "11010519410612001X")
            .attr("hukou", "local"),
    )?;
    li.sync()?;
    zhao.sync()?;
    for p in zhao.store.duplicates(None)? {
        let why: Vec<&str> = p.reasons.iter().map(|r| r.as_str()).collect();
        println!(
            "  possible duplicate: {} \"{}\" and {} \"{}\" ({})",
            p.a.id,
            p.a.title,
            p.b.id,
            p.b.title,
            why.join(", ")
        );
    }
    let merged = zhao.store.merge_records(&grandpa, &again)?;
    println!(
        "  zhao merges {again} into {grandpa}: took {} from it; to resolve: {}",
        merged.filled.join(", "),
        merged.conflicts.join(", ")
    );
    zhao.store.resolve_conflict(&grandpa, "name", "王建国")?;
    println!("  zhao keeps the name 王建国; {again} is now a tombstone that points at {grandpa}");

    section("The city's form for people (an operator defined it on the relay)");
    for v in zhao.store.record_form(&grandpa)? {
        let label = v
            .field
            .as_ref()
            .map(|f| format!("{} / {}", f.label_zh, f.label_en))
            .unwrap_or_else(|| v.key.clone());
        println!(
            "  {label}: {} ({})",
            v.value.as_deref().unwrap_or("-"),
            format!("{:?}", v.state).to_lowercase()
        );
    }

    section("Final sync");
    for d in [zhao, wang, li, zhao] {
        d.sync()?;
    }
    for d in devices {
        let r = d.store.get(&grandpa)?;
        println!(
            "  {:<6} conflicts: {}, birth date {}, visit review: {}, event: {}",
            d.name,
            d.store.conflicts()?.len(),
            r.field("birth_date").unwrap_or("-"),
            d.store.get(&visit)?.field("review_state").unwrap_or("-"),
            d.store.get(&event)?.field("status").unwrap_or("-"),
        );
    }
    println!("\nDone. Every device holds the same records; nothing entered offline was lost.");
    Ok(())
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> CliResult<TempDir> {
    let mut suffix = [0u8; 6];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut suffix);
    let path = std::env::temp_dir().join(format!("gridwork-demo-{}", hex::encode(suffix)));
    std::fs::create_dir_all(&path).map_err(err)?;
    Ok(TempDir(path))
}
