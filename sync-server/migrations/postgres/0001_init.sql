-- Gridwork relay schema, version 1 (PostgreSQL).
CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta (key, value) VALUES ('areas_version', 0);

-- One row: the last seq handed out. Push transactions lock it first, so seqs are assigned in commit
-- order and a reader never sees seq N+1 before seq N.
CREATE TABLE log_head (id INT PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL);
INSERT INTO log_head (id, seq) VALUES (1, 0);

CREATE TABLE areas (
    id     TEXT PRIMARY KEY,
    parent TEXT REFERENCES areas(id),
    level  BIGINT NOT NULL,
    name   TEXT NOT NULL,
    path   TEXT NOT NULL UNIQUE
);

CREATE TABLE users (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    area TEXT NOT NULL REFERENCES areas(id)
);

CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    token_hash   BYTEA NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_sync_at BIGINT
);

CREATE TABLE changes (
    seq          BIGINT PRIMARY KEY,
    hash         BYTEA NOT NULL UNIQUE,
    record       TEXT NOT NULL,
    bytes        BYTEA NOT NULL,
    kind         SMALLINT NOT NULL,
    before_paths TEXT,
    heads        BYTEA
);

CREATE TABLE entry_areas (
    key TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (key, seq)
);

CREATE TABLE records (
    id      TEXT COLLATE "C" PRIMARY KEY,
    doc     BYTEA NOT NULL,
    version BIGINT NOT NULL,
    paths   TEXT NOT NULL
);

CREATE TABLE record_scope (
    key    TEXT COLLATE "C" NOT NULL,
    record TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (key, record)
);
CREATE INDEX record_scope_record ON record_scope (record);

CREATE TABLE held (
    hash   BYTEA PRIMARY KEY,
    record TEXT NOT NULL,
    bytes  BYTEA NOT NULL
);
CREATE INDEX held_record ON held (record);

CREATE TABLE attachments (
    sha256   BYTEA PRIMARY KEY,
    total    BIGINT NOT NULL,
    received BIGINT NOT NULL,
    complete BOOLEAN NOT NULL
);
CREATE TABLE attachment_chunks (
    sha256 BYTEA NOT NULL,
    "offset" BIGINT NOT NULL,
    data   BYTEA NOT NULL,
    PRIMARY KEY (sha256, "offset")
);
CREATE TABLE attachment_records (
    sha256 BYTEA NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (sha256, record)
);
