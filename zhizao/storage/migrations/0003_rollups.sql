-- Rollups per device and hour and per device and local day (DESIGN §6): the time
-- and count components every KPI is a ratio of. Everything above the device is summed
-- from these rows, never averaged.

CREATE TABLE rollup_device_hour (
    device_id        integer NOT NULL,
    hour             timestamptz NOT NULL,
    running_s        double precision NOT NULL DEFAULT 0,
    idle_s           double precision NOT NULL DEFAULT 0,
    setup_s          double precision NOT NULL DEFAULT 0,
    unplanned_stop_s double precision NOT NULL DEFAULT 0,
    planned_stop_s   double precision NOT NULL DEFAULT 0,
    offline_s        double precision NOT NULL DEFAULT 0,
    good             bigint NOT NULL DEFAULT 0,
    reject           bigint NOT NULL DEFAULT 0,
    ideal_time_s     double precision NOT NULL DEFAULT 0,
    points           bigint NOT NULL DEFAULT 0,
    first_seen       timestamptz,
    last_seen        timestamptz,
    computed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, hour)
);

CREATE TABLE rollup_device_day (
    device_id        integer NOT NULL,
    day              date NOT NULL,  -- the enterprise's local day
    running_s        double precision NOT NULL DEFAULT 0,
    idle_s           double precision NOT NULL DEFAULT 0,
    setup_s          double precision NOT NULL DEFAULT 0,
    unplanned_stop_s double precision NOT NULL DEFAULT 0,
    planned_stop_s   double precision NOT NULL DEFAULT 0,
    offline_s        double precision NOT NULL DEFAULT 0,
    good             bigint NOT NULL DEFAULT 0,
    reject           bigint NOT NULL DEFAULT 0,
    ideal_time_s     double precision NOT NULL DEFAULT 0,
    points           bigint NOT NULL DEFAULT 0,
    good_points      bigint NOT NULL DEFAULT 0,
    online_reported  boolean NOT NULL DEFAULT false,
    first_seen       timestamptz,
    last_seen        timestamptz,
    computed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, day)
);
CREATE INDEX rollup_device_day_day_idx ON rollup_device_day (day);
