//! Why a value or a field name is refused. Messages name the field and the rule, never the value:
//! values may be personal data.
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Invalid {
    #[error("invalid value for field `{field}`: {reason}")]
    Field { field: String, reason: String },
    #[error("field `{field}` is not a field of a {kind}")]
    UnknownField { kind: String, field: String },
}

impl Invalid {
    pub fn field(field: &str, reason: impl Into<String>) -> Self {
        Invalid::Field {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Invalid> = std::result::Result<T, E>;
