//! Harness for end-to-end tests: a real `gridwork-server` process on 127.0.0.1 and devices that are real
//! encrypted stores syncing over real HTTP.
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

/// A relay process with its own data directory. Killed when dropped.
pub struct Relay {
    child: Option<Child>,
    pub data: PathBuf,
    pub port: u16,
}

impl Relay {
    pub fn start(data: &Path) -> Relay {
        let mut relay = Relay {
            child: None,
            data: data.to_owned(),
            port: free_port(),
        };
        relay.spawn();
        relay
    }

    fn spawn(&mut self) {
        let child = Command::new(server_bin())
            .args(["serve", "--data"])
            .arg(&self.data)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .env(RELAY_KEY_ENV, RELAY_KEY)
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

    /// Runs `gridwork-server admin --data DIR <args>` and returns its stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(server_bin())
            .args(["admin", "--data"])
            .arg(&self.data)
            .args(args)
            .env(RELAY_KEY_ENV, RELAY_KEY)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run admin");
        assert!(
            out.status.success(),
            "admin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The area tree d1 > s1 > c1 > {g1, g2}.
    pub fn add_areas(&self) {
        self.admin(&[
            "area",
            "add",
            "d1",
            "--level",
            "district",
            "--name",
            "East District",
        ]);
        self.admin(&[
            "area",
            "add",
            "s1",
            "--parent",
            "d1",
            "--level",
            "street",
            "--name",
            "River Street",
        ]);
        self.admin(&[
            "area",
            "add",
            "c1",
            "--parent",
            "s1",
            "--level",
            "community",
            "--name",
            "Willow",
        ]);
        self.admin(&[
            "area", "add", "g1", "--parent", "c1", "--level", "grid", "--name", "Grid 1",
        ]);
        self.admin(&[
            "area", "add", "g2", "--parent", "c1", "--level", "grid", "--name", "Grid 2",
        ]);
    }

    /// Creates a user (unless it exists) and a device, and returns the device's token.
    pub fn add_device(&self, user: &str, role: Role, area: &str, device: &str) -> String {
        // The user may exist already (a second device of the same user); the relay then refuses the
        // duplicate and the device is added to the existing user.
        let _ = Command::new(server_bin())
            .args(["admin", "--data"])
            .arg(&self.data)
            .env(RELAY_KEY_ENV, RELAY_KEY)
            .args([
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

/// The same area tree on a store that has not synced yet (so it can work offline from the start).
pub fn add_local_areas(store: &Store) {
    store
        .upsert_area("d1", None, AreaLevel::District, "East District")
        .unwrap();
    store
        .upsert_area("s1", Some("d1"), AreaLevel::Street, "River Street")
        .unwrap();
    store
        .upsert_area("c1", Some("s1"), AreaLevel::Community, "Willow")
        .unwrap();
    store
        .upsert_area("g1", Some("c1"), AreaLevel::Grid, "Grid 1")
        .unwrap();
    store
        .upsert_area("g2", Some("c1"), AreaLevel::Grid, "Grid 2")
        .unwrap();
}
