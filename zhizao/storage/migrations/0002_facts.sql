-- Narrow fact tables keyed for idempotency (DESIGN §6). Every unique key includes
-- the time column, so the same keys work for TimescaleDB hypertables, and writes use
-- ON CONFLICT DO NOTHING: a replayed batch changes nothing.

CREATE TYPE state_class AS ENUM
    ('RUNNING', 'IDLE', 'SETUP', 'UNPLANNED_STOP', 'PLANNED_STOP', 'OFFLINE');

-- Metric names are interned: a 4-byte id per row instead of the name.
CREATE TABLE metric_name (
    id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

-- quality: 0 good, 1 uncertain, 2 bad (OPC UA status code class).
CREATE TABLE metric_point (
    device_id integer NOT NULL,
    metric_id integer NOT NULL,
    time      timestamptz NOT NULL,
    value     double precision NOT NULL,
    quality   smallint NOT NULL DEFAULT 0 CHECK (quality BETWEEN 0 AND 2),
    PRIMARY KEY (device_id, metric_id, time)
);

CREATE TABLE state_change (
    device_id integer NOT NULL,
    time      timestamptz NOT NULL,
    state     state_class NOT NULL,
    raw       text,
    reason    text,
    quality   smallint NOT NULL DEFAULT 0 CHECK (quality BETWEEN 0 AND 2),
    PRIMARY KEY (device_id, time)
);

-- One row per counter and instant: good and reject increments arrive as separate
-- points (docs/storage.md explains why this is not one row with two columns).
CREATE TABLE production_count (
    device_id integer NOT NULL,
    time      timestamptz NOT NULL,
    counter   smallint NOT NULL CHECK (counter IN (0, 1)),  -- 0 good, 1 reject
    quantity  integer NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (device_id, counter, time)
);

-- Device connectivity as seen by its edge (OPC UA session up/down, MQTT device silent).
CREATE TABLE device_connectivity (
    device_id integer NOT NULL,
    time      timestamptz NOT NULL,
    online    boolean NOT NULL,
    edge_pk   integer,
    reason    text,
    PRIMARY KEY (device_id, time)
);

-- Edge birth and death messages.
CREATE TABLE edge_status (
    edge_pk  integer NOT NULL,
    time     timestamptz NOT NULL,
    online   boolean NOT NULL,
    reason   text,
    last_seq bigint,
    PRIMARY KEY (edge_pk, time)
);

-- Other device events (alarms, program changes): kept, not used by KPIs yet.
CREATE TABLE device_event (
    device_id integer NOT NULL,
    time      timestamptz NOT NULL,
    name      text NOT NULL,
    value     text NOT NULL,
    PRIMARY KEY (device_id, name, time)
);

-- Rejected payloads and points, with the reason, for inspection and replay.
CREATE TABLE dead_letter (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    enterprise  text,
    edge_id     text,
    seq         bigint,
    point_index integer,
    reason      text NOT NULL,
    payload     bytea NOT NULL,
    replayed_at timestamptz
);
CREATE INDEX dead_letter_pending_idx ON dead_letter (received_at) WHERE replayed_at IS NULL;
