//! gridwork-ffi: the uniffi façade over gridwork-core for Android (Kotlin) and iOS (Swift).
//!
//! The core knows nothing of uniffi. This crate is a thin layer in the style of
//! mozilla/application-services' `components/example`:
//! - [`types`]: uniffi records and enums mirroring the core types (remote derives where the core type
//!   crosses the FFI as it is, mirrors with conversions where it does not, e.g. `BTreeMap` fields);
//! - [`error`]: the one public error enum, [`GridworkError`], mapped from `gridwork_core::Error`;
//! - [`store`]: the [`GridworkStore`] object wrapping `gridwork_core::Store`;
//! - [`sync`]: sync with progress through a foreign trait, cancellable through a handle.
//!
//! Every store call is blocking (SQLite, Automerge): mobile code calls it from a background thread
//! (`Dispatchers.IO` on Android, a `Task`/actor off the main actor on iOS).
uniffi::setup_scaffolding!();

mod asynchronous;
pub mod error;
pub mod store;
pub mod sync;
pub mod types;

pub use error::GridworkError;
pub use store::GridworkStore;
pub use sync::{SyncHandle, SyncObserver};
