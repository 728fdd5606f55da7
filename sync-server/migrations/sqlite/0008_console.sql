-- Gridwork relay schema, version 8 (SQLite): the web console. A web account is a user's password for the
-- console (an argon2id hash in PHC format); a session is a random token (its SHA-256 here) with the CSRF
-- token its forms carry and an expiry; the audit trail keeps every console action: who, what, on what
-- record or area, and how it ended (never a value of a record).
CREATE TABLE web_accounts (
    user_id       TEXT PRIMARY KEY REFERENCES users (id),
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE web_sessions (
    token_hash BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
CREATE TABLE console_audit (
    seq     INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    outcome TEXT NOT NULL
);
-- An area's boundary for the console's map (GeoJSON geometry, a MultiPolygon, checked before it is
-- stored). Not a foreign key: removing an area leaves its boundary unused, never blocks the removal.
CREATE TABLE area_shapes (
    area    TEXT PRIMARY KEY,
    geojson TEXT NOT NULL
);
