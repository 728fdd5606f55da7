//! `event ...`: the lifecycle reported > assigned > in progress > resolved > verified > closed, with
//! returned and reopened, escalation and handing down; the overdue and "mine" work lists.
use crate::ctx::{CliError, CliResult, Ctx};
use crate::output::{self, count};
use clap::{Args, Subcommand};
use gridwork_core::{Error, EventAction, EventStatus, Kind};

pub const EXAMPLES: &str = "\
LIFECYCLE:
  reported --assign--> assigned --start--> in_progress --resolve--> resolved --verify--> verified
  --close--> closed.  resolved --return--> returned --start--> in_progress.
  resolved | verified | closed --reopen--> reopened --assign--> assigned.
  Any open event can be escalated to the parent area or handed down (it restarts at `reported`).
  Assigning someone else, verifying, returning, closing, reopening and handing down need a
  supervisor of the responsible area; starting and resolving need the assignee (or a supervisor).

EXAMPLES:
  E=$(gridwork --store ./wang add event --area g1 --set title='Broken stair light')
  gridwork --store ./zhao event assign $E wang
  gridwork --store ./wang event start $E
  gridwork --store ./wang event resolve $E --comment 'Bulb replaced'
  gridwork --store ./zhao event return $E --comment 'Still flickers on floor 3'
  gridwork --store ./wang event escalate $E --comment 'Wiring fault: needs the street office'
  gridwork --store ./wang event mine
  gridwork --store ./zhao event overdue";

#[derive(Args, Debug)]
pub struct ActArgs {
    /// The event's id.
    pub id: String,
    /// A comment for the event's timeline.
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
}

#[derive(Args, Debug)]
pub struct CommentArgs {
    /// The event's id.
    pub id: String,
    /// The comment (required).
    #[arg(long, value_name = "TEXT")]
    pub comment: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// At most this many events.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u32,
}

#[derive(Subcommand, Debug)]
pub enum EventCommand {
    /// Assign (or reassign) an event to a user.
    Assign {
        /// The event's id.
        id: String,
        /// The user to assign it to.
        user: String,
        /// A comment for the timeline.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
    /// Start work on an assigned (or returned) event.
    Start(ActArgs),
    /// Mark an event in progress as resolved.
    Resolve(ActArgs),
    /// Confirm a resolved event (supervisors).
    Verify(ActArgs),
    /// Close a verified event (supervisors).
    Close(ActArgs),
    /// Reopen a resolved, verified or closed event (supervisors).
    Reopen(ActArgs),
    /// Pass an open event to the parent of its responsible area.
    Escalate(ActArgs),
    /// Send a resolved event back to the assignee (supervisors; a comment is required).
    Return(CommentArgs),
    /// Hand an event down to an area below the responsible one (supervisors).
    HandDown {
        /// The event's id.
        id: String,
        /// The area to hand it to: below the responsible area, containing the event's home.
        #[arg(long, value_name = "AREA")]
        area: String,
        /// A comment for the timeline.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
    /// Add a comment to an event's timeline without changing its status.
    Comment(CommentArgs),
    /// Open events in your scope whose due time has passed, most overdue first.
    Overdue(ListArgs),
    /// Open events assigned to you.
    Mine(ListArgs),
}

/// Every action by its command name, made with placeholder arguments (only the kind matters).
type MakeAction = fn() -> EventAction;

const ALL_ACTIONS: [(&str, MakeAction); 9] = [
    ("assign", || EventAction::Assign {
        assignee: String::new(),
    }),
    ("start", || EventAction::Start),
    ("resolve", || EventAction::Resolve),
    ("verify", || EventAction::Verify),
    ("close", || EventAction::Close),
    ("return", || EventAction::Return),
    ("reopen", || EventAction::Reopen),
    ("escalate", || EventAction::Escalate),
    ("hand-down", || EventAction::HandDown {
        area: String::new(),
    }),
];

/// What the lifecycle allows from a status, for error messages.
fn allowed_from(status: EventStatus) -> Vec<&'static str> {
    ALL_ACTIONS
        .iter()
        .filter(|(_, make)| make().next_status(status).is_some())
        .map(|(name, _)| *name)
        .collect()
}

fn transition(ctx: &Ctx, id: &str, action: EventAction, comment: Option<&str>) -> CliResult<()> {
    let before = ctx.store.get(id)?;
    if before.kind != Kind::Event {
        return Err(CliError::user(format!(
            "record {id} is a {}, not an event",
            before.kind
        )));
    }
    let from = before.field("status").unwrap_or("").to_owned();
    let next = ctx
        .store
        .transition(id, action, comment)
        .map_err(|e| match e {
            Error::InvalidTransition { .. } => {
                let allowed = EventStatus::parse(&from)
                    .map(allowed_from)
                    .unwrap_or_default();
                let mut allowed = allowed;
                allowed.push("comment");
                CliError::user(format!(
                    "{e}; from `{from}` you can: {}",
                    allowed.join(", ")
                ))
            }
            e => e.into(),
        })?;
    let after = ctx.store.get(id)?;
    let value = serde_json::json!({
        "id": id,
        "from": from,
        "status": next,
        "assignee": after.field("assignee"),
        "responsible": after.responsible,
    });
    ctx.print(&value, || {
        let mut line = if from == next.as_str() {
            format!("event {id}: {next}")
        } else {
            format!("event {id}: {from} → {next}")
        };
        if let Some(a) = after.field("assignee") {
            line.push_str(&format!("  (assignee {a})"));
        }
        if let Some(r) = &after.responsible {
            if before.responsible.as_ref() != Some(r) {
                line.push_str(&format!("  (now handled by area {r})"));
            }
        }
        line
    });
    Ok(())
}

pub fn run(ctx: &Ctx, cmd: &EventCommand) -> CliResult<()> {
    match cmd {
        EventCommand::Assign { id, user, comment } => transition(
            ctx,
            id,
            EventAction::Assign {
                assignee: user.clone(),
            },
            comment.as_deref(),
        ),
        EventCommand::Start(a) => transition(ctx, &a.id, EventAction::Start, a.comment.as_deref()),
        EventCommand::Resolve(a) => {
            transition(ctx, &a.id, EventAction::Resolve, a.comment.as_deref())
        }
        EventCommand::Verify(a) => {
            transition(ctx, &a.id, EventAction::Verify, a.comment.as_deref())
        }
        EventCommand::Close(a) => transition(ctx, &a.id, EventAction::Close, a.comment.as_deref()),
        EventCommand::Reopen(a) => {
            transition(ctx, &a.id, EventAction::Reopen, a.comment.as_deref())
        }
        EventCommand::Escalate(a) => {
            transition(ctx, &a.id, EventAction::Escalate, a.comment.as_deref())
        }
        EventCommand::Return(a) => transition(ctx, &a.id, EventAction::Return, Some(&a.comment)),
        EventCommand::HandDown { id, area, comment } => transition(
            ctx,
            id,
            EventAction::HandDown { area: area.clone() },
            comment.as_deref(),
        ),
        EventCommand::Comment(a) => transition(ctx, &a.id, EventAction::Comment, Some(&a.comment)),
        EventCommand::Overdue(a) => {
            let items = ctx.store.overdue_events(a.limit)?;
            print_events(ctx, &items, "no overdue events", "overdue")
        }
        EventCommand::Mine(a) => {
            let items = ctx.store.assigned_to_me(a.limit)?;
            print_events(
                ctx,
                &items,
                "no open events assigned to you",
                "assigned to you",
            )
        }
    }
}

fn print_events(
    ctx: &Ctx,
    items: &[gridwork_core::RecordSummary],
    empty: &str,
    what: &str,
) -> CliResult<()> {
    ctx.print(&items, || {
        if items.is_empty() {
            return empty.to_owned();
        }
        format!(
            "{}\n{} {what}\n",
            output::summary_table(Kind::Event, items, false).render(),
            count(items.len(), "event")
        )
    });
    Ok(())
}
