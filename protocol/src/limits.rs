//! Limits that the device and the relay share. A device refuses to make what the relay would refuse,
//! so an honest user learns at once that an edit is too large instead of after a sync. Every limit is far
//! above what an honest device produces; the relay makes its own copy configurable (`Limits`), with these
//! as defaults.

/// Largest attachment (a phone photo or a scanned form with room to spare).
pub const MAX_ATTACHMENT_BYTES: u64 = 32 * 1024 * 1024;
/// Attachments are uploaded and downloaded in chunks of at most this many bytes.
pub const ATTACHMENT_CHUNK_BYTES: usize = 1024 * 1024;
/// Largest change, once inflated (an Automerge change may be deflate-compressed on the wire).
/// The largest honest change is a new record with 64 KiB of notes.
pub const MAX_CHANGE_BYTES: usize = 1024 * 1024;
/// Most operations in one change: 64 KiB of notes typed at once is ~65,000 text operations.
pub const MAX_OPS_PER_CHANGE: u64 = 100_000;
/// Most operations in one push, all changes together.
pub const MAX_OPS_PER_PUSH: u64 = 250_000;
/// Most changes in one push.
pub const MAX_CHANGES_PER_PUSH: usize = 1_000;
/// Most operations one record's document may hold: years of daily edits of an event fit many times.
pub const MAX_DOC_OPS: u64 = 2_000_000;
/// Largest request body (push, attachment chunk).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Pull and snapshot pages stop adding records once they carry this many bytes (at least one
/// record is always sent, and a record never exceeds `MAX_DOC_OPS`).
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Most records or changes in one pull or snapshot page.
pub const MAX_PAGE_ITEMS: usize = 5_000;
