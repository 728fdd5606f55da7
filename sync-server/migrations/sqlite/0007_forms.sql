-- Gridwork relay schema, version 7: city forms an operator defines per record kind and area (each applies
-- to the area's subtree). `definition` is the form as devices receive it (JSON of gridwork_protocol::Form,
-- checked before it is stored); like a schedule, a change of the forms moves the area tree's version on,
-- so every relay reloads the forms its rule book checks attribute values by, and devices fetch them again.
CREATE TABLE forms (
    id TEXT PRIMARY KEY,
    area TEXT NOT NULL REFERENCES areas (id),
    definition TEXT NOT NULL
);
CREATE INDEX forms_area ON forms (area);
