-- Ingest bookkeeping (issue 4): per-edge sequence tracking, so an operator can see
-- whether anything was lost between edge and platform.

-- The highest sequence number received from each edge. Updated in the same
-- transaction as the facts of the batch, under a row lock, so concurrent workers on
-- a shared subscription agree on it.
CREATE TABLE edge_sequence (
    edge_pk    integer PRIMARY KEY REFERENCES edge_gateway (id) ON DELETE CASCADE,
    high_seq   bigint NOT NULL,
    messages   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Ranges of sequence numbers that are still missing. A late message inside a range
-- shrinks or splits it; what remains is what the platform never received.
CREATE TABLE sequence_gap (
    edge_pk     integer NOT NULL REFERENCES edge_gateway (id) ON DELETE CASCADE,
    first_seq   bigint NOT NULL,
    last_seq    bigint NOT NULL CHECK (last_seq >= first_seq),
    detected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (edge_pk, first_seq)
);

-- History of what the tracker saw: gaps opened, late arrivals that filled them,
-- and replays (a sequence number received again: broker redelivery or edge resend).
CREATE TABLE sequence_event (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    edge_pk     integer NOT NULL REFERENCES edge_gateway (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('gap', 'late', 'replay')),
    first_seq   bigint NOT NULL,
    last_seq    bigint NOT NULL CHECK (last_seq >= first_seq),
    detected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sequence_event_edge_idx ON sequence_event (edge_pk, detected_at);

-- Listing dead letters by reason and by edge is what operators do after a ledger fix.
CREATE INDEX dead_letter_edge_idx ON dead_letter (enterprise, edge_id) WHERE replayed_at IS NULL;
