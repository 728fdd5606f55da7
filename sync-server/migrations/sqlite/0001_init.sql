-- Gridwork relay schema, version 1 (SQLite).
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('areas_version', 0);

CREATE TABLE areas (
    id     TEXT PRIMARY KEY,
    parent TEXT REFERENCES areas(id),
    level  INTEGER NOT NULL,
    name   TEXT NOT NULL,
    path   TEXT NOT NULL UNIQUE
);

CREATE TABLE users (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    role    TEXT NOT NULL,
    area    TEXT NOT NULL REFERENCES areas(id)
);

CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    token_hash   BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    last_sync_at INTEGER
);

-- The append-only log. kind/before_paths/heads drive whole-document delivery (see engine.rs).
CREATE TABLE changes (
    seq          INTEGER PRIMARY KEY,
    hash         BLOB NOT NULL UNIQUE,
    record       TEXT NOT NULL,
    bytes        BLOB NOT NULL,
    kind         INTEGER NOT NULL,
    before_paths TEXT,
    heads        BLOB
);

-- Scope index of the log: every ancestor prefix of the record's area paths before and after the entry.
CREATE TABLE entry_areas (
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (key, seq)
) WITHOUT ROWID;

-- The relay's copy of each record.
CREATE TABLE records (
    id      TEXT PRIMARY KEY,
    doc     BLOB NOT NULL,
    version INTEGER NOT NULL,
    paths   TEXT NOT NULL
);

-- Scope index of the current records (snapshot).
CREATE TABLE record_scope (
    key    TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (key, record)
) WITHOUT ROWID;
CREATE INDEX record_scope_record ON record_scope (record);

-- Changes whose dependencies have not arrived yet.
CREATE TABLE held (
    hash   BLOB PRIMARY KEY,
    record TEXT NOT NULL,
    bytes  BLOB NOT NULL
);
CREATE INDEX held_record ON held (record);

CREATE TABLE attachments (
    sha256   BLOB PRIMARY KEY,
    total    INTEGER NOT NULL,
    received INTEGER NOT NULL,
    complete INTEGER NOT NULL
);
CREATE TABLE attachment_chunks (
    sha256 BLOB NOT NULL,
    offset INTEGER NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (sha256, offset)
);
CREATE TABLE attachment_records (
    sha256 BLOB NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (sha256, record)
);
