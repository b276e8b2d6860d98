-- Grafana dashboards (issue 13, DESIGN §8): Grafana sends the panel's SQL from the
-- browser, so whoever can view a dashboard can rewrite its query. Tenants are kept apart
-- here, in PostgreSQL, not in the dashboard. docs/dashboards.md explains the design.
--
-- PostgreSQL roles belong to the whole server while this schema belongs to one database
-- (tests copy a migrated template into a database per test), so this migration creates no
-- role: it creates what decides what a dashboard role sees. The roles themselves are made
-- by the provisioning (dashboards/roles.py), named from a per-database prefix kept below,
-- and listed in dashboard_role. Everything here is idempotent.

-- The role-name prefix of this database ('zd_' and 8 random hex digits), with the name of
-- the database it was made for: a copy of the database under another name (a test's copy
-- of a template, a restored backup) gets a prefix of its own, never the original's roles.
CREATE TABLE IF NOT EXISTS dashboard_installation (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    database_name text NOT NULL,
    role_prefix   text NOT NULL CHECK (role_prefix ~ '^zd_[0-9a-f]{8}$'),
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Login roles of the dashboards: one per enterprise (its rows only), one for the
-- aggregates (cluster and province dashboards).
CREATE TABLE IF NOT EXISTS dashboard_role (
    role_name     text PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('enterprise', 'aggregate')),
    enterprise_id integer UNIQUE REFERENCES enterprise (id) ON DELETE CASCADE,
    CONSTRAINT dashboard_role_kind_fits CHECK ((kind = 'enterprise') = (enterprise_id IS NOT NULL))
);
REVOKE ALL ON dashboard_installation, dashboard_role FROM PUBLIC;

-- Whether the session is a dashboard's: its login role is listed above, or is a member of
-- one of this database's dashboard group roles. session_user, not current_user: SET ROLE
-- changes current_user, while only a superuser can change session_user (SET SESSION
-- AUTHORIZATION), and no setting a user may SET enters the decision.
CREATE OR REPLACE FUNCTION dashboard_restricted() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT EXISTS (SELECT 1 FROM public.dashboard_role r WHERE r.role_name = session_user)
        OR EXISTS (
            SELECT 1 FROM public.dashboard_installation i
            JOIN pg_catalog.pg_roles g
              ON g.rolname IN (i.role_prefix || '_enterprise', i.role_prefix || '_aggregate')
            WHERE pg_catalog.pg_has_role(session_user, g.oid, 'MEMBER'))
$$;

-- The one enterprise a dashboard session may see (NULL: none).
CREATE OR REPLACE FUNCTION dashboard_enterprise() RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT r.enterprise_id FROM public.dashboard_role r WHERE r.role_name = session_user
$$;

-- Row-level security on the plain tables that belong to an enterprise (the registry and
-- the rollups). A session that is not a dashboard's (the platform's own services, whatever
-- role they use) passes unchanged; a dashboard session sees its enterprise's rows or
-- nothing. The functions are wrapped in scalar subqueries so that each runs once per
-- statement, not once per row.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('enterprise', 'id = (SELECT dashboard_enterprise())'),
        ('enterprise_cluster', 'enterprise_id = (SELECT dashboard_enterprise())'),
        ('site', 'enterprise_id = (SELECT dashboard_enterprise())'),
        ('line', 'enterprise_id = (SELECT dashboard_enterprise())'),
        ('device', 'enterprise_id = (SELECT dashboard_enterprise())'),
        ('shift_calendar', 'enterprise_id = (SELECT dashboard_enterprise())'),
        ('edge_gateway', 'enterprise_id = (SELECT dashboard_enterprise())'),
        ('edge_device', 'edge_pk IN (SELECT g.id FROM edge_gateway g'
                        ' WHERE g.enterprise_id = (SELECT dashboard_enterprise()))'),
        ('device_hour_tally', NULL), ('rollup_device_hour', NULL), ('rollup_device_day', NULL)
    ) AS v(tbl, own)
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t.tbl);
        EXECUTE format('DROP POLICY IF EXISTS dashboard_tenant ON %I', t.tbl);
        EXECUTE format(
            'CREATE POLICY dashboard_tenant ON %I USING ((SELECT NOT dashboard_restricted()) OR %s)',
            t.tbl,
            coalesce(t.own, 'device_id IN (SELECT d.id FROM device d'
                            ' WHERE d.enterprise_id = (SELECT dashboard_enterprise()))'));
    END LOOP;
END $$;

-- The fact tables become TimescaleDB hypertables where the extension is present, and
-- TimescaleDB refuses compression on a table with row-level security and does not give a
-- hypertable's policies to its chunks (whose grants it does copy). So the dashboard roles
-- get no grant on a fact table, and read their enterprise's facts through these views
-- instead: owned by the migrating role, filtered by the session's enterprise, and
-- security_barrier so that a user's function in a WHERE clause only ever sees rows the
-- filter let through.
CREATE OR REPLACE VIEW tenant_metric_point WITH (security_barrier) AS
    SELECT f.* FROM metric_point f
    WHERE f.device_id IN (SELECT d.id FROM device d
                          WHERE d.enterprise_id = (SELECT dashboard_enterprise()));
CREATE OR REPLACE VIEW tenant_state_change WITH (security_barrier) AS
    SELECT f.* FROM state_change f
    WHERE f.device_id IN (SELECT d.id FROM device d
                          WHERE d.enterprise_id = (SELECT dashboard_enterprise()));
CREATE OR REPLACE VIEW tenant_production_count WITH (security_barrier) AS
    SELECT f.* FROM production_count f
    WHERE f.device_id IN (SELECT d.id FROM device d
                          WHERE d.enterprise_id = (SELECT dashboard_enterprise()));
CREATE OR REPLACE VIEW tenant_device_connectivity WITH (security_barrier) AS
    SELECT f.* FROM device_connectivity f
    WHERE f.device_id IN (SELECT d.id FROM device d
                          WHERE d.enterprise_id = (SELECT dashboard_enterprise()));
CREATE OR REPLACE VIEW tenant_device_event WITH (security_barrier) AS
    SELECT f.* FROM device_event f
    WHERE f.device_id IN (SELECT d.id FROM device d
                          WHERE d.enterprise_id = (SELECT dashboard_enterprise()));
CREATE OR REPLACE VIEW tenant_edge_status WITH (security_barrier) AS
    SELECT f.* FROM edge_status f
    WHERE f.edge_pk IN (SELECT g.id FROM edge_gateway g
                        WHERE g.enterprise_id = (SELECT dashboard_enterprise()));
REVOKE ALL ON tenant_metric_point, tenant_state_change, tenant_production_count,
    tenant_device_connectivity, tenant_device_event, tenant_edge_status FROM PUBLIC;

-- Aggregate views for the cluster and province dashboards. Owned by the migrating role
-- (which owns the tables, so row-level security does not apply inside them) and granted
-- to the aggregate group role only: they give enterprise-level sums, never a metric point,
-- a state change or a device. security_barrier: a user's function in a WHERE clause cannot
-- see the rows before the view has aggregated them.

CREATE OR REPLACE VIEW dash_region WITH (security_barrier) AS
    SELECT r.code::text AS code, r.name, r.level, r.parent_code::text AS parent_code
    FROM region r;

CREATE OR REPLACE VIEW dash_cluster WITH (security_barrier) AS
    SELECT c.code, c.name, c.region_code::text AS region_code, c.industry_code
    FROM cluster c;

CREATE OR REPLACE VIEW dash_enterprise WITH (security_barrier) AS
    SELECT e.credit_code::text AS credit_code, e.name, e.region_code::text AS region_code,
           (left(e.region_code, 4) || '00') AS city_code, e.region_code::text AS county_code,
           e.industry_code, e.above_designated_size, e.key_enterprise, e.time_zone
    FROM enterprise e;

CREATE OR REPLACE VIEW dash_enterprise_cluster WITH (security_barrier) AS
    SELECT e.credit_code::text AS credit_code, c.code AS cluster_code
    FROM enterprise_cluster ec
    JOIN enterprise e ON e.id = ec.enterprise_id
    JOIN cluster c ON c.id = ec.cluster_id;

-- Per enterprise and local day, from the first day the rollups hold to the enterprise's
-- today: production devices in service, networked, NC, key-process (NC), and the summed
-- OEE components of zhizao/oee.py. Sums only: every ratio is a ratio of these sums.
CREATE OR REPLACE VIEW dash_enterprise_day WITH (security_barrier) AS
    WITH days AS (
        SELECT e.id AS enterprise_id, g.day::date AS day
        FROM enterprise e
        CROSS JOIN LATERAL generate_series(
            (SELECT min(r.day) FROM rollup_device_day r),
            (now() AT TIME ZONE e.time_zone)::date, interval '1 day') AS g(day)
    ), dev AS (
        SELECT days.enterprise_id, days.day, d.id, d.is_nc, d.key_process
        FROM days JOIN device d ON d.enterprise_id = days.enterprise_id
        WHERE d.is_production_equipment
          AND (d.commissioned_on IS NULL OR d.commissioned_on <= days.day)
          AND (d.decommissioned_on IS NULL OR d.decommissioned_on > days.day)
    ), counts AS (
        SELECT dev.enterprise_id, dev.day, count(*) AS in_service,
               count(*) FILTER (WHERE r.good_points > 0 OR r.online_reported) AS networked,
               count(*) FILTER (WHERE dev.is_nc) AS nc,
               count(*) FILTER (WHERE dev.key_process) AS key_process,
               count(*) FILTER (WHERE dev.key_process AND dev.is_nc) AS key_process_nc
        FROM dev LEFT JOIN rollup_device_day r ON r.device_id = dev.id AND r.day = dev.day
        GROUP BY 1, 2
    ), oee AS (
        SELECT d.enterprise_id, r.day,
               sum(r.scheduled_s) AS scheduled_s, sum(r.sched_planned_stop_s) AS planned_stop_s,
               sum(r.sched_running_s) AS running_s, sum(r.overtime_running_s) AS overtime_running_s,
               sum(r.sched_idle_s) AS idle_s, sum(r.sched_setup_s) AS setup_s,
               sum(r.sched_unplanned_stop_s) AS unplanned_stop_s,
               sum(r.sched_offline_s) AS offline_s, sum(r.good)::int8 AS good,
               sum(r.reject)::int8 AS reject, sum(r.ideal_time_s) AS ideal_time_s,
               sum(r.ideal_good_s) AS ideal_good_s
        FROM rollup_device_day r JOIN device d ON d.id = r.device_id
        WHERE d.is_production_equipment
        GROUP BY 1, 2
    )
    SELECT e.credit_code::text AS credit_code, days.day,
           coalesce(c.in_service, 0) AS in_service, coalesce(c.networked, 0) AS networked,
           coalesce(c.nc, 0) AS nc, coalesce(c.key_process, 0) AS key_process,
           coalesce(c.key_process_nc, 0) AS key_process_nc,
           coalesce(o.scheduled_s, 0) AS scheduled_s,
           coalesce(o.planned_stop_s, 0) AS planned_stop_s,
           coalesce(o.running_s, 0) AS running_s,
           coalesce(o.overtime_running_s, 0) AS overtime_running_s,
           coalesce(o.idle_s, 0) AS idle_s, coalesce(o.setup_s, 0) AS setup_s,
           coalesce(o.unplanned_stop_s, 0) AS unplanned_stop_s,
           coalesce(o.offline_s, 0) AS offline_s,
           coalesce(o.good, 0) AS good, coalesce(o.reject, 0) AS reject,
           coalesce(o.ideal_time_s, 0) AS ideal_time_s,
           coalesce(o.ideal_good_s, 0) AS ideal_good_s,
           coalesce(o.scheduled_s - o.planned_stop_s + o.overtime_running_s, 0) AS pbt_s,
           coalesce(o.running_s + o.overtime_running_s, 0) AS apt_s
    FROM days JOIN enterprise e ON e.id = days.enterprise_id
    LEFT JOIN counts c ON c.enterprise_id = days.enterprise_id AND c.day = days.day
    LEFT JOIN oee o ON o.enterprise_id = days.enterprise_id AND o.day = days.day;

REVOKE ALL ON dash_region, dash_cluster, dash_enterprise, dash_enterprise_cluster,
    dash_enterprise_day FROM PUBLIC;
