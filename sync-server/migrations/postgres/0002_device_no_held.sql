-- Gridwork relay schema, version 2 (PostgreSQL).
-- The device that pushed each log entry: a pull skips the caller's own plain changes (it has them).
ALTER TABLE changes ADD COLUMN device TEXT;
-- Held changes are gone: a change whose dependencies the relay does not have is rejected
-- `missing_deps` (see docs/protocol.md, "Relay notes"). Changes held by an older relay are dropped.
DROP TABLE held;
