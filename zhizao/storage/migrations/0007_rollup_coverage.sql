-- KPIs follow the data (issue 9, points 10 and 11): every device keeps complete hour
-- rollups from the first local day it has data or is in service (bounded by a horizon),
-- and a ledger change marks the rollups it affects, whoever writes the ledger.
-- docs/kpi.md §6 explains the rules.

-- A mark may cover a range of hours [hour, hour_end) instead of one hour: a ledger
-- change concerns a device's whole history (its ideal cycle time) or the days between
-- two service dates, and one row per device says so without one row per hour.
-- '-infinity' / 'infinity' are open bounds; the rollup job clips them to the hours the
-- device has (or must have) rows for.
ALTER TABLE rollup_dirty ADD COLUMN hour_end timestamptz;

-- What the job has made complete for each device: every hour from covered_from up to the
-- job's watermark has a row (within the device's service). first_data is the earliest hour
-- the job has seen a fact for: a device's rollups reach back to that local day.
CREATE TABLE rollup_coverage (
    device_id    integer PRIMARY KEY REFERENCES device (id) ON DELETE CASCADE,
    covered_from timestamptz NOT NULL,
    first_data   timestamptz
);

-- Local midnight of a day in a zone, with open bounds for a missing date.
CREATE FUNCTION rollup_local_midnight(d date, zone text, open_bound timestamptz)
RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN d IS NULL THEN open_bound ELSE (d::timestamp AT TIME ZONE zone) END
$$;

-- A device row changed. The flags is_nc, is_production_equipment and key_process are
-- not part of any rollup row (the queries read them from the ledger as they are now), so
-- they need no recomputation; everything a rollup row is computed from does.
CREATE FUNCTION rollup_note_device() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_zone text;
    new_zone text;
BEGIN
    SELECT time_zone INTO old_zone FROM enterprise WHERE id = OLD.enterprise_id;
    SELECT time_zone INTO new_zone FROM enterprise WHERE id = NEW.enterprise_id;
    IF OLD.ideal_cycle_time_s IS DISTINCT FROM NEW.ideal_cycle_time_s
       OR OLD.line_id IS DISTINCT FROM NEW.line_id  -- a line may have its own calendar
       OR OLD.enterprise_id IS DISTINCT FROM NEW.enterprise_id
    THEN
        INSERT INTO rollup_dirty (device_id, hour, state_changed, hour_end)
        VALUES (NEW.id, '-infinity', false, 'infinity');
        RETURN NULL;
    END IF;
    -- Service dates: only the days between the old and the new date change (hours
    -- enter or leave service).
    IF OLD.commissioned_on IS DISTINCT FROM NEW.commissioned_on THEN
        INSERT INTO rollup_dirty (device_id, hour, state_changed, hour_end)
        SELECT NEW.id, least(a, b), false, greatest(a, b)
        FROM (SELECT rollup_local_midnight(OLD.commissioned_on, old_zone, '-infinity') AS a,
                     rollup_local_midnight(NEW.commissioned_on, new_zone, '-infinity') AS b) x;
    END IF;
    IF OLD.decommissioned_on IS DISTINCT FROM NEW.decommissioned_on THEN
        INSERT INTO rollup_dirty (device_id, hour, state_changed, hour_end)
        SELECT NEW.id, least(a, b), false, greatest(a, b)
        FROM (SELECT rollup_local_midnight(OLD.decommissioned_on, old_zone, 'infinity') AS a,
                     rollup_local_midnight(NEW.decommissioned_on, new_zone, 'infinity') AS b) x;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER device_rollup AFTER UPDATE ON device
    FOR EACH ROW
    WHEN (OLD.ideal_cycle_time_s IS DISTINCT FROM NEW.ideal_cycle_time_s
          OR OLD.line_id IS DISTINCT FROM NEW.line_id
          OR OLD.enterprise_id IS DISTINCT FROM NEW.enterprise_id
          OR OLD.commissioned_on IS DISTINCT FROM NEW.commissioned_on
          OR OLD.decommissioned_on IS DISTINCT FROM NEW.decommissioned_on)
    EXECUTE FUNCTION rollup_note_device();

-- An enterprise's time zone decides its local days, shift times and service midnights:
-- every hour of every one of its devices.
CREATE FUNCTION rollup_note_enterprise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty (device_id, hour, state_changed, hour_end)
    SELECT d.id, '-infinity', false, 'infinity' FROM device d WHERE d.enterprise_id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER enterprise_rollup AFTER UPDATE OF time_zone ON enterprise
    FOR EACH ROW WHEN (OLD.time_zone IS DISTINCT FROM NEW.time_zone)
    EXECUTE FUNCTION rollup_note_enterprise();
