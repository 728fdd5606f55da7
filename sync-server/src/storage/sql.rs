//! What the relay's logic asks of a database connection, whatever the backend: a write transaction
//! ([`Transact`]); the primitives of each part of the logic extend it ([`super::writer::WriteSql`],
//! [`super::uploads::UploadSql`]). The SQLite connection answers synchronously, PostgreSQL's over
//! the network; the logic is written once, as async code, for both.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};

pub(crate) trait Transact: Send {
    /// Starts a write transaction (taking the database's write lock where it has one).
    fn begin(&mut self) -> impl Future<Output = Result<()>> + Send;
    fn commit(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Abandons the transaction; a connection that cannot even do that is not reused.
    fn rollback(&mut self) -> impl Future<Output = ()> + Send;
}

/// Runs `f` in a write transaction: committed when it succeeds, rolled back when anything fails.
pub(crate) async fn in_transaction<S: Transact, T>(
    sql: &mut S,
    f: impl AsyncFnOnce(&mut S) -> Result<T>,
) -> Result<T> {
    sql.begin().await?;
    match f(sql).await {
        Ok(v) => match sql.commit().await {
            Ok(()) => Ok(v),
            Err(e) => {
                sql.rollback().await;
                Err(e)
            }
        },
        Err(e) => {
            sql.rollback().await;
            Err(e)
        }
    }
}

/// Runs logic over a synchronous backend (SQLite) to its end on the calling thread: every await in it
/// is ready at once, so one poll finishes it.
pub(crate) fn ready<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => Err(Error::Unavailable(
            "synchronous storage work was suspended".into(),
        )),
    }
}
