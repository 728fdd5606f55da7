//! `gridwork-server`: run the relay, or administer areas, users and devices.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use gridwork_server::{start, Admin, AreaLevel, Limits, Role, ServerConfig, StorageConfig};

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
#[group(required = true, multiple = false)]
struct StorageArgs {
    /// Data directory of the embedded SQLite store (created if missing).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// PostgreSQL URL, e.g. postgres://user:pass@host:5432/db. Prefer the environment variable to
    /// keep the password out of the process list.
    #[arg(
        long,
        value_name = "URL",
        env = "GRIDWORK_DATABASE_URL",
        hide_env_values = true
    )]
    database: Option<String>,
}

impl StorageArgs {
    fn config(&self) -> StorageConfig {
        match (&self.data, &self.database) {
            (Some(d), _) => StorageConfig::Sqlite {
                data_dir: d.clone(),
            },
            (None, Some(u)) => StorageConfig::Postgres { url: u.clone() },
            // clap's group makes one of them required.
            (None, None) => StorageConfig::Sqlite {
                data_dir: PathBuf::from("gridwork-data"),
            },
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
    },
    /// Manage areas, users and devices (works while a relay is running).
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
    /// List devices with their user, role, area and last sync time.
    List,
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
        Cmd::Serve { storage, listen } => {
            let config = ServerConfig {
                listen,
                storage: storage.config(),
                limits: Limits::default(),
            };
            let server = start(config).await?;
            server.run_until_signal().await;
        }
        Cmd::Admin { storage, what } => {
            let admin = Admin::open(&storage.config()).await?;
            let res = admin_cmd(&admin, what).await;
            admin.close().await;
            res?;
        }
    }
    Ok(())
}

async fn admin_cmd(admin: &Admin, what: AdminCmd) -> gridwork_server::Result<()> {
    match what {
        AdminCmd::Area(AreaCmd::Add {
            id,
            parent,
            level,
            name,
        }) => {
            let a = admin.add_area(&id, parent.as_deref(), level, &name).await?;
            println!("area {} created ({} {})", a.id, a.level, a.path);
        }
        AdminCmd::Area(AreaCmd::List) => {
            for a in admin.list_areas().await? {
                println!("{}\t{}\t{}\t{}", a.id, a.level, a.path, a.name);
            }
        }
        AdminCmd::User(UserCmd::Add {
            id,
            name,
            role,
            area,
        }) => {
            admin.add_user(&id, &name, role, &area).await?;
            println!("user {id} created ({role} of {area})");
        }
        AdminCmd::Device(DeviceCmd::Add { user, id }) => {
            let d = admin.add_device(&user, id.as_deref()).await?;
            eprintln!(
                "device {} added for user {}; the token is shown only now:",
                d.device_id, d.user_id
            );
            println!("{}", d.token);
        }
        AdminCmd::Device(DeviceCmd::Revoke { id }) => {
            admin.revoke_device(&id).await?;
            println!("device {id} revoked");
        }
        AdminCmd::Device(DeviceCmd::List) => {
            println!("DEVICE\tUSER\tNAME\tROLE\tAREA\tLAST SYNC\tSTATUS");
            for d in admin.list_devices().await? {
                let status = if d.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    d.id,
                    d.user_id,
                    d.user_name,
                    d.role,
                    d.area,
                    fmt_time(d.last_sync_at),
                    status
                );
            }
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
