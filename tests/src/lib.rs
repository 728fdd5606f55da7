//! Harness for end-to-end tests: a real `gridwork-server` process on 127.0.0.1 and devices that are real
//! encrypted stores syncing over real HTTP.
pub mod forge;

use gridwork_core::{
    AreaLevel, CancelToken, Identity, IdentityClaims, NoProgress, Role, Store, StoreKey,
    StoreOptions, SyncConfig, SyncReport,
};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The relay binary: `$GRIDWORK_SERVER_BIN`, or the one cargo built next to this test binary
/// (built on demand when missing).
pub fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GRIDWORK_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("gridwork-server");
    if !bin.exists() {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-p", "gridwork-server", "--bin", "gridwork-server"]);
        // Benchmarks run from target/release: measure a release relay.
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo build");
        assert!(status.success(), "building gridwork-server failed");
    }
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The key of the test relays' encrypted stores ("gridwork" four times: a test key, never a real one).
pub const RELAY_KEY: &str = "67726964776f726b67726964776f726b67726964776f726b67726964776f726b";
const RELAY_KEY_ENV: &str = "GRIDWORK_RELAY_KEY";
/// The relay reads its PostgreSQL URL from here as well as from `--database` (the environment keeps
/// the password out of the process list).
const DATABASE_ENV: &str = "GRIDWORK_DATABASE_URL";

/// Where a test relay keeps its data: the embedded SQLite store (encrypted with [`RELAY_KEY`]) or
/// PostgreSQL (a fresh schema of the test server per relay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    /// The test server's URL (`GRIDWORK_TEST_POSTGRES_URL`).
    Postgres(String),
}

impl Backend {
    /// PostgreSQL, when `GRIDWORK_TEST_POSTGRES_URL` names the test server. Without it the PostgreSQL
    /// tests are skipped, except in CI (`CI` set, as `.ci/run` does), where a missing database is a
    /// failure: a suite that passes without touching PostgreSQL proves nothing.
    pub fn postgres() -> Option<Backend> {
        let url = std::env::var("GRIDWORK_TEST_POSTGRES_URL")
            .ok()
            .filter(|s| !s.is_empty());
        if url.is_none() && std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!(
                "CI is set but GRIDWORK_TEST_POSTGRES_URL is not: the PostgreSQL tests must run in \
                 CI (scripts/test-all.sh starts a server)"
            );
        }
        url.map(Backend::Postgres)
    }
}

/// The storage of one relay process.
enum Storage {
    Sqlite {
        data: PathBuf,
    },
    /// `url` selects `schema` (through the connection's search_path); `server` is the test server's URL.
    Postgres {
        url: String,
        server: String,
        schema: String,
        /// Whether this process's relay drops the schema when it goes (the first of several relays
        /// sharing it does).
        owner: bool,
    },
}

impl Storage {
    /// The storage options of `gridwork-server serve` and `admin`.
    fn apply(&self, cmd: &mut Command) {
        match self {
            Storage::Sqlite { data } => {
                cmd.arg("--data").arg(data).env(RELAY_KEY_ENV, RELAY_KEY);
            }
            Storage::Postgres { url, .. } => {
                cmd.env(DATABASE_ENV, url);
            }
        }
    }
}

/// Runs `f` with a connection to the test PostgreSQL server (on a small runtime of its own: the tests
/// are synchronous).
fn with_pg<T>(
    server: &str,
    f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(server, tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL server");
        let conn = tokio::spawn(conn);
        let out = f(&client).await.expect("PostgreSQL statement");
        drop(client);
        let _ = conn.await;
        out
    })
}

/// A relay process with its own storage. Killed when dropped (its PostgreSQL schema is dropped too).
pub struct Relay {
    child: Option<Child>,
    storage: Storage,
    pub port: u16,
    /// On PostgreSQL: this process's own web console directory (each relay of a city has its own).
    console: Option<tempfile::TempDir>,
}

impl Relay {
    /// A relay on the embedded SQLite store in `data`.
    pub fn start(data: &Path) -> Relay {
        Relay::launch(Storage::Sqlite {
            data: data.to_owned(),
        })
    }

    /// A relay on `backend`: SQLite in `dir`, or a fresh PostgreSQL schema.
    pub fn start_on(backend: &Backend, dir: &Path) -> Relay {
        match backend {
            Backend::Sqlite => Relay::start(dir),
            Backend::Postgres(server) => {
                let schema = format!("gw_hostile_{:016x}", rand::random::<u64>());
                with_pg(server, async |c| {
                    c.batch_execute(&format!("CREATE SCHEMA {schema}")).await
                });
                let sep = if server.contains('?') { '&' } else { '?' };
                Relay::launch(Storage::Postgres {
                    url: format!("{server}{sep}options=-c%20search_path%3D{schema}"),
                    server: server.clone(),
                    schema,
                    owner: true,
                })
            }
        }
    }

    /// Another relay process on the same PostgreSQL database (a city's deployment: several relays
    /// behind a load balancer). The first relay keeps owning the schema.
    pub fn another_process(&self) -> Relay {
        match &self.storage {
            Storage::Postgres {
                url,
                server,
                schema,
                ..
            } => Relay::launch(Storage::Postgres {
                url: url.clone(),
                server: server.clone(),
                schema: schema.clone(),
                owner: false,
            }),
            Storage::Sqlite { .. } => panic!("relays share a database only on PostgreSQL"),
        }
    }

    fn launch(storage: Storage) -> Relay {
        let console = match storage {
            Storage::Postgres { .. } => Some(tempfile::tempdir().expect("console dir")),
            Storage::Sqlite { .. } => None,
        };
        let mut relay = Relay {
            child: None,
            storage,
            port: free_port(),
            console,
        };
        relay.spawn();
        relay
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(server_bin());
        cmd.arg("serve");
        self.storage.apply(&mut cmd);
        if let Some(console) = &self.console {
            cmd.env("GRIDWORK_CONSOLE_DIR", console.path())
                .env("GRIDWORK_CONSOLE_KEY", RELAY_KEY);
        }
        let child = cmd
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start gridwork-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let health = format!("{}/v1/health", self.url());
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::blocking::get(&health) {
                if r.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("relay did not become healthy on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The relay process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("relay running").id()
    }

    /// The relay process's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read the relay's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib * 1024
    }

    /// SIGKILL: no shutdown, no flush; what was acknowledged must survive.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `gridwork-server admin <storage> <args>`.
    pub fn admin_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(server_bin());
        cmd.arg("admin");
        self.storage.apply(&mut cmd);
        cmd.args(args).env("RUST_LOG", "warn");
        cmd
    }

    /// Runs `gridwork-server admin <args>` on this relay's storage and returns its stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = self.admin_command(args).output().expect("run admin");
        assert!(
            out.status.success(),
            "admin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The follow-up schedule several tests share: people tagged "lives alone" in c1 (and below) are
    /// visited weekly.
    pub fn add_weekly_alone_schedule(&self) {
        self.admin(&[
            "schedule",
            "add",
            "alone",
            "--area",
            "c1",
            "--kind",
            "person",
            "--tag",
            "lives alone",
            "--every",
            "weekly",
            "--name",
            "Living alone: weekly visit",
        ]);
    }

    /// `GET <path>` on the relay as the device holding `token`: the status and the JSON answer.
    pub fn get_json(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        let r = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.url()))
            .bearer_auth(token)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// Sets a user's web console password (`admin web-account set USER --password-file`).
    pub fn set_web_password(&self, user: &str, password: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), password).unwrap();
        self.admin(&[
            "web-account",
            "set",
            user,
            "--password-file",
            file.path().to_str().unwrap(),
        ]);
    }

    /// Defines a city form (`gridwork-server admin form add --file -`, the JSON on standard input).
    pub fn add_form(&self, form: &serde_json::Value) {
        use std::io::Write;
        let mut child = self
            .admin_command(&["form", "add", "--file", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run admin");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(form.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "form add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds `areas` (parents first).
    pub fn add_area_tree(&self, areas: &[AreaSpec]) {
        for (id, parent, level, name) in areas {
            let mut args = vec!["area", "add", id, "--level", level.as_str(), "--name", name];
            if let Some(p) = parent {
                args.extend(["--parent", p]);
            }
            self.admin(&args);
        }
    }

    /// The area tree d1 > s1 > c1 > {g1, g2} ([`AREAS`]).
    pub fn add_areas(&self) {
        self.add_area_tree(&AREAS);
    }

    /// Creates a user (unless it exists) and a device, and returns the device's token.
    pub fn add_device(&self, user: &str, role: Role, area: &str, device: &str) -> String {
        // The user may exist already (a second device of the same user); the relay then refuses the
        // duplicate and the device is added to the existing user.
        let _ = self
            .admin_command(&[
                "user",
                "add",
                user,
                "--name",
                user,
                "--role",
                role.as_str(),
                "--area",
                area,
            ])
            .output()
            .expect("run admin");
        self.admin(&["device", "add", "--user", user, "--id", device])
            .trim()
            .to_owned()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
        if let Storage::Postgres {
            server,
            schema,
            owner: true,
            ..
        } = &self.storage
        {
            with_pg(server, async |c| {
                c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                    .await
            });
        }
    }
}

/// A device: an encrypted store plus its relay credentials.
pub struct Device {
    pub store: Store,
    pub config: SyncConfig,
    pub dir: PathBuf,
}

/// The store key of every test device.
pub const KEY: [u8; 32] = [9u8; 32];

fn test_config(relay: &Relay, token: String) -> SyncConfig {
    let mut config = SyncConfig::new(relay.url(), token);
    config.max_retries = 2;
    config.backoff = Duration::from_millis(50);
    config
}

impl Device {
    /// A device of `user` (created on the relay with `role` and `area` unless it exists), whose store
    /// was made offline with that same identity and device id `<user>-dev`.
    pub fn new(relay: &Relay, dir: &Path, user: &str, role: Role, area: &str) -> Device {
        let device_id = format!("{user}-dev");
        let token = relay.add_device(user, role, area, &device_id);
        Device::offline(
            relay,
            dir,
            token,
            Identity {
                user_id: user.into(),
                device_id,
                role,
                area: area.into(),
            },
        )
    }

    /// A store made offline, believing `identity`, holding `token` for its first sync.
    pub fn offline(relay: &Relay, dir: &Path, token: String, identity: Identity) -> Device {
        let path = dir.join(format!(
            "{}-{}.db",
            identity.device_id,
            rand::random::<u32>()
        ));
        let store = Store::open(StoreOptions::new(path, StoreKey::Raw(KEY)).identity(identity))
            .expect("open store");
        Device {
            store,
            config: test_config(relay, token),
            dir: dir.to_owned(),
        }
    }

    /// A store made from the relay's answer for `token` (`gridwork init --server --token`).
    pub fn from_relay(
        relay: &Relay,
        dir: &Path,
        token: String,
        claims: &IdentityClaims,
    ) -> gridwork_core::Result<Device> {
        let config = test_config(relay, token);
        let path = dir.join(format!("from-relay-{}.db", rand::random::<u32>()));
        let store =
            Store::create_from_relay(StoreOptions::new(path, StoreKey::Raw(KEY)), &config, claims)?;
        Ok(Device {
            store,
            config,
            dir: dir.to_owned(),
        })
    }

    pub fn sync(&self) -> SyncReport {
        self.try_sync().expect("sync")
    }

    pub fn try_sync(&self) -> gridwork_core::Result<SyncReport> {
        self.store
            .sync(&self.config, &NoProgress, &CancelToken::new())
    }
}

/// An area as the relay and a store are given it: id, parent, level, display name.
pub type AreaSpec = (&'static str, Option<&'static str>, AreaLevel, &'static str);

/// The area tree of every test: d1 > s1 > c1 > {g1, g2}.
pub const AREAS: [AreaSpec; 5] = [
    ("d1", None, AreaLevel::District, "East District"),
    ("s1", Some("d1"), AreaLevel::Street, "River Street"),
    ("c1", Some("s1"), AreaLevel::Community, "Willow"),
    ("g1", Some("c1"), AreaLevel::Grid, "Grid 1"),
    ("g2", Some("c1"), AreaLevel::Grid, "Grid 2"),
];

/// Another district, d2 > s9 > c9 > g9, for moves and creations into an area outside everyone's scope.
pub const OTHER_DISTRICT: [AreaSpec; 4] = [
    ("d2", None, AreaLevel::District, "West District"),
    ("s9", Some("d2"), AreaLevel::Street, "Hill Street"),
    ("c9", Some("s9"), AreaLevel::Community, "Oak"),
    ("g9", Some("c9"), AreaLevel::Grid, "Grid 9"),
];

/// `areas` on a store that has not synced yet (so it can work offline from the start).
pub fn add_local_area_tree(store: &Store, areas: &[AreaSpec]) {
    for (id, parent, level, name) in areas {
        store.upsert_area(id, *parent, *level, name).unwrap();
    }
}

/// The same area tree ([`AREAS`]) on a store that has not synced yet.
pub fn add_local_areas(store: &Store) {
    add_local_area_tree(store, &AREAS);
}
