//! `init`, `area ...` and `whoami`.
use crate::ctx::{CliError, CliResult, Ctx, Globals};
use crate::key;
use crate::output::{self, Table};
use clap::{Args, Subcommand};
use gridwork_core::{
    AreaLevel, Identity, IdentityClaims, Role, Store, StoreKey, StoreOptions, SyncConfig,
};

pub const INIT_EXAMPLES: &str = "\
EXAMPLES:
  # A grid worker's phone, set up from the relay: user, role, area, device and the area tree come from
  # the token. Writes a random key to ./wang/store.key (demos/dev only).
  gridwork --store ./wang init --server http://127.0.0.1:8080 --token gw_... --remember

  # The same, checking that the token is the one meant for this user and grid
  gridwork --store ./wang init --server http://127.0.0.1:8080 --token gw_... --user wang --area g1

  # Offline (demos, or no network yet): the relay's answer replaces role, area and device at the
  # first sync, and a token of another user is refused then
  gridwork --store ./wang init --user wang --device wang-phone --role worker --area g1

  # A supervisor whose key comes from the environment
  GRIDWORK_KEY=$(openssl rand -hex 32) gridwork --store ./zhao init --server https://relay.example.org \\
      --token gw_...";

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The relay to take the identity from (with --token): user, role, area, device and area tree.
    #[arg(long, env = "GRIDWORK_SERVER", value_name = "URL", requires = "token")]
    pub server: Option<String>,
    /// This device's bearer token from `gridwork-server admin device add` (or GRIDWORK_TOKEN).
    #[arg(
        long,
        env = "GRIDWORK_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        requires = "server"
    )]
    pub token: Option<String>,
    /// Remember the relay and token in DIR/relay.json (readable by this user only) for `sync`.
    #[arg(long, requires = "server")]
    pub remember: bool,
    /// The user working on this device (recorded as the author of every change). With --server it
    /// must be the token's user.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// This device's id, as the operator registered it. With --server it must be the token's.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// What the user may do: worker (its own area), supervisor (the subtree under it) or operator
    /// (all). With --server it must be the token's.
    #[arg(long, value_name = "worker|supervisor|operator")]
    pub role: Option<Role>,
    /// The user's area id (a grid for a worker, e.g. `g1`). With --server it must be the token's.
    #[arg(long, value_name = "AREA")]
    pub area: Option<String>,
}

impl InitArgs {
    /// The identity of an offline `init`: every flag is needed.
    fn offline_identity(&self) -> CliResult<Identity> {
        match (&self.user, &self.device, self.role, &self.area) {
            (Some(user), Some(device), Some(role), Some(area)) => Ok(Identity {
                user_id: user.trim().to_owned(),
                device_id: device.trim().to_owned(),
                role,
                area: area.clone(),
            }),
            _ => Err(CliError::user(
                "give --server URL --token TOKEN (the identity comes from the relay), or all of \
                 --user, --device, --role and --area to start offline",
            )),
        }
    }

    fn claims(&self) -> IdentityClaims {
        IdentityClaims {
            user_id: self.user.as_ref().map(|u| u.trim().to_owned()),
            device_id: self.device.as_ref().map(|d| d.trim().to_owned()),
            role: self.role,
            area: self.area.clone(),
        }
    }

    /// Makes the store: from the relay when one is given, else offline.
    fn make(&self, db: &std::path::Path, key: StoreKey) -> gridwork_core::Result<Store> {
        match (&self.server, &self.token) {
            (Some(server), Some(token)) => Store::create_from_relay(
                StoreOptions::new(db, key),
                &SyncConfig::new(server.as_str(), token.as_str()),
                &self.claims(),
            ),
            _ => {
                let identity = self
                    .offline_identity()
                    .map_err(|e| gridwork_core::Error::InvalidInput(e.to_string()))?;
                Store::open(StoreOptions::new(db, key).identity(identity))
            }
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum AreaCommand {
    /// Add an area (or rename/re-parent an existing one). Parents must be added first.
    #[command(after_long_help = "\
EXAMPLES:
  gridwork --store ./wang area add d1 --level district --name 'East District'
  gridwork --store ./wang area add s1 --level street --name 'River Street' --parent d1
  gridwork --store ./wang area add c1 --level community --name '柳树社区' --parent s1
  gridwork --store ./wang area add g1 --level grid --name 'Grid 1' --parent c1")]
    Add {
        /// Area id: 1-64 of A-Z, a-z, 0-9, `_` and `-`.
        id: String,
        /// The level: a district holds streets (or towns), a street communities (or villages), a
        /// community grids.
        #[arg(long, value_name = "district|street|community|grid")]
        level: AreaLevel,
        /// A display name.
        #[arg(long)]
        name: String,
        /// The parent area's id (none for a district).
        #[arg(long, value_name = "AREA")]
        parent: Option<String>,
    },
    /// Show the area tree.
    List,
}

pub fn init(globals: &Globals, args: &InitArgs) -> CliResult<()> {
    let db = globals.db_path();
    if db.exists() {
        return Err(CliError::user(format!(
            "a store already exists in {}",
            globals.dir.display()
        )));
    }
    std::fs::create_dir_all(&globals.dir)
        .map_err(|e| CliError::user(format!("cannot create {}: {e}", globals.dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&globals.dir, std::fs::Permissions::from_mode(0o700));
    }
    if args.server.is_none() {
        args.offline_identity()?;
    }
    let (key, created_key) = match key::resolve(globals.key_file.as_deref(), &globals.dir)? {
        Some(k) => (k, None),
        None => {
            let path = key::default_key_path(&globals.dir);
            (key::create_key_file(&path)?, Some(path))
        }
    };
    let store = match args.make(&db, key) {
        Ok(s) => s,
        Err(e) => {
            // Leave nothing half-made behind: the next `init` should start clean.
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
            if let Some(path) = &created_key {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    if let (true, Some(server), Some(token)) = (args.remember, &args.server, &args.token) {
        super::sync::remember(&globals.dir, server, token)?;
    }
    let me = store.identity();
    let confirmed = store.identity_confirmed();
    let value = serde_json::json!({
        "store": db,
        "identity": me,
        "identity_confirmed": confirmed,
        "key_file": created_key,
    });
    if globals.json {
        output::print_json(&value);
    } else {
        let mut text = format!(
            "created store {}\n  user {} on device {}, {} of area {} ({})\n",
            db.display(),
            me.user_id,
            me.device_id,
            me.role,
            me.area,
            if confirmed {
                "from the relay"
            } else {
                "not confirmed yet: the relay's answer replaces it at the first sync"
            }
        );
        if let Some(path) = created_key {
            text.push_str(&format!(
                "  wrote a random key to {} (mode 0600)\n  \
                 note: a key file next to the store is for demos and development; a real device \
                 keeps the key in the platform keystore\n",
                path.display()
            ));
        }
        output::emit(&text);
    }
    Ok(())
}

pub fn area(ctx: &Ctx, cmd: &AreaCommand) -> CliResult<()> {
    match cmd {
        AreaCommand::Add {
            id,
            level,
            name,
            parent,
        } => {
            if name.trim().is_empty() {
                return Err(CliError::user("an area needs a name"));
            }
            let area = ctx.store.upsert_area(id, parent.as_deref(), *level, name)?;
            ctx.print(&area, || {
                format!("area {} ({}, {})", area.id, area.level.as_str(), area.name)
            });
            Ok(())
        }
        AreaCommand::List => {
            let areas = ctx.store.areas()?;
            ctx.print(&areas, || {
                if areas.is_empty() {
                    return "no areas yet: add them with `gridwork area add`".into();
                }
                let mut t = Table::new(["AREA", "LEVEL", "NAME", "PATH"]);
                for a in &areas {
                    let depth = a.path.matches('/').count().saturating_sub(1);
                    t.row([
                        format!("{}{}", "  ".repeat(depth), a.id),
                        a.level.as_str().to_owned(),
                        a.name.clone(),
                        a.path.trim_end_matches('/').to_owned(),
                    ]);
                }
                t.render()
            });
            Ok(())
        }
    }
}

pub fn whoami(ctx: &Ctx) -> CliResult<()> {
    let me = ctx.store.identity();
    let confirmed = ctx.store.identity_confirmed();
    let outbox = ctx.store.outbox_len()?;
    let quarantined = ctx.store.quarantined()?.len();
    let conflicts = ctx.store.conflicts()?.len();
    let unchecked = ctx.store.unchecked_views()?;
    let repaired = ctx.store.view_repairs()?;
    let value = serde_json::json!({
        "identity": me,
        "identity_confirmed": confirmed,
        "store": ctx.store.path(),
        "outbox": outbox,
        "quarantined": quarantined,
        "conflicts": conflicts,
        "relay_views_unchecked": unchecked,
        "relay_views_repaired": repaired,
    });
    ctx.print(&value, || {
        format!(
            "user        {}\ndevice      {}\nrole        {}\narea        {}\nidentity    {}\n\
             store       {}\noutbox      {}\nquarantine  {}\nconflicts   {}\n\
             relay views {} not checked against their documents yet, {} repaired\n",
            me.user_id,
            me.device_id,
            me.role,
            me.area,
            if confirmed {
                "confirmed by the relay"
            } else {
                "not confirmed by the relay yet (set offline; the first sync replaces it)"
            },
            ctx.store.path().display(),
            output::count(outbox as usize, "change"),
            output::count(quarantined, "change"),
            conflicts,
            unchecked,
            repaired
        )
    });
    Ok(())
}
