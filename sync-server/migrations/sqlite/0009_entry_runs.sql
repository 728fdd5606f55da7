-- Gridwork relay schema, version 9 (SQLite): the log's scope index keeps runs of seqs instead of one row
-- per seq and key. A run (key, first..=last) says that every entry from seq `first` to seq `last` is in
-- scope under `key`; the runs of one key never overlap. A push of many changes to one grid is a few
-- runs (one per ancestor key) instead of four rows per change.
CREATE TABLE entry_runs (
    key   TEXT NOT NULL,
    last  INTEGER NOT NULL,
    first INTEGER NOT NULL,
    PRIMARY KEY (key, last)
) WITHOUT ROWID;

-- Consecutive seqs of one key form one run (gaps and islands: seq - its rank is constant in a run).
INSERT INTO entry_runs (key, last, first)
    SELECT key, max(seq), min(seq)
    FROM (SELECT key, seq, seq - row_number() OVER (PARTITION BY key ORDER BY seq) AS island
          FROM entry_areas)
    GROUP BY key, island;

DROP TABLE entry_areas;
