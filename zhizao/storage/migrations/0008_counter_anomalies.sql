-- Counter anomalies (issue 9): increments the edge did not count because they were
-- implausible (edge/counters.py). Each arrives as a device_event named
-- counter_anomaly.good or counter_anomaly.reject whose value holds the increment and
-- why it was refused; this table gives it an id a person can name, and keeps the
-- decision: accepted (the increment went into production_count) or dropped. Nothing
-- is deleted, so what was decided, by whom and when stays visible.
CREATE TABLE counter_anomaly (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id  integer NOT NULL,
    time       timestamptz NOT NULL,
    counter    smallint NOT NULL CHECK (counter IN (0, 1)),  -- 0 good, 1 reject
    decision   text CHECK (decision IN ('accepted', 'dropped')),
    quantity   integer CHECK (quantity >= 0),  -- accepted: what went into production_count
    decided_by text,
    decided_at timestamptz,
    note       text,
    UNIQUE (device_id, counter, time),
    CHECK ((decision IS NULL) = (decided_at IS NULL)),
    CHECK ((decision = 'accepted') = (quantity IS NOT NULL))
);
CREATE INDEX counter_anomaly_pending_idx ON counter_anomaly (device_id, time)
    WHERE decision IS NULL;

-- One statement per insert statement (ingest writes events in batches); only the rows
-- named as anomalies are looked at. A replayed event inserts nothing into device_event,
-- so it adds nothing here either.
CREATE FUNCTION counter_anomaly_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO counter_anomaly (device_id, time, counter)
    SELECT n.device_id, n.time, CASE n.name WHEN 'counter_anomaly.good' THEN 0 ELSE 1 END
    FROM new_rows n
    WHERE n.name IN ('counter_anomaly.good', 'counter_anomaly.reject')
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER device_event_counter_anomaly AFTER INSERT ON device_event
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION counter_anomaly_note();
