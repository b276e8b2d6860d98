-- The software an edge reports in its birth (and Will) message, so the platform can
-- say which edge build is running where (API: edge status). Nullable without a
-- default: older edges send none, and TimescaleDB adds such a column to a compressed
-- hypertable without rewriting it.
ALTER TABLE edge_status ADD COLUMN software text;
