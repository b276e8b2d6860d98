-- KPI engine (issue 5): shift calendars, the OEE components the rollups need, and the
-- bookkeeping that makes rollups incremental. docs/kpi.md explains every column.

-- Shift calendars per enterprise, optionally per line (zhizao/calendar.py). The
-- definition is the validated calendar as JSON: it is read whole, never queried by part.
CREATE TABLE shift_calendar (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    enterprise_id integer NOT NULL REFERENCES enterprise (id) ON DELETE CASCADE,
    line_id       integer REFERENCES line (id) ON DELETE CASCADE,
    name          text NOT NULL,
    definition    jsonb NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- One calendar per enterprise and one per line (NULLS NOT DISTINCT needs PostgreSQL 15).
CREATE UNIQUE INDEX shift_calendar_scope_idx ON shift_calendar (enterprise_id, coalesce(line_id, 0));

-- The components of OEE (zhizao/oee.py): the existing *_s columns stay wall-clock time per
-- state; sched_* are the parts inside scheduled time; overtime_running_s is RUNNING outside it.
ALTER TABLE rollup_device_hour
    ADD COLUMN scheduled_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN sched_running_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN sched_idle_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN sched_setup_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN sched_unplanned_stop_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN sched_planned_stop_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN sched_offline_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN overtime_running_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN micro_idle_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN micro_unplanned_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN ideal_good_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN unrated_running_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN good_points bigint NOT NULL DEFAULT 0,
    ADD COLUMN online_reported boolean NOT NULL DEFAULT false,
    ADD COLUMN last_good timestamptz;

ALTER TABLE rollup_device_day
    ADD COLUMN scheduled_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN sched_running_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN sched_idle_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN sched_setup_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN sched_unplanned_stop_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN sched_planned_stop_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN sched_offline_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN overtime_running_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN micro_idle_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN micro_unplanned_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN ideal_good_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN unrated_running_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN last_good timestamptz;

-- Both tables below are append-only for the writers, without a unique key: an insert
-- never waits for another transaction's row lock, so concurrent ingest workers writing
-- the same devices never block or deadlock on them, and a mark becomes visible exactly
-- when the facts inserted with it do. The rollup job consumes the marks and compacts
-- the tally.

-- Points received per device and UTC hour, counted by the statement triggers below from
-- the rows actually inserted (a replayed batch inserts nothing, so counts nothing). Several
-- rows per (device, hour) until the job compacts them: readers aggregate.
CREATE TABLE device_hour_tally (
    device_id   integer NOT NULL,
    hour        timestamptz NOT NULL,
    points      bigint NOT NULL DEFAULT 0,
    good_points bigint NOT NULL DEFAULT 0,
    first_seen  timestamptz,
    last_seen   timestamptz,
    last_good   timestamptz
);
CREATE INDEX device_hour_tally_device_hour_idx ON device_hour_tally (device_id, hour);

-- The watermark of what has been ingested: (device, hour) buckets whose facts changed
-- since the rollup job last looked. state_changed: a state or connectivity change, whose
-- effect lasts until the next change, so later hours are recomputed too.
CREATE TABLE rollup_dirty (
    device_id     integer NOT NULL,
    hour          timestamptz NOT NULL,
    state_changed boolean NOT NULL DEFAULT false
);
CREATE INDEX rollup_dirty_device_hour_idx ON rollup_dirty (device_id, hour);

-- How far the rollups have been carried for every device (one row).
CREATE TABLE rollup_watermark (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    computed_until timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Statement-level triggers with transition tables: one aggregate statement per insert
-- statement, not one per row (ingest writes thousands of rows per statement). The SQL is
-- repeated in each function because a transition table is visible only in its trigger's
-- own function; passing it on as arrays cost five times as much (docs/benchmarks.md).

CREATE FUNCTION rollup_note_metric() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO device_hour_tally (device_id, hour, points, good_points, first_seen,
                                   last_seen, last_good)
    SELECT n.device_id, date_bin('1 hour', n.time, timestamptz '1970-01-01 00:00:00+00'), count(*),
           count(*) FILTER (WHERE n.quality = 0), min(n.time), max(n.time),
           max(n.time) FILTER (WHERE n.quality = 0)
    FROM new_rows n GROUP BY 1, 2;
    INSERT INTO rollup_dirty (device_id, hour, state_changed)
    SELECT DISTINCT n.device_id, date_bin('1 hour', n.time, timestamptz '1970-01-01 00:00:00+00'), false
    FROM new_rows n;
    RETURN NULL;
END $$;

CREATE FUNCTION rollup_note_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO device_hour_tally (device_id, hour, points, good_points, first_seen,
                                   last_seen, last_good)
    SELECT n.device_id, date_bin('1 hour', n.time, timestamptz '1970-01-01 00:00:00+00'), count(*),
           count(*) FILTER (WHERE n.quality = 0), min(n.time), max(n.time),
           max(n.time) FILTER (WHERE n.quality = 0)
    FROM new_rows n GROUP BY 1, 2;
    INSERT INTO rollup_dirty (device_id, hour, state_changed)
    SELECT DISTINCT n.device_id, date_bin('1 hour', n.time, timestamptz '1970-01-01 00:00:00+00'), true
    FROM new_rows n;
    RETURN NULL;
END $$;

-- Counts and device events carry no quality: they are good points.
CREATE FUNCTION rollup_note_good() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO device_hour_tally (device_id, hour, points, good_points, first_seen,
                                   last_seen, last_good)
    SELECT n.device_id, date_bin('1 hour', n.time, timestamptz '1970-01-01 00:00:00+00'), count(*),
           count(*), min(n.time), max(n.time), max(n.time)
    FROM new_rows n GROUP BY 1, 2;
    INSERT INTO rollup_dirty (device_id, hour, state_changed)
    SELECT DISTINCT n.device_id, date_bin('1 hour', n.time, timestamptz '1970-01-01 00:00:00+00'), false
    FROM new_rows n;
    RETURN NULL;
END $$;

-- Connectivity is not a point of the device, but it changes its state (offline) and
-- whether it reported online that day.
CREATE FUNCTION rollup_note_connectivity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty (device_id, hour, state_changed)
    SELECT DISTINCT n.device_id, date_bin('1 hour', n.time, timestamptz '1970-01-01 00:00:00+00'), true
    FROM new_rows n;
    RETURN NULL;
END $$;

-- An edge's death takes every device it serves offline.
CREATE FUNCTION rollup_note_edge() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty (device_id, hour, state_changed)
    SELECT DISTINCT ed.device_id, date_bin('1 hour', n.time, timestamptz '1970-01-01 00:00:00+00'), true
    FROM new_rows n JOIN edge_device ed ON ed.edge_pk = n.edge_pk;
    RETURN NULL;
END $$;

CREATE TRIGGER metric_point_rollup AFTER INSERT ON metric_point
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_note_metric();
CREATE TRIGGER state_change_rollup AFTER INSERT ON state_change
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_note_state();
CREATE TRIGGER production_count_rollup AFTER INSERT ON production_count
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_note_good();
CREATE TRIGGER device_event_rollup AFTER INSERT ON device_event
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_note_good();
CREATE TRIGGER device_connectivity_rollup AFTER INSERT ON device_connectivity
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION rollup_note_connectivity();
CREATE TRIGGER edge_status_rollup AFTER INSERT ON edge_status
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_note_edge();

-- Networking queries count the networked device-days of a period over a whole province:
-- an index of just those rows lets them do so with an index-only scan.
CREATE INDEX rollup_device_day_networked_idx ON rollup_device_day (day, device_id)
    WHERE good_points > 0 OR online_reported;
DROP INDEX rollup_device_day_day_idx;
