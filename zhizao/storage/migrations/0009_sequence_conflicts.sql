-- Issue 10: a sequence number re-sent with other content is a conflict, not a replay.
-- An edge re-sends a batch with the bytes it sent first, so a digest of the bytes per
-- (edge, seq) tells the two apart. Kept for sequence_digest_retention_s (ingest
-- settings, longer than the edges' spool age); beyond that a number re-sent is
-- taken as a replay. received_at only grows, so a BRIN index serves the pruning.
CREATE TABLE sequence_digest (
    edge_pk     integer NOT NULL REFERENCES edge_gateway (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    digest      bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (edge_pk, seq)
);
CREATE INDEX sequence_digest_age_idx ON sequence_digest USING brin (received_at);

ALTER TABLE sequence_event DROP CONSTRAINT sequence_event_kind_check;
ALTER TABLE sequence_event ADD CONSTRAINT sequence_event_kind_check
    CHECK (kind IN ('gap', 'late', 'replay', 'conflict'));
