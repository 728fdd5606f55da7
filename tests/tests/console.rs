//! The web console in a real browser: Debian's Chromium driven through chromedriver (WebDriver) against
//! a real relay process. A supervisor signs in, approves one visit and returns another (the worker's
//! phone sees both after its next sync); a form with a forged CSRF token is refused; a grid worker is
//! refused; another community's supervisor sees nothing of this one; ten wrong passwords are slowed
//! down. The main pages are saved as screenshots (`GRIDWORK_SCREENSHOTS`, else the target's tmp dir).
//!
//! Needs `chromedriver` and `chromium` (`scripts/setup-browser.sh` installs them); without them the
//! test is skipped, except under CI where it fails.
use fantoccini::{Client, ClientBuilder, Locator};
use gridwork_core::*;
use gridwork_tests::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn chromedriver() -> Option<PathBuf> {
    let path = std::env::var_os("GRIDWORK_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "chromedriver not found at {}: run scripts/setup-browser.sh",
        path.display()
    );
    eprintln!("skipped: no chromedriver (scripts/setup-browser.sh installs it)");
    None
}

/// A chromedriver process on a free loopback port, stopped when dropped.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver(path: &PathBuf) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver(child, port)
}

async fn browser(port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--lang=zh-CN"],
            "binary": std::env::var("GRIDWORK_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "prefs": {
                "download.default_directory": downloads().to_str().unwrap(),
                "download.prompt_for_download": false,
            },
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect to chromedriver")
}

/// Where the browser saves downloads (one directory per test process).
fn downloads() -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("gridwork-console-downloads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn screenshots() -> PathBuf {
    let dir = std::env::var_os("GRIDWORK_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn sign_in(c: &Client, base: &str, user: &str, password: &str) -> String {
    c.goto(&format!("{base}/console/login?lang=en"))
        .await
        .unwrap();
    type_into(c, "input[name=user]", user).await;
    type_into(c, "input[name=password]", password).await;
    click(c, "main form button[type=submit]").await;
    body(c).await
}

/// The text of the page shown now.
async fn body(c: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match c.find(Locator::Css("body")).await {
            Ok(b) => match b.text().await {
                Ok(t) => return t,
                Err(e) if Instant::now() > deadline => panic!("the page did not settle: {e}"),
                Err(_) => {}
            },
            Err(e) if Instant::now() > deadline => panic!("no page: {e}"),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Types `text` into the field `css` finds.
async fn type_into(c: &Client, css: &str, text: &str) {
    let field = c.find(Locator::Css(css)).await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Clicks what `css` finds (an option, a checkbox: nothing that leaves the page).
async fn pick(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Clicks what `css` finds and waits until the page it leads to has replaced this one.
async fn click(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.unwrap();
    pick(c, css).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    // The old document's element goes stale once the next page is loaded.
    while old.tag_name().await.is_ok() {
        assert!(Instant::now() < deadline, "clicking {css} led nowhere");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sign_out(c: &Client) {
    click(c, "form[action='/console/logout'] button").await;
}

const PASSWORD: &str = "willow-tree-2026";

/// A map tile server on loopback: answers every request with a 1x1 PNG and counts them.
struct TileServer {
    port: u16,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TileServer {
    fn start() -> TileServer {
        use std::io::{Read, Write};
        const PNG: &[u8] = &[
            0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
            0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00,
            0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78,
            0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99,
            0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
        ];
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    PNG.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(PNG);
            }
        });
        TileServer { port, served }
    }
}

/// Grid 1's boundary, around the building.
const GRID_1: &str = r#"{"type":"Feature","properties":{"name":"Grid 1"},"geometry":{"type":"Polygon","coordinates":[[[120.150,30.270],[120.160,30.270],[120.160,30.278],[120.150,30.278],[120.150,30.270]]]}}"#;

fn finished_visit(d: &Device, resident: &str, purpose: &str) -> String {
    let v = d.store.start_visit("g1", purpose, None).unwrap();
    d.store.add_visited(&v, resident).unwrap();
    d.store
        .answer_checklist(&v, "smoke alarm works", "yes")
        .unwrap();
    d.store.finish_visit(&v, Some("All well.")).unwrap();
    v
}

#[test]
fn a_supervisor_reviews_visits_in_the_console() {
    let Some(driver_path) = chromedriver() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A tile server on loopback for the map (the relay process inherits the variable).
    let tiles = TileServer::start();
    std::env::set_var(
        "GRIDWORK_MAP_TILES",
        format!("http://127.0.0.1:{}/{{z}}/{{x}}/{{y}}.png", tiles.port),
    );
    let relay = Relay::start(&dir.path().join("relay"));
    relay.add_areas();
    relay.add_weekly_alone_schedule();
    relay.add_area_tree(&OTHER_DISTRICT);
    let wang = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let li = Device::new(&relay, dir.path(), "li", Role::Worker, "g1");
    relay.add_device("zhou", Role::Supervisor, "c1", "zhou-ipad");
    relay.add_device("qian", Role::Supervisor, "c9", "qian-ipad");
    relay.add_device("op", Role::Operator, "d1", "op-laptop");
    for user in ["zhou", "qian", "wang", "op"] {
        relay.set_web_password(user, PASSWORD);
    }
    wang.sync();
    let li_hua = wang
        .store
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "李华")
                .tag("lives alone"),
        )
        .unwrap();
    let first = finished_visit(&wang, &li_hua, "Weekly check on 李华");
    let second = finished_visit(&wang, &li_hua, "Follow-up after the fall");
    wang.sync();

    let driver = start_driver(&driver_path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(browser(driver.1));
    let base = relay.url();

    rt.block_on(async {
        // The login page, in Chinese for the screenshot, then English for the checks.
        c.goto(&format!("{base}/console/login?lang=zh"))
            .await
            .unwrap();
        assert!(body(&c).await.contains("登录网格工作台"));
        shot(&c, "console-login").await;

        let page = sign_in(&c, &base, "zhou", PASSWORD).await;
        assert!(page.contains("2 finished visits wait"), "{page}");
        assert!(page.contains("Weekly check on 李华") && page.contains("李华"));
        assert!(c
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/reviews"));
        shot(&c, "console-reviews").await;

        // Approve the first.
        click(&c, &format!("#visit-{first} button.approve")).await;
        let page = body(&c).await;
        assert!(page.contains("Visit approved"), "{page}");
        // Returning without a comment is refused, with why; with one it goes through.
        click(&c, &format!("#visit-{second} button.return")).await;
        let page = body(&c).await;
        assert!(page.contains("returning needs a comment"), "{page}");
        type_into(
            &c,
            &format!("#visit-{second} input[name=comment]"),
            "Add a photo of the handrail.",
        )
        .await;
        click(&c, &format!("#visit-{second} button.return")).await;
        let page = body(&c).await;
        assert!(page.contains("Visit returned"), "{page}");
        assert!(page.contains("Nothing to review"), "{page}");
    });

    // The worker's phone sees both reviews after its next sync. Meanwhile wang and li, both offline,
    // changed 李华's phone: a conflict for the supervisor to settle in the console.
    li.sync();
    wang.store
        .update(&li_hua, Update::new().set("phone", "13911110000"))
        .unwrap();
    li.store
        .update(&li_hua, Update::new().set("phone", "13922220000"))
        .unwrap();
    li.sync();
    wang.sync();
    let approved = wang.store.get(&first).unwrap();
    assert_eq!(approved.field("review_state"), Some("approved"));
    assert_eq!(approved.field("reviewer"), Some("zhou"));
    let returned = wang.store.get(&second).unwrap();
    assert_eq!(returned.field("review_state"), Some("returned"));
    assert_eq!(
        returned.field("review_comment"),
        Some("Add a photo of the handrail.")
    );
    // One more visit waits in c1 for the next checks; and wang reports a hazard and hands it up to
    // the community (escalates it).
    finished_visit(&wang, &li_hua, "Evening check");
    let hazard = wang
        .store
        .create(
            NewRecord::new(Kind::Event, "g1")
                .field("title", "楼道堆放杂物")
                .field("category", "hazard_report")
                .field("due", "2020-01-01T00:00:00Z"),
        )
        .unwrap();
    wang.store
        .transition(
            &hazard,
            EventAction::Escalate,
            Some("Needs the community's help."),
        )
        .unwrap();
    // For the map: a building with coordinates, a broken street lamp reported there, a visit on site.
    let building = wang
        .store
        .create(
            NewRecord::new(Kind::Place, "g1")
                .field("name", "5号楼")
                .field("lat", "30.2741")
                .field("lon", "120.1551"),
        )
        .unwrap();
    let lamp = wang
        .store
        .create(
            NewRecord::new(Kind::Event, "g1")
                .field("title", "路灯损坏")
                .field("category", "incident"),
        )
        .unwrap();
    wang.store
        .link(&lamp, LinkType::LocatedAt, &building)
        .unwrap();
    let on_site = wang
        .store
        .start_visit(
            "g1",
            "Lamp check",
            Some(GeoPoint {
                lat: 30.2745,
                lon: 120.1556,
                accuracy: 5.0,
            }),
        )
        .unwrap();
    wang.store.finish_visit(&on_site, None).unwrap();
    wang.sync();

    rt.block_on(async {
        // The events board: the escalated, overdue hazard on top; the supervisor takes it through
        // assign, start, resolve, verify and close.
        c.goto(&format!("{base}/console/events")).await.unwrap();
        let page = body(&c).await;
        assert!(
            page.contains("楼道堆放杂物") && page.contains("escalated to you"),
            "{page}"
        );
        assert!(page.contains("overdue"), "{page}");
        shot(&c, "console-events").await;
        // By area: grid 2 has none; the export link exports what is shown.
        c.goto(&format!("{base}/console/events?state=all&area=g2"))
            .await
            .unwrap();
        assert!(body(&c).await.contains("No events here"));
        let link = c
            .find(Locator::Css(".exports a"))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .unwrap();
        assert!(
            link.contains("kind=event") && link.contains("area=g2"),
            "{link}"
        );
        c.goto(&format!("{base}/console/events")).await.unwrap();
        click(&c, &format!("#event-{hazard} a")).await;
        let page = body(&c).await;
        assert!(
            page.contains("Needs the community's help."),
            "the timeline: {page}"
        );
        // Closing a reported event is not a step the lifecycle has: refused, with why.
        assert!(c.find(Locator::Css("button.action-close")).await.is_err());
        type_into(&c, "input[name=assignee]", "zhou").await;
        click(&c, "button.action-assign").await;
        for step in ["start", "resolve", "verify", "close"] {
            click(&c, &format!("button.action-{step}")).await;
            let page = body(&c).await;
            assert!(page.contains("Done."), "{step}: {page}");
        }
        assert_eq!(
            c.find(Locator::Css("#status"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            "closed"
        );
        shot(&c, "console-event").await;
    });
    // Two registrations of one resident, for the duplicates page.
    let person = |name: &str, phone: &str| {
        wang.store
            .create(
                NewRecord::new(Kind::Person, "g1")
                    .field("name", name)
                    .field("birth_date", "1952-08-08")
                    .field("phone", phone)
                    .field("id_number", "11010519520808001X"),
            )
            .unwrap()
    };
    let zhang = person("张伟", "13800000001");
    let zhang_again = person("Zhang Wei", "13800000002");
    wang.sync();
    let (a, b) = if zhang < zhang_again {
        (zhang.clone(), zhang_again.clone())
    } else {
        (zhang_again.clone(), zhang.clone())
    };
    let keep = if a == zhang { "keep_a" } else { "keep_b" };
    rt.block_on(async {
        c.goto(&format!("{base}/console/duplicates")).await.unwrap();
        let page = body(&c).await;
        assert!(page.contains("same ID number"), "{page}");
        assert!(
            !page.contains("11010519520808001X"),
            "ID numbers masked: {page}"
        );
        shot(&c, "console-duplicates").await;
        click(&c, &format!("#pair-{a}-{b} button[value={keep}]")).await;
        // The kept record's page: what differed waits as conflicts; resolve the name.
        let page = body(&c).await;
        assert!(page.contains("Conflicts to resolve"), "{page}");
        assert!(page.contains(&format!("merged {zhang_again}")), "{page}");
        shot(&c, "console-record").await;
        click(&c, "#conflict-name button[value='张伟']").await;
        let page = body(&c).await;
        assert!(page.contains("Resolved"), "{page}");
        assert!(
            page.contains("absorb"),
            "the history shows the merge: {page}"
        );
        // Follow-ups and statistics: 李华 was visited, nobody else living alone is due; the merged
        // pair is no longer an open duplicate.
        c.goto(&format!("{base}/console/stats")).await.unwrap();
        let page = body(&c).await;
        assert!(
            page.contains("Living alone: weekly visit") && page.contains("1/1 (100%)"),
            "{page}"
        );
        assert_eq!(
            c.find(Locator::Css("#duplicates-open"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            "0"
        );
        shot(&c, "console-stats").await;
        c.goto(&format!("{base}/console/stats?area=g9"))
            .await
            .unwrap();
        assert!(body(&c).await.contains("no such record in your area"));
        // An export, downloaded by the browser and read back.
        c.goto(&format!("{base}/console/exports")).await.unwrap();
        pick(&c, "main form button[type=submit]").await;
    });
    let file = downloads().join("gridwork-person.csv");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !file.exists() {
        assert!(Instant::now() < deadline, "the export was not downloaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with("\u{feff}".as_bytes()));
    let mut csv = csv::Reader::from_reader(&bytes[3..]);
    let names: Vec<String> = csv.records().map(|r| r.unwrap()[2].to_owned()).collect();
    assert!(
        names.contains(&"张伟".to_owned()) && names.contains(&"李华".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"Zhang Wei".to_owned()),
        "the merged-away record is gone: {names:?}"
    );
    assert!(
        !String::from_utf8_lossy(&bytes).contains("11010519520808001X"),
        "masked"
    );
    std::fs::remove_dir_all(downloads()).unwrap();

    wang.sync();
    assert!(wang.store.get(&zhang_again).unwrap().deleted);
    assert_eq!(wang.store.get(&zhang).unwrap().field("name"), Some("张伟"));
    let closed = wang.store.get(&hazard).unwrap();
    assert_eq!(closed.field("status"), Some("closed"));
    assert!(closed
        .timeline
        .iter()
        .any(|t| t.action == "close" && t.by == "zhou"));

    rt.block_on(async {
        // The conflict on 李华's phone, both values with who entered them; settled on one.
        c.goto(&format!("{base}/console/records/{li_hua}")).await.unwrap();
        let page = body(&c).await;
        assert!(page.contains("13911110000 (wang)") && page.contains("13922220000 (li)"), "{page}");
        click(&c, "#conflict-phone button[value='13922220000']").await;
        assert!(body(&c).await.contains("Resolved"));
        // On an iPad (820 x 1180, portrait) the pages fit the screen: nothing scrolls sideways.
        c.set_window_size(820, 1180).await.unwrap();
        for path in ["/console/reviews", "/console/events", "/console/stats", "/console/duplicates"] {
            c.goto(&format!("{base}{path}")).await.unwrap();
            let fits = c
                .execute(
                    "return document.documentElement.scrollWidth <= window.innerWidth;",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(fits, serde_json::Value::Bool(true), "{path} is wider than an iPad");
        }
        shot(&c, "console-ipad").await;
        c.set_window_size(1280, 900).await.unwrap();
        // A forged CSRF token: refused, and the session's page still works.
        c.execute(
            "document.querySelector('form[action=\"/console/logout\"] input[name=csrf]').value = 'forged';",
            vec![],
        )
        .await
        .unwrap();
        sign_out(&c).await;
        let page = body(&c).await;
        assert!(page.contains("out of date or did not come from this console"), "{page}");
        c.goto(&format!("{base}/console/reviews")).await.unwrap();
        assert!(body(&c).await.contains("Evening check"));
        sign_out(&c).await;
        assert!(c.current_url().await.unwrap().path().ends_with("/console/login"));
        // After signing out, the review page sends to the login page.
        c.goto(&format!("{base}/console/reviews")).await.unwrap();
        assert!(c.current_url().await.unwrap().path().ends_with("/console/login"));

        // A grid worker is refused.
        let page = sign_in(&c, &base, "wang", PASSWORD).await;
        assert!(page.contains("for supervisors and operators"), "{page}");

        // Another community's supervisor sees nothing of this one.
        let page = sign_in(&c, &base, "qian", PASSWORD).await;
        assert!(page.contains("Nothing to review"), "{page}");
        assert!(!page.contains("Evening check") && !page.contains("李华"), "{page}");
        for path in [
            format!("/console/records/{li_hua}"),
            format!("/console/events/{hazard}"),
        ] {
            c.goto(&format!("{base}{path}")).await.unwrap();
            assert!(body(&c).await.contains("no such record in your area"), "{path}");
        }
        c.goto(&format!("{base}/console/duplicates")).await.unwrap();
        assert!(body(&c).await.contains("No possible duplicates"));
        sign_out(&c).await;

        // The operator's page: supervisors are refused it; an operator adds a grid and a worker and
        // issues the worker's phone a token, shown once as text and as a QR code.
        let page = sign_in(&c, &base, "zhou", PASSWORD).await;
        assert!(!page.contains("Operator"), "no operator link for a supervisor: {page}");
        c.goto(&format!("{base}/console/admin")).await.unwrap();
        assert!(body(&c).await.contains("This page is for operators"));
        c.goto(&format!("{base}/console/reviews")).await.unwrap();
        sign_out(&c).await;
        sign_in(&c, &base, "op", PASSWORD).await;
        click(&c, "header nav a[href='/console/admin']").await;
        let form = "form[action='/console/admin/areas']";
        for (name, value) in [("id", "g5"), ("name", "Grid 5")] {
            type_into(&c, &format!("{form} input[name={name}]"), value).await;
        }
        pick(&c, &format!("{form} select[name=parent] option[value=c1]")).await;
        click(&c, &format!("{form} button")).await;
        let page = body(&c).await;
        assert!(page.contains("Saved.") && page.contains("d1/s1/c1/g5/"), "{page}");
        // Grid 1's boundary, then the map: the boundary, the building, the visit, the open lamp.
        let form = "form[action='/console/admin/shapes']";
        pick(&c, &format!("{form} select[name=area] option[value=g1]")).await;
        type_into(&c, &format!("{form} textarea"), GRID_1).await;
        click(&c, &format!("{form} button")).await;
        assert!(body(&c).await.contains("Saved."));
        click(&c, "header nav a[href='/console/map']").await;
        let count = |css: &'static str| {
            let c = c.clone();
            async move { c.find_all(Locator::Css(css)).await.unwrap().len() }
        };
        assert_eq!(count("#map path.area").await, 1);
        assert_eq!(count("#map circle.place").await, 1);
        assert_eq!(count("#map circle.visit").await, 1, "the visit with coordinates");
        assert_eq!(count("#map rect.event").await, 1, "the open lamp, not the closed hazard");
        assert!(count("#map image.tile").await > 0, "tiles under the map");
        // The browser fetched them: the page's policy allows the tile server's images.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tiles.served.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "no tile was fetched");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shot(&c, "console-map").await;
        c.goto(&format!("{base}/console/map?category=dispute")).await.unwrap();
        assert_eq!(count("#map rect.event").await, 0, "filtered by category");
        c.goto(&format!("{base}/console/map?from=2020-01-01&until=2020-01-02")).await.unwrap();
        assert_eq!(count("#map circle.visit").await, 0, "filtered by period");
        c.goto(&format!("{base}/console/admin")).await.unwrap();
        let form = "form[action='/console/admin/users']";
        for (name, value) in [("id", "chen"), ("name", "Chen Jie")] {
            type_into(&c, &format!("{form} input[name={name}]"), value).await;
        }
        pick(&c, &format!("{form} select[name=area] option[value=g5]")).await;
        click(&c, &format!("{form} button")).await;
        assert!(body(&c).await.contains("Chen Jie"));
        let form = "form[action='/console/admin/devices']";
        pick(&c, &format!("{form} select[name=user] option[value=chen]")).await;
        type_into(&c, &format!("{form} input[name=device]"), "chen-phone").await;
        click(&c, &format!("{form} button")).await;
        let token = c.find(Locator::Css("#token")).await.unwrap().text().await.unwrap();
        assert!(token.starts_with("gw1_"), "{token}");
        assert!(c.find(Locator::Css(".qr svg")).await.is_ok(), "a QR code");
        shot(&c, "console-device-token").await;
        // The token works for the new worker's phone, until the operator revokes it.
        let me = |token: String| {
            let url = format!("{base}/v1/me");
            async move {
                let r = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.json::<serde_json::Value>().await.unwrap_or_default())
            }
        };
        let (status, who) = me(token.clone()).await;
        assert_eq!((status, who["user_id"].as_str()), (200, Some("chen")), "{who}");
        assert_eq!(who["area"], "g5");
        // Chen moves to grid 1: the phone learns it at its next contact.
        c.goto(&format!("{base}/console/admin")).await.unwrap();
        for (select, value) in [("id", "chen"), ("role", "worker"), ("area", "g1")] {
            pick(&c, &format!("#set-user select[name={select}] option[value={value}]")).await;
        }
        click(&c, "#set-user button").await;
        assert!(body(&c).await.contains("Saved."));
        assert_eq!(me(token.clone()).await.1["area"], "g1");
        // A city form and a schedule, defined in the console; a malformed form is refused with why,
        // and nothing of it goes into the address.
        let textarea = "form[action='/console/admin/forms'] textarea";
        type_into(&c, textarea, r#"{"id":"broken""#).await;
        click(&c, "form[action='/console/admin/forms'] button").await;
        assert!(body(&c).await.contains("not a form"));
        assert!(!c.current_url().await.unwrap().as_str().contains("broken"));
        type_into(&c, textarea, r#"{"id":"c1-person","area":"c1","kind":"person","fields":[{"key":"pension","label_zh":"养老金","label_en":"Pension","type":"yes_no"}]}"#).await;
        click(&c, "form[action='/console/admin/forms'] button").await;
        let form = "form[action='/console/admin/schedules']";
        for (name, value) in [("id", "hazards-monthly"), ("name", "Hazards: monthly")] {
            type_into(&c, &format!("{form} input[name={name}]"), value).await;
        }
        pick(&c, &format!("{form} select[name=kind] option[value=object]")).await;
        click(&c, &format!("{form} button")).await;
        let defs = c.find(Locator::Css("#definitions")).await.unwrap().text().await.unwrap();
        assert!(defs.contains("c1-person") && defs.contains("hazards-monthly"), "{defs}");
        click(&c, "#device-chen-phone form button").await;
        assert!(body(&c).await.contains("Device revoked"));
        assert_eq!(me(token).await.0, 401);
        sign_out(&c).await;

        // A password typed into the user box is not kept in the audit trail.
        let page = sign_in(&c, &base, "my-secret-pw-typed-here", PASSWORD).await;
        assert!(page.contains("Wrong user or password"), "{page}");
        // Ten wrong passwords: slowed down before the tenth.
        let mut slowed = None;
        for attempt in 1..=10 {
            let page = sign_in(&c, &base, "zhou", "not-the-password").await;
            if page.contains("Too many failed sign-ins") {
                slowed = Some(attempt);
                break;
            }
            assert!(page.contains("Wrong user or password"), "{page}");
        }
        let slowed = slowed.expect("ten wrong passwords are slowed down");
        assert!(slowed <= 6, "slowed down at attempt {slowed}");
        // Even the right password waits now.
        let page = sign_in(&c, &base, "zhou", PASSWORD).await;
        assert!(page.contains("Too many failed sign-ins"), "{page}");
        c.close().await.unwrap();
    });
    drop(driver);

    // The conflict settled in the console reaches the phones.
    li.sync();
    assert_eq!(
        li.store.get(&li_hua).unwrap().field("phone"),
        Some("13922220000")
    );
    assert!(li
        .store
        .conflicts()
        .unwrap()
        .iter()
        .all(|c| c.record_id != li_hua));

    // The audit trail has every console action, and no value of a record.
    let audit = relay.admin(&["audit", "--limit", "100"]);
    for expected in [
        format!("zhou\tapproved\t{first}\tok"),
        format!("zhou\tclose\t{hazard}\tok"),
        format!("zhou\tmerge\t{zhang}<-{zhang_again}\tok"),
        "zhou\texport\tperson.csv\tok".to_owned(),
        format!("zhou\treturned\t{second}\tok"),
        format!("zhou\treturned\t{second}\tinvalid_value"),
        "zhou\tlogout\t-\tcsrf_refused".to_owned(),
        "wang\tlogin\t-\tforbidden_role".to_owned(),
        "zhou\tlogin\t-\twrong_password".to_owned(),
        "op\tadd_area\tg5\tok".to_owned(),
        "op\tput_form\tc1-person\tok".to_owned(),
        "op\tput_schedule\thazards-monthly\tok".to_owned(),
        "op\tset_boundary\tg1\tok".to_owned(),
        "op\tadd_user\tchen\tok".to_owned(),
        "op\tset_user\tchen\tok".to_owned(),
        "op\tissue_device\tchen-phone\tok".to_owned(),
        "op\trevoke_device\tchen-phone\tok".to_owned(),
    ] {
        assert!(audit.contains(&expected), "{expected:?} in\n{audit}");
    }
    assert!(!audit.contains("handrail") && !audit.contains("李华"));
    assert!(
        audit.contains("(unknown)\tlogin\t-\twrong_password"),
        "{audit}"
    );
    assert!(!audit.contains("my-secret-pw-typed-here"), "{audit}");
}
