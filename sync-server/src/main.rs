//! `gridwork-server`: run the relay, or administer areas, users and devices.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use gridwork_server::config::KEY_ENV;
use gridwork_server::{
    start, Admin, AreaLevel, Encryption, Error, Every, Form, Kind, Limits, RelayKey, Role,
    Schedule, ServerConfig, StorageConfig, UserChanges,
};

#[derive(Parser)]
#[command(
    name = "gridwork-server",
    version,
    about = "Gridwork relay: sync server for offline-first field devices"
)]
struct Cli {
    /// Log as JSON lines instead of text (filter with RUST_LOG; default `info` for serve, `warn` for admin).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
#[group(skip)]
struct StorageArgs {
    /// Data directory of the embedded SQLite store (created if missing, mode 0700; its files 0600).
    #[arg(long, value_name = "DIR", conflicts_with = "database", global = true)]
    data: Option<PathBuf>,
    /// PostgreSQL URL, e.g. postgres://user:pass@host:5432/db?sslmode=verify-full. Prefer the
    /// environment variable to keep the password out of the process list. TLS: sslmode=require
    /// (encrypted, not verified), verify-ca or verify-full (verified against sslrootcert=FILE, or the
    /// Mozilla roots). At-rest encryption of PostgreSQL is the database's own.
    #[arg(
        long,
        value_name = "URL",
        env = "GRIDWORK_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    database: Option<String>,
    /// Key of the embedded store (SQLCipher): a file holding 64 hex characters, made by
    /// `gridwork-server admin keygen --out FILE`. Without it the key is read from GRIDWORK_RELAY_KEY.
    #[arg(long, value_name = "PATH", global = true)]
    key_file: Option<PathBuf>,
    /// DEVELOPMENT ONLY: keep the embedded store unencrypted, residents' data in plain text on disk.
    /// Never use it with real data.
    #[arg(long, conflicts_with = "key_file", global = true)]
    insecure_no_encryption: bool,
}

impl StorageArgs {
    fn config(&self) -> gridwork_server::Result<StorageConfig> {
        match (&self.data, &self.database) {
            (Some(d), _) => Ok(StorageConfig::Sqlite {
                data_dir: d.clone(),
                encryption: self.encryption()?,
            }),
            (None, Some(u)) => {
                if self.key_file.is_some() || self.insecure_no_encryption {
                    return Err(Error::Invalid(
                        "--key-file and --insecure-no-encryption apply to the embedded store \
                         (--data) only"
                            .into(),
                    ));
                }
                Ok(StorageConfig::Postgres { url: u.clone() })
            }
            (None, None) => Err(Error::Invalid(
                "give --data DIR (embedded SQLite) or --database URL (PostgreSQL)".into(),
            )),
        }
    }

    /// The key of the embedded store: `--key-file`, else GRIDWORK_RELAY_KEY; no key is an error
    /// unless `--insecure-no-encryption` says so.
    fn encryption(&self) -> gridwork_server::Result<Encryption> {
        if self.insecure_no_encryption {
            if RelayKey::from_env()?.is_some() {
                return Err(Error::Key(format!(
                    "--insecure-no-encryption and {KEY_ENV} are both given: choose one"
                )));
            }
            tracing::warn!(
                "the relay database is NOT encrypted (--insecure-no-encryption): development only"
            );
            return Ok(Encryption::Insecure);
        }
        if let Some(f) = &self.key_file {
            return Ok(Encryption::Key(RelayKey::from_file(f)?));
        }
        match RelayKey::from_env()? {
            Some(k) => Ok(Encryption::Key(k)),
            None => Err(Error::Key(format!(
                "the embedded store is encrypted: give its key with --key-file FILE or {KEY_ENV} \
                 (make one with `gridwork-server admin keygen --out FILE`); \
                 --insecure-no-encryption is for development only"
            ))),
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay until SIGINT/SIGTERM.
    Serve {
        #[command(flatten)]
        storage: StorageArgs,
        /// Address to listen on (port 0 picks a free port; the chosen address is logged).
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: SocketAddr,
        /// Requests each device token may make per second (a token bucket that refills at this rate).
        #[arg(long, value_name = "N", default_value_t = Limits::default().rate_per_sec)]
        rate_per_sec: f64,
        /// Requests a device token may make at once before the rate applies (the bucket's size).
        #[arg(long, value_name = "N", default_value_t = Limits::default().rate_burst)]
        rate_burst: f64,
        /// Failed authentications each client address may make per second before it gets 429 (a
        /// token bucket, as for devices; behind a proxy every client shares the proxy's address).
        #[arg(long, value_name = "N", default_value_t = Limits::default().auth_fail_per_sec)]
        auth_fail_per_sec: f64,
        /// Failed authentications a client address may make at once before that rate applies.
        #[arg(long, value_name = "N", default_value_t = Limits::default().auth_fail_burst)]
        auth_fail_burst: f64,
        /// Threads a large batch of pushes is judged on (default: the machine's cores, at most 4;
        /// 1 judges every change on the writer itself).
        #[arg(long, value_name = "N", default_value_t = Limits::default().plan_threads)]
        plan_threads: usize,
        /// Fewest queued changes the push writer judges while its last transaction commits (0:
        /// every batch; default: 256 on SQLite, none on PostgreSQL, where each batch is judged
        /// before the lock the relays share).
        #[arg(long, value_name = "N", env = "GRIDWORK_PIPELINE_MIN_CHANGES")]
        pipeline_min_changes: Option<usize>,
        /// Where the web console keeps its users' console stores (default with --data: DATA/console).
        /// With PostgreSQL the console needs this and a key (--console-key-file or
        /// GRIDWORK_CONSOLE_KEY, 64 hex characters).
        #[arg(long, value_name = "DIR", env = "GRIDWORK_CONSOLE_DIR")]
        console_dir: Option<PathBuf>,
        /// The key the console derives its stores' keys and its devices' tokens from (default with
        /// --data: the relay key).
        #[arg(long, value_name = "FILE")]
        console_key_file: Option<PathBuf>,
        /// Serve no web console.
        #[arg(long)]
        no_console: bool,
        /// Mark console session cookies Secure: the relay is reached over HTTPS (behind a proxy).
        #[arg(long)]
        secure_cookies: bool,
        /// A map tile server for the console's map, e.g. https://tile.example/{z}/{x}/{y}.png (none:
        /// boundaries and points without tiles).
        #[arg(long, value_name = "URL", env = "GRIDWORK_MAP_TILES")]
        map_tiles: Option<String>,
    },
    /// Manage areas, users and devices (works while a relay is running), convert a plaintext store
    /// (`encrypt`), make a key (`keygen`).
    Admin {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(subcommand)]
        what: AdminCmd,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Areas: the district > street > community > grid tree.
    #[command(subcommand)]
    Area(AreaCmd),
    /// Users: a person with a role and one area.
    #[command(subcommand)]
    User(UserCmd),
    /// Devices: a phone or tablet of a user, holding one bearer token.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Follow-up schedules: which records of an area's subtree must be visited how often.
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// City forms: the attributes records of a kind carry in an area's subtree.
    #[command(subcommand)]
    Form(FormCmd),
    /// Web console accounts: a supervisor's or operator's password for /console.
    #[command(subcommand)]
    WebAccount(WebAccountCmd),
    /// The web console's audit trail: who did what, on which record, how it ended (newest first).
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Encrypt an existing plaintext SQLite store in place with the key (--data and --key-file or
    /// GRIDWORK_RELAY_KEY). Stop the relay first. The plaintext file and its WAL are removed.
    Encrypt,
    /// Write a new random key for the embedded store to FILE (mode 0600; never overwrites). Keep a
    /// copy somewhere safe: without the key the relay's data cannot be read.
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum AreaCmd {
    /// Create an area. Example: area add g1 --parent c1 --level grid --name "Grid 1"
    Add {
        /// Area id: 1-64 of [A-Za-z0-9_-].
        id: String,
        /// Parent area id (omit for a district).
        #[arg(long)]
        parent: Option<String>,
        /// district | street | community | grid (must be below the parent's level).
        #[arg(long)]
        level: AreaLevel,
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// List all areas with their paths.
    List,
    /// Rename an area.
    Rename {
        id: String,
        /// New display name.
        #[arg(long)]
        name: String,
    },
    /// Move an area and everything in it under another parent (district > street > community >
    /// grid). Devices of users in the moved subtree bootstrap again at their next sync.
    Move {
        id: String,
        /// The new parent area id.
        #[arg(long)]
        parent: String,
    },
    /// Remove an area that holds no child area, no user and no record.
    Remove { id: String },
}

#[derive(Subcommand)]
enum ScheduleCmd {
    /// Define a schedule, or replace the one with the same id. Example:
    /// schedule add alone-weekly --area c1 --kind person --tag "lives alone" --every weekly
    /// --name "People living alone: a visit a week"
    Add {
        /// Schedule id: 1-64 of [a-z0-9_-].
        id: String,
        /// The area whose subtree it covers.
        #[arg(long)]
        area: String,
        /// Kind of record followed up: person | place | object | organisation | event.
        #[arg(long)]
        kind: String,
        /// Only records with this tag (all records of the kind without it).
        #[arg(long)]
        tag: Option<String>,
        /// Events only: closed events of this category are due one re-check visit `--every` after
        /// closing (incident | dispute | hazard_report | service_request).
        #[arg(long)]
        category: Option<String>,
        /// How often: weekly | monthly | quarterly | yearly | <n>d | <n>w | <n>m.
        #[arg(long)]
        every: String,
        /// Display name, shown with what is due.
        #[arg(long)]
        name: String,
    },
    /// List the schedules.
    List,
    /// Remove a schedule.
    Remove { id: String },
}

#[derive(Subcommand)]
enum WebAccountCmd {
    /// Set a user's console password: read from FILE, or from standard input (one line). At least 10
    /// characters; stored as an argon2id hash.
    Set {
        user: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Remove a user's web account and end their console sessions.
    Remove { user: String },
}

#[derive(Subcommand)]
enum FormCmd {
    /// Define a form from a JSON file (`-`: standard input), or replace the one with the same id.
    /// A form: {"id":"elderly","area":"c1","kind":"person","fields":[{"key":"pension","label_zh":"养老金",
    /// "label_en":"Pension","type":"yes_no","required":true}, ...]}; types: text, number, date,
    /// choice and choices (with "options"), yes_no, phone, id_number; optional help_zh, help_en.
    Add {
        /// The form as JSON.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// List the forms (id, area, kind, field keys).
    List,
    /// Print a form as JSON.
    Show { id: String },
    /// Remove a form. Values entered under it stay in their records.
    Remove { id: String },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user. Example: user add u1 --name "Ann" --role worker --area g1
    Add {
        /// User id.
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// worker (own area) | supervisor (subtree of its area) | operator (everything).
        #[arg(long)]
        role: Role,
        /// The user's area id.
        #[arg(long)]
        area: String,
    },
    /// List users: id, display name, role, area, status, active devices.
    List,
    /// Change a user's display name, role or area (at least one). Their devices learn it at their
    /// next sync.
    Set {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        role: Option<Role>,
        #[arg(long)]
        area: Option<String>,
    },
    /// Disable a user: their devices are refused (401 disabled) and wipe their stores.
    Disable { id: String },
    /// Enable a disabled user again.
    Enable { id: String },
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Register a device for a user and print its bearer token. The token is shown ONCE; only its
    /// SHA-256 is stored.
    Add {
        /// The user the device belongs to.
        #[arg(long)]
        user: String,
        /// Device id (default: random).
        #[arg(long)]
        id: Option<String>,
    },
    /// Revoke a device: its token is refused from the next request on.
    Revoke {
        /// Device id.
        id: String,
    },
    /// List devices with their user, role, area, last sync time, status and store binding.
    List {
        /// Only this user's devices.
        #[arg(long)]
        user: Option<String>,
    },
    /// Unbind a device token from its store, so a reinstalled app can register with it.
    Reset { id: String },
}

fn init_logging(json: bool, default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn fmt_time(t: Option<i64>) -> String {
    t.map(gridwork_protocol::time::iso_from_secs)
        .unwrap_or_else(|| "-".into())
}

async fn run(cli: Cli) -> gridwork_server::Result<()> {
    match cli.cmd {
        Cmd::Serve {
            storage,
            listen,
            rate_per_sec,
            rate_burst,
            auth_fail_per_sec,
            auth_fail_burst,
            plan_threads,
            pipeline_min_changes,
            console_dir,
            console_key_file,
            no_console,
            secure_cookies,
            map_tiles,
        } => {
            if !(rate_per_sec > 0.0 && rate_burst >= 1.0) {
                return Err(Error::Invalid(
                    "--rate-per-sec must be above 0 and --rate-burst at least 1".into(),
                ));
            }
            if !(auth_fail_per_sec > 0.0 && auth_fail_burst >= 1.0) {
                return Err(Error::Invalid(
                    "--auth-fail-per-sec must be above 0 and --auth-fail-burst at least 1".into(),
                ));
            }
            let mut config = ServerConfig::new(listen, storage.config()?);
            config.limits = Limits {
                rate_per_sec,
                rate_burst,
                auth_fail_per_sec,
                auth_fail_burst,
                plan_threads,
                pipeline_min_changes,
                ..Limits::default()
            };
            let key = match console_key_file {
                Some(f) => Some(RelayKey::from_file(&f)?),
                None => match std::env::var("GRIDWORK_CONSOLE_KEY") {
                    Ok(v) => Some(RelayKey::from_hex(&v)?),
                    Err(_) => None,
                },
            };
            match (console_dir, key) {
                (Some(dir), Some(key)) => {
                    config.console = Some(gridwork_server::ConsoleConfig::new(dir, key))
                }
                (Some(dir), None) => {
                    match &mut config.console {
                        Some(c) => c.dir = dir,
                        None => return Err(Error::Invalid(
                            "--console-dir needs a key: --console-key-file or GRIDWORK_CONSOLE_KEY"
                                .into(),
                        )),
                    }
                }
                (None, Some(key)) => {
                    if let Some(c) = &mut config.console {
                        c.key = key;
                    }
                }
                (None, None) => {}
            }
            if no_console {
                config.console = None;
            }
            if let Some(c) = &mut config.console {
                c.secure_cookies = secure_cookies;
                if let Some(t) = map_tiles {
                    gridwork_server::console::map::tile_origin(&t).map_err(Error::Invalid)?;
                    c.map_tiles = Some(t);
                }
            }
            let server = start(config).await?;
            server.run_until_signal().await;
        }
        Cmd::Admin {
            what: AdminCmd::Keygen { out },
            ..
        } => {
            RelayKey::generate().write_new_file(&out)?;
            println!(
                "new relay key written to {} (mode 0600); keep a copy somewhere safe: without it \
                 the relay's data cannot be read",
                out.display()
            );
        }
        Cmd::Admin {
            storage,
            what: AdminCmd::Encrypt,
        } => {
            let StorageConfig::Sqlite {
                data_dir,
                encryption: Encryption::Key(key),
            } = storage.config()?
            else {
                return Err(Error::Invalid(
                    "encrypt converts the embedded store: give --data DIR and its new key \
                     (--key-file or GRIDWORK_RELAY_KEY)"
                        .into(),
                ));
            };
            let version = Admin::encrypt_sqlite(&data_dir, &key)?;
            println!(
                "relay database in {} encrypted (schema version {version}); start the relay with \
                 the same key",
                data_dir.display()
            );
        }
        Cmd::Admin { storage, what } => {
            let admin = Admin::open(&storage.config()?).await?;
            let res = admin_cmd(&admin, what).await;
            admin.close().await;
            res?;
        }
    }
    Ok(())
}

async fn admin_cmd(admin: &Admin, what: AdminCmd) -> gridwork_server::Result<()> {
    match what {
        AdminCmd::Area(cmd) => area_cmd(admin, cmd).await,
        AdminCmd::User(cmd) => user_cmd(admin, cmd).await,
        AdminCmd::Device(cmd) => device_cmd(admin, cmd).await,
        AdminCmd::Schedule(cmd) => schedule_cmd(admin, cmd).await,
        AdminCmd::Form(cmd) => form_cmd(admin, cmd).await,
        AdminCmd::WebAccount(WebAccountCmd::Set {
            user,
            password_file,
        }) => {
            let text = zeroize::Zeroizing::new(
                match &password_file {
                    Some(f) => std::fs::read_to_string(f),
                    None => std::io::read_to_string(std::io::stdin()),
                }
                .map_err(|e| Error::Invalid(format!("cannot read the password: {e}")))?,
            );
            let password = text.lines().next().unwrap_or("");
            admin.set_web_password(&user, password).await?;
            println!("web console password set for {user}");
            Ok(())
        }
        AdminCmd::WebAccount(WebAccountCmd::Remove { user }) => {
            admin.remove_web_account(&user).await?;
            println!("web account of {user} removed");
            Ok(())
        }
        AdminCmd::Audit { limit } => {
            for a in admin.audit_trail(limit.clamp(1, 10_000)).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    gridwork_protocol::time::iso_from_secs(a.at),
                    a.user,
                    a.action,
                    a.target.as_deref().unwrap_or("-"),
                    a.outcome
                );
            }
            Ok(())
        }
        // Handled before the store is opened.
        AdminCmd::Encrypt | AdminCmd::Keygen { .. } => Ok(()),
    }
}

async fn area_cmd(admin: &Admin, cmd: AreaCmd) -> gridwork_server::Result<()> {
    match cmd {
        AreaCmd::Add {
            id,
            parent,
            level,
            name,
        } => {
            let a = admin.add_area(&id, parent.as_deref(), level, &name).await?;
            println!("area {} created ({} {})", a.id, a.level, a.path);
        }
        AreaCmd::List => {
            for a in admin.list_areas().await? {
                println!("{}\t{}\t{}\t{}", a.id, a.level, a.path, a.name);
            }
        }
        AreaCmd::Rename { id, name } => {
            admin.rename_area(&id, &name).await?;
            println!("area {id} renamed");
        }
        AreaCmd::Move { id, parent } => {
            let m = admin.move_area(&id, &parent).await?;
            println!(
                "area {id} moved under {parent}: {} area(s) and {} record(s) re-placed",
                m.areas, m.records
            );
        }
        AreaCmd::Remove { id } => {
            admin.remove_area(&id).await?;
            println!("area {id} removed");
        }
    }
    Ok(())
}

async fn form_cmd(admin: &Admin, cmd: FormCmd) -> gridwork_server::Result<()> {
    match cmd {
        FormCmd::Add { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
            }
            .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", file.display())))?;
            let form: Form = serde_json::from_str(&text)
                .map_err(|e| Error::Invalid(format!("not a form: {e}")))?;
            let (id, area) = (form.id.clone(), form.area.clone());
            admin.put_form(form).await?;
            println!("form {id} defined for {area}");
        }
        FormCmd::List => {
            for f in admin.list_forms().await? {
                let keys: Vec<&str> = f.fields.iter().map(|x| x.key.as_str()).collect();
                println!(
                    "{}\t{}\t{}\t{}",
                    f.id,
                    f.area,
                    f.kind.as_str(),
                    keys.join(",")
                );
            }
        }
        FormCmd::Show { id } => {
            let form = admin
                .list_forms()
                .await?
                .into_iter()
                .find(|f| f.id == id)
                .ok_or_else(|| Error::NotFound(format!("form {id}")))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&form).map_err(|e| Error::Invalid(e.to_string()))?
            );
        }
        FormCmd::Remove { id } => {
            admin.remove_form(&id).await?;
            println!("form {id} removed");
        }
    }
    Ok(())
}

async fn schedule_cmd(admin: &Admin, cmd: ScheduleCmd) -> gridwork_server::Result<()> {
    match cmd {
        ScheduleCmd::Add {
            id,
            area,
            kind,
            tag,
            category,
            every,
            name,
        } => {
            let kind = Kind::parse(&kind)
                .ok_or_else(|| Error::Invalid(format!("unknown kind {kind:?}")))?;
            let every = Every::parse(&every).map_err(Error::Invalid)?;
            admin
                .put_schedule(Schedule {
                    id: id.clone(),
                    area: area.clone(),
                    name,
                    kind,
                    tag,
                    category,
                    every,
                })
                .await?;
            println!("schedule {id} defined for {area}");
        }
        ScheduleCmd::List => {
            for s in admin.list_schedules().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    s.id,
                    s.area,
                    s.kind.as_str(),
                    s.tag.as_deref().unwrap_or("-"),
                    s.category.as_deref().unwrap_or("-"),
                    s.every,
                    s.name
                );
            }
        }
        ScheduleCmd::Remove { id } => {
            admin.remove_schedule(&id).await?;
            println!("schedule {id} removed");
        }
    }
    Ok(())
}

async fn user_cmd(admin: &Admin, cmd: UserCmd) -> gridwork_server::Result<()> {
    match cmd {
        UserCmd::Add {
            id,
            name,
            role,
            area,
        } => {
            admin.add_user(&id, &name, role, &area).await?;
            println!("user {id} created ({role} of {area})");
        }
        UserCmd::List => {
            println!("USER\tNAME\tROLE\tAREA\tSTATUS\tDEVICES");
            for u in admin.list_users().await? {
                let status = if u.disabled { "disabled" } else { "active" };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    u.id, u.name, u.role, u.area, status, u.devices
                );
            }
        }
        UserCmd::Set {
            id,
            name,
            role,
            area,
        } => {
            admin
                .set_user(&id, &UserChanges { name, role, area })
                .await?;
            println!("user {id} changed");
        }
        UserCmd::Disable { id } => {
            admin.disable_user(&id).await?;
            println!("user {id} disabled");
        }
        UserCmd::Enable { id } => {
            admin.enable_user(&id).await?;
            println!("user {id} enabled");
        }
    }
    Ok(())
}

async fn device_cmd(admin: &Admin, cmd: DeviceCmd) -> gridwork_server::Result<()> {
    match cmd {
        DeviceCmd::Add { user, id } => {
            let d = admin.add_device(&user, id.as_deref()).await?;
            eprintln!(
                "device {} added for user {}; the token is shown only now:",
                d.device_id, d.user_id
            );
            println!("{}", d.token);
        }
        DeviceCmd::Revoke { id } => {
            admin.revoke_device(&id).await?;
            println!("device {id} revoked");
        }
        DeviceCmd::List { user } => {
            let devices = match &user {
                Some(u) => admin.list_user_devices(u).await?,
                None => admin.list_devices().await?,
            };
            println!("DEVICE\tUSER\tNAME\tROLE\tAREA\tLAST SYNC\tSTATUS\tSTORE");
            for d in devices {
                let status = if d.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let store = if d.bound { "bound" } else { "unbound" };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    d.id,
                    d.user_id,
                    d.user_name,
                    d.role,
                    d.area,
                    fmt_time(d.last_sync_at),
                    status,
                    store
                );
            }
        }
        DeviceCmd::Reset { id } => {
            admin.reset_device(&id).await?;
            println!("device {id} reset: its token may register a new store");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The admin commands print their own results; their logs only matter when something is wrong.
    let default = if matches!(cli.cmd, Cmd::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    init_logging(cli.log_json, default);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
