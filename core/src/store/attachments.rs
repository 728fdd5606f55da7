//! Attachments (photos, documents): content-addressed by SHA-256, kept inside the encrypted store,
//! uploaded by the sync client and downloaded on demand.
use super::Store;
use crate::error::{Error, Result};
use crate::limits::MAX_ATTACHMENT_BYTES;
use crate::model::AttachmentRef;
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

impl Store {
    /// Stores bytes as an attachment of a record and returns its reference. The same bytes stored twice
    /// are kept once.
    pub fn add_attachment(
        &self,
        record_id: &str,
        name: &str,
        mime: &str,
        bytes: &[u8],
    ) -> Result<AttachmentRef> {
        // The relay's limit, from the protocol crate: the device refuses what the relay would.
        if bytes.len() as u64 > MAX_ATTACHMENT_BYTES {
            return Err(Error::InvalidInput(format!(
                "attachment larger than {MAX_ATTACHMENT_BYTES} bytes"
            )));
        }
        if name.len() > 256 || mime.len() > 128 || name.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "attachment name or type too long or not text".into(),
            ));
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        let inner = self.lock();
        inner.conn.execute(
            "INSERT INTO attachments (sha256, size, mime, data, record_id, uploaded) VALUES (?1, ?2, ?3, ?4, ?5, 0)
             ON CONFLICT (sha256) DO UPDATE SET data = COALESCE(data, ?4)",
            params![sha256, bytes.len() as i64, mime, bytes, record_id],
        )?;
        Ok(AttachmentRef {
            sha256,
            name: name.to_owned(),
            mime: mime.to_owned(),
            size: bytes.len() as u64,
        })
    }

    /// The bytes of an attachment, if they are on this device.
    pub fn attachment(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        let inner = self.lock();
        let data: Option<Option<Vec<u8>>> = inner
            .conn
            .query_row(
                "SELECT data FROM attachments WHERE sha256 = ?1",
                [sha256],
                |r| r.get(0),
            )
            .optional()?;
        Ok(data.flatten())
    }

    /// Attachments stored here and not yet uploaded: (sha256, record id, bytes).
    pub fn pending_uploads(&self) -> Result<Vec<(String, String, Vec<u8>)>> {
        let inner = self.lock();
        let mut stmt = inner.conn.prepare(
            "SELECT sha256, record_id, data FROM attachments WHERE uploaded = 0 AND data IS NOT NULL ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn mark_uploaded(&self, sha256: &str) -> Result<()> {
        self.lock().conn.execute(
            "UPDATE attachments SET uploaded = 1 WHERE sha256 = ?1",
            [sha256],
        )?;
        Ok(())
    }

    /// Keeps downloaded bytes, after checking they are what their hash says.
    pub fn store_downloaded(
        &self,
        record_id: &str,
        sha256: &str,
        mime: &str,
        bytes: &[u8],
    ) -> Result<()> {
        if hex::encode(Sha256::digest(bytes)) != sha256 {
            return Err(Error::AttachmentMissing(format!(
                "{sha256} (downloaded bytes do not match the hash)"
            )));
        }
        self.lock().conn.execute(
            "INSERT INTO attachments (sha256, size, mime, data, record_id, uploaded) VALUES (?1, ?2, ?3, ?4, ?5, 1)
             ON CONFLICT (sha256) DO UPDATE SET data = ?4, uploaded = 1",
            params![sha256, bytes.len() as i64, mime, bytes, record_id],
        )?;
        Ok(())
    }
}
