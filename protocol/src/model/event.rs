//! The event lifecycle: reported > assigned > in progress > resolved > verified > closed, with
//! returned and reopened. Who may do what is decided in the store, which knows the actor's scope.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Reported,
    Assigned,
    InProgress,
    Resolved,
    Verified,
    Closed,
    Returned,
    Reopened,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Reported => "reported",
            EventStatus::Assigned => "assigned",
            EventStatus::InProgress => "in_progress",
            EventStatus::Resolved => "resolved",
            EventStatus::Verified => "verified",
            EventStatus::Closed => "closed",
            EventStatus::Returned => "returned",
            EventStatus::Reopened => "reopened",
        }
    }
    pub fn parse(s: &str) -> Option<EventStatus> {
        Some(match s {
            "reported" => EventStatus::Reported,
            "assigned" => EventStatus::Assigned,
            "in_progress" => EventStatus::InProgress,
            "resolved" => EventStatus::Resolved,
            "verified" => EventStatus::Verified,
            "closed" => EventStatus::Closed,
            "returned" => EventStatus::Returned,
            "reopened" => EventStatus::Reopened,
            _ => return None,
        })
    }
    /// Open events count for "overdue" and work lists.
    pub fn is_open(self) -> bool {
        !matches!(self, EventStatus::Verified | EventStatus::Closed)
    }
}

impl std::fmt::Display for EventStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an actor does to an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum EventAction {
    /// Assign (or reassign) to a user.
    Assign {
        assignee: String,
    },
    Start,
    Resolve,
    Verify,
    Close,
    /// Send a resolved event back to the assignee; needs a comment.
    Return,
    Reopen,
    /// Pass the event to the parent of the responsible area.
    Escalate,
    /// Hand the event back down to an area below the responsible one.
    HandDown {
        area: String,
    },
    /// A comment on the timeline without a status change.
    Comment,
}

impl EventAction {
    pub fn name(&self) -> &'static str {
        match self {
            EventAction::Assign { .. } => "assign",
            EventAction::Start => "start",
            EventAction::Resolve => "resolve",
            EventAction::Verify => "verify",
            EventAction::Close => "close",
            EventAction::Return => "return",
            EventAction::Reopen => "reopen",
            EventAction::Escalate => "escalate",
            EventAction::HandDown { .. } => "hand_down",
            EventAction::Comment => "comment",
        }
    }

    /// The status after this action from `from`, or None when the lifecycle forbids it.
    /// Escalating and handing down restart the event at `reported` in its new area.
    pub fn next_status(&self, from: EventStatus) -> Option<EventStatus> {
        use EventStatus::*;
        match (self, from) {
            (EventAction::Assign { .. }, Reported | Assigned | Reopened) => Some(Assigned),
            (EventAction::Start, Assigned | Returned) => Some(InProgress),
            (EventAction::Resolve, InProgress) => Some(Resolved),
            (EventAction::Verify, Resolved) => Some(Verified),
            (EventAction::Return, Resolved) => Some(Returned),
            (EventAction::Close, Verified) => Some(Closed),
            (EventAction::Reopen, Resolved | Verified | Closed) => Some(Reopened),
            (EventAction::Escalate | EventAction::HandDown { .. }, s) if s.is_open() => {
                Some(Reported)
            }
            (EventAction::Comment, s) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_happy_path_and_forbidden_steps() {
        use EventStatus::*;
        let assign = EventAction::Assign {
            assignee: "u".into(),
        };
        assert_eq!(assign.next_status(Reported), Some(Assigned));
        assert_eq!(EventAction::Start.next_status(Assigned), Some(InProgress));
        assert_eq!(EventAction::Resolve.next_status(InProgress), Some(Resolved));
        assert_eq!(EventAction::Verify.next_status(Resolved), Some(Verified));
        assert_eq!(EventAction::Close.next_status(Verified), Some(Closed));
        assert_eq!(EventAction::Close.next_status(Reported), None);
        assert_eq!(EventAction::Resolve.next_status(Assigned), None);
        assert_eq!(EventAction::Escalate.next_status(Closed), None);
        assert_eq!(EventAction::Return.next_status(Resolved), Some(Returned));
        assert_eq!(EventAction::Start.next_status(Returned), Some(InProgress));
        assert_eq!(EventAction::Reopen.next_status(Closed), Some(Reopened));
        assert_eq!(assign.next_status(Reopened), Some(Assigned));
    }
}
