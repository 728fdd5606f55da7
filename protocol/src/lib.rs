//! gridwork-protocol: what a Gridwork device and the relay must agree on, written once.
//!
//! - [`model`]: record kinds and their fields, roles, area levels and the area-tree rule, events and
//!   visits, the calendar;
//! - [`doc`]: the layout of a record's Automerge document and the record view read from it;
//! - [`scope`]: area paths and who sees what;
//! - [`rules`]: the rule book, "may this actor turn this record state into that one?", evaluated by the
//!   device before it writes (for the user's convenience) and by the relay on every pushed change (for
//!   security);
//! - [`change`]: bounded inspection of raw change bytes (checksum, inflated size, operation counts)
//!   before anything trusts them;
//! - [`limits`]: sizes both sides enforce;
//! - [`wire`]: the JSON bodies of the HTTP API.
//!
//! Pure: no I/O, no clock except where a function says so, no global state.
pub mod at_heads;
pub mod change;
pub mod doc;
pub mod duplicates;
pub mod error;
pub mod export;
pub mod limits;
pub mod model;
pub mod rules;
pub mod scope;
pub mod stats;
pub mod wire;

pub use error::Invalid;
pub use model::*;
