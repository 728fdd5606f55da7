-- Gridwork relay schema, version 4 (PostgreSQL): attachments are uploaded in per-device sessions.
-- A partial upload belongs to the device that started it: another device uploading the same content
-- gets its own session, so nobody can finish, spoil or read someone else's upload. Only a complete,
-- verified content is stored as the attachment (once, whoever uploaded it), and only the session that
-- proved it holds the content links it to a record.
--
-- Partial uploads of older relays belong to no device: they are dropped, with the record links made
-- by their chunks (those devices upload them again from the start: HEAD answers 404).
DELETE FROM attachment_chunks WHERE sha256 IN (SELECT sha256 FROM attachments WHERE NOT complete);
DELETE FROM attachment_records WHERE sha256 NOT IN (SELECT sha256 FROM attachments WHERE complete);
DELETE FROM attachments WHERE NOT complete;
ALTER TABLE attachments DROP COLUMN received;
ALTER TABLE attachments DROP COLUMN complete;
ALTER TABLE attachments RENAME COLUMN total TO size;

CREATE TABLE upload_sessions (
    device     TEXT NOT NULL REFERENCES devices(id),
    sha256     BYTEA NOT NULL,
    record     TEXT NOT NULL,
    total      BIGINT NOT NULL,
    received   BIGINT NOT NULL,
    used_ms     BIGINT NOT NULL,
    PRIMARY KEY (device, sha256)
);
-- Pieces of at most 1 MiB, in order: hashing and moving them never needs a whole attachment in memory.
CREATE TABLE upload_chunks (
    device   TEXT NOT NULL,
    sha256   BYTEA NOT NULL,
    "offset" BIGINT NOT NULL,
    data     BYTEA NOT NULL,
    PRIMARY KEY (device, sha256, "offset")
);
