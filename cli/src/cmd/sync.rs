//! `gridwork sync` and `gridwork fetch`: talk to the relay.
use crate::ctx::{CliError, CliResult, Ctx};
use clap::Args;
use gridwork_core::{CancelToken, SyncConfig, SyncPhase, SyncProgress};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const EXAMPLES: &str = "\
EXAMPLES:
  gridwork --store ./wang sync --server http://127.0.0.1:8080 --token gw_... --remember
  gridwork --store ./wang sync                 # uses the remembered relay
  GRIDWORK_SERVER=https://relay.example.org GRIDWORK_TOKEN=gw_... gridwork --store ./wang sync";

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The relay's base URL (or GRIDWORK_SERVER, or the one remembered in DIR/relay.json).
    #[arg(long, env = "GRIDWORK_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// This device's bearer token from `gridwork-server admin device add` (or GRIDWORK_TOKEN).
    #[arg(
        long,
        env = "GRIDWORK_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Remember the relay and token in DIR/relay.json (readable by this user only).
    #[arg(long)]
    pub remember: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// The record the attachment belongs to (a visit).
    pub record: String,
    /// The attachment's SHA-256 (see `gridwork show`).
    pub sha256: String,
    /// Write the bytes to this file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub relay: RelayArgs,
}

#[derive(Args, Debug)]
pub struct RelayArgs {
    /// The relay's base URL (or GRIDWORK_SERVER, or DIR/relay.json).
    #[arg(long, env = "GRIDWORK_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// This device's bearer token (or GRIDWORK_TOKEN, or DIR/relay.json).
    #[arg(
        long,
        env = "GRIDWORK_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Remembered {
    server: String,
    token: String,
}

fn relay_file(dir: &Path) -> PathBuf {
    dir.join("relay.json")
}

fn config(dir: &Path, server: Option<&str>, token: Option<&str>) -> CliResult<SyncConfig> {
    let remembered: Option<Remembered> = std::fs::read(relay_file(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let server = server
        .map(str::to_owned)
        .or_else(|| remembered.as_ref().map(|r| r.server.clone()));
    let token = token
        .map(str::to_owned)
        .or_else(|| remembered.as_ref().map(|r| r.token.clone()));
    match (server, token) {
        (Some(s), Some(t)) => Ok(SyncConfig::new(s, t)),
        _ => Err(CliError::user(
            "no relay: give --server URL and --token TOKEN (or GRIDWORK_SERVER / GRIDWORK_TOKEN, or --remember them once)",
        )),
    }
}

/// Draws progress on stderr; phases without a known total show a spinner with a count.
pub struct Bar {
    bar: ProgressBar,
    phase: Mutex<Option<SyncPhase>>,
}

impl Bar {
    pub fn new(hidden: bool) -> Bar {
        let bar = if hidden {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        Bar {
            bar,
            phase: Mutex::new(None),
        }
    }

    pub fn update(&self, p: SyncProgress) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if *phase != Some(p.phase) {
            *phase = Some(p.phase);
            let style = match p.total {
                Some(_) => ProgressStyle::with_template("{prefix:>13} [{bar:30}] {pos}/{len}")
                    .expect("template")
                    .progress_chars("=> "),
                None => {
                    ProgressStyle::with_template("{prefix:>13} {spinner} {pos}").expect("template")
                }
            };
            self.bar.set_style(style);
            self.bar.set_prefix(match p.phase {
                SyncPhase::Connecting => "connecting",
                SyncPhase::Pushing => "pushing",
                SyncPhase::Bootstrapping => "bootstrapping",
                SyncPhase::Pulling => "pulling",
                SyncPhase::Attachments => "uploading",
                SyncPhase::Done => "done",
            });
        }
        if let Some(total) = p.total {
            self.bar.set_length(total);
        }
        self.bar.set_position(p.done);
        self.bar.tick();
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Keeps the relay and token in DIR/relay.json (readable by this user only).
pub fn remember(dir: &Path, server: &str, token: &str) -> CliResult<()> {
    let json = serde_json::to_vec_pretty(&Remembered {
        server: server.trim_end_matches('/').to_owned(),
        token: token.to_owned(),
    })
    .expect("serialises");
    super::write_private(&relay_file(dir), &json)
}

pub fn sync(ctx: &Ctx, dir: &Path, args: &SyncArgs) -> CliResult<()> {
    let config = config(dir, args.server.as_deref(), args.token.as_deref())?;
    if args.remember {
        remember(dir, &config.server_url, &config.token)?;
    }
    let bar = Bar::new(args.quiet || ctx.json);
    let cancel = CancelToken::new();
    let report = ctx.store.sync(&config, &|p| bar.update(p), &cancel);
    bar.finish();
    let report = report?;
    let quarantined = ctx.store.quarantined()?.len();
    ctx.print(&report, || {
        let mut text = format!(
            "synced: pushed {}, pulled {}{}, {} record(s) changed; at relay position {}",
            report.pushed,
            report.pulled,
            if report.bootstrapped > 0 { format!(" (+{} from the snapshot)", report.bootstrapped) } else { String::new() },
            report.records_changed,
            report.cursor
        );
        if report.attachments_uploaded > 0 {
            text.push_str(&format!("\nuploaded {} attachment(s)", report.attachments_uploaded));
        }
        if report.purged > 0 {
            text.push_str(&format!(
                "\nremoved {} record(s) that left your scope from this device",
                report.purged
            ));
        }
        if report.deferred > 0 {
            text.push_str(&format!(
                "\nthe relay was busy: {} change(s) wait for the next sync",
                report.deferred
            ));
        }
        if report.rejected > 0 || quarantined > 0 {
            text.push_str(&format!(
                "\n{} change(s) refused by the relay this time, {quarantined} in quarantine: see `gridwork quarantine`",
                report.rejected
            ));
        }
        text
    });
    Ok(())
}

pub fn fetch(ctx: &Ctx, dir: &Path, args: &FetchArgs) -> CliResult<()> {
    let config = config(
        dir,
        args.relay.server.as_deref(),
        args.relay.token.as_deref(),
    )?;
    let bytes = ctx
        .store
        .fetch_attachment(&config, &args.record, &args.sha256)?;
    super::write_private(&args.out, &bytes)?;
    super::done(
        ctx,
        &args.sha256,
        &format!("wrote {} bytes to {}", bytes.len(), args.out.display()),
    )
}
