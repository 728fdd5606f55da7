-- Gridwork relay schema, version 6: follow-up schedules an operator defines per area (each applies to
-- the area's subtree). `definition` is the schedule as devices receive it (JSON of
-- gridwork_protocol::Schedule, checked before it is stored); a change of the schedules moves the
-- area tree's version on, so every relay's cached answers for /v1/me and /v1/schedules refresh.
CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    area TEXT NOT NULL REFERENCES areas (id),
    definition TEXT NOT NULL
);
CREATE INDEX schedules_area ON schedules (area);
