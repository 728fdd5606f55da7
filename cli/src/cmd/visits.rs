//! `visit ...`: start, record, answer, attach, finish, review, queue.
use super::{done, records::human_size};
use crate::ctx::{CliError, CliResult, Ctx};
use crate::output::{self, count, Table};
use clap::{Args, Subcommand, ValueEnum};
use gridwork_core::{Kind, NewRecord, ReviewState};
use std::path::PathBuf;

pub const EXAMPLES: &str = "\
EXAMPLES:
  V=$(gridwork --store ./wang visit start --area g1 --purpose 'Weekly call on elderly residents' \\
        --lat 31.2304 --lon 121.4737 --accuracy 8)
  gridwork --store ./wang visit record $V <PERSON-ID>
  gridwork --store ./wang visit answer $V 'smoke alarm works' yes
  gridwork --store ./wang visit attach $V ./stairwell.jpg
  gridwork --store ./wang visit finish $V --notes 'All well; stair light still broken.'
  gridwork --store ./zhao visit queue
  gridwork --store ./zhao visit review $V return --comment 'Add a photo of the light.'";

#[derive(Subcommand, Debug)]
pub enum VisitCommand {
    /// Start a visit now; prints the visit's id.
    Start(StartArgs),
    /// Add a record (a person, place, ...) to the records visited.
    Record {
        /// The visit's id.
        visit: String,
        /// The visited record's id.
        record: String,
    },
    /// Record a checklist answer (an empty answer removes it).
    Answer {
        /// The visit's id.
        visit: String,
        /// The checklist question (1-256 bytes).
        question: String,
        /// The answer.
        answer: String,
    },
    /// Attach a file (a photo) to a visit; it is kept encrypted in the store and uploaded on sync.
    Attach {
        /// The visit's id.
        visit: String,
        /// The file to attach (at most 32 MiB).
        file: PathBuf,
        /// The media type; guessed from the file name when not given.
        #[arg(long, value_name = "MIME")]
        mime: Option<String>,
    },
    /// Finish a visit now (only the worker who started it, once).
    Finish {
        /// The visit's id.
        visit: String,
        /// Notes on the visit.
        #[arg(long, value_name = "TEXT")]
        notes: Option<String>,
    },
    /// Approve or return a finished visit (supervisors of the visit's area).
    Review {
        /// The visit's id.
        visit: String,
        /// The decision.
        #[arg(value_enum)]
        decision: Decision,
        /// A comment for the worker (required to return).
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
    /// Finished visits waiting for review in your area.
    Queue {
        /// At most this many visits.
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: u32,
    },
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// The area the visit takes place in.
    #[arg(long, value_name = "AREA")]
    pub area: String,
    /// What the visit is for.
    #[arg(long, value_name = "TEXT")]
    pub purpose: String,
    /// Where the device is: latitude in degrees (WGS84).
    #[arg(long, requires = "lon", allow_negative_numbers = true)]
    pub lat: Option<f64>,
    /// Longitude in degrees (WGS84).
    #[arg(long, requires = "lat", allow_negative_numbers = true)]
    pub lon: Option<f64>,
    /// Accuracy radius of the position, in metres.
    #[arg(long, requires = "lat", value_name = "METRES")]
    pub accuracy: Option<f64>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Decision {
    Approve,
    Return,
}

fn guess_mime(path: &std::path::Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "heic" => "image/heic",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "mp4" => "video/mp4",
        "m4a" => "audio/mp4",
        _ => "application/octet-stream",
    }
}

pub fn run(ctx: &Ctx, cmd: &VisitCommand) -> CliResult<()> {
    let store = &ctx.store;
    match cmd {
        VisitCommand::Start(a) => {
            let mut new = NewRecord::new(Kind::Visit, &a.area).field("purpose", &a.purpose);
            if let (Some(lat), Some(lon)) = (a.lat, a.lon) {
                new = new
                    .field("lat", lat.to_string())
                    .field("lon", lon.to_string());
                if let Some(acc) = a.accuracy {
                    new = new.field("accuracy", acc.to_string());
                }
            }
            let id = store.create(new)?;
            ctx.print(
                &serde_json::json!({ "id": id, "kind": Kind::Visit }),
                || id.clone(),
            );
            Ok(())
        }
        VisitCommand::Record { visit, record } => {
            store.add_visited(visit, record)?;
            done(ctx, visit, &format!("added {record} to visited records of"))
        }
        VisitCommand::Answer {
            visit,
            question,
            answer,
        } => {
            store.answer_checklist(visit, question, answer)?;
            done(ctx, visit, "answer saved on visit")
        }
        VisitCommand::Attach { visit, file, mime } => {
            // Check the visit first, so a bad id does not leave an orphan attachment behind.
            let record = store.get(visit)?;
            if record.kind != Kind::Visit {
                return Err(CliError::user(format!(
                    "record {visit} is a {}, not a visit",
                    record.kind
                )));
            }
            let bytes = std::fs::read(file)
                .map_err(|e| CliError::user(format!("cannot read {}: {e}", file.display())))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "attachment".into());
            let mime = mime.clone().unwrap_or_else(|| guess_mime(file).to_owned());
            let att = store.add_attachment(visit, &name, &mime, &bytes)?;
            store.attach_to_visit(visit, &att)?;
            ctx.print(&att, || {
                format!(
                    "attached {} ({}, {}) to {visit}",
                    att.name,
                    att.mime,
                    human_size(att.size)
                )
            });
            Ok(())
        }
        VisitCommand::Finish { visit, notes } => {
            store.finish_visit(visit, notes.as_deref())?;
            done(ctx, visit, "finished visit")
        }
        VisitCommand::Review {
            visit,
            decision,
            comment,
        } => {
            let state = match decision {
                Decision::Approve => ReviewState::Approved,
                Decision::Return => ReviewState::Returned,
            };
            store.review_visit(visit, state, comment.as_deref())?;
            done(ctx, visit, &format!("{} visit", state.as_str()))
        }
        VisitCommand::Queue { limit } => {
            let items = store.review_queue(*limit)?;
            ctx.print(&items, || {
                if items.is_empty() {
                    return "no visits waiting for review".into();
                }
                let mut t = Table::new(["ID", "PURPOSE", "WORKER", "ENDED", "AREA"]);
                for s in &items {
                    let f = |k: &str| s.fields.get(k).cloned().unwrap_or_default();
                    t.row([
                        s.id.clone(),
                        s.title.clone(),
                        f("worker"),
                        output::short_time(&f("ended_at")),
                        s.area.clone(),
                    ]);
                }
                format!(
                    "{}\n{} waiting for review\n",
                    t.render(),
                    count(items.len(), "visit")
                )
            });
            Ok(())
        }
    }
}
