-- Gridwork relay schema, version 3 (PostgreSQL): identity comes from the token.
-- The store a device token is bound to: its Automerge actor (hex), set by the first store that registers
-- (POST /v1/me). Changes pushed with the token must be made by that actor.
ALTER TABLE devices ADD COLUMN actor TEXT;
-- A disabled user's devices are refused (401 `disabled`) and wipe their stores on that contact.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
CREATE INDEX devices_user ON devices (user_id);
