-- Provincial figures over federated data (docs/federation.md, "Provincial figures"):
-- the reports kept in federation_report, materialised as typed rows that the kernel's
-- KPI queries read beside the local rollups.

-- An enterprise known from federated reports, with the facts of its newest reported
-- day. The id is negative, so it never meets a local enterprise's id: the one access
-- filter (zhizao.access.Visibility.enterprise_filter) and the kernel's restrictions
-- are written over an enterprise row "e" with id, credit_code and region_code, and
-- apply unchanged to this table. An enterprise that is also in the local registry is
-- kept here too, but every KPI query leaves it out (the local registry wins).
CREATE TABLE federated_enterprise (
    id                    integer GENERATED ALWAYS AS IDENTITY (START WITH -1 INCREMENT BY -1)
                          PRIMARY KEY CHECK (id < 0),
    credit_code           char(18) NOT NULL UNIQUE,
    name                  text NOT NULL,
    region_code           char(6) NOT NULL,
    industry_code         text NOT NULL,
    clusters              text[] NOT NULL DEFAULT '{}',
    above_designated_size boolean NOT NULL,
    key_enterprise        boolean NOT NULL,
    instance_id           text NOT NULL,
    facts_day             date NOT NULL  -- the reported day these facts are of
);
CREATE INDEX federated_enterprise_region ON federated_enterprise (region_code);

-- One row per enterprise and local day: the report that counts. Two instances
-- reporting the same enterprise-day is a registration mistake; the report received
-- last counts (docs/federation.md).
CREATE TABLE federated_day (
    enterprise     char(18) NOT NULL,
    day            date NOT NULL,
    instance_id    text NOT NULL,
    revision       bigint NOT NULL,
    received_at    timestamptz NOT NULL,
    in_service     integer NOT NULL,
    networked      integer NOT NULL,
    nc             integer NOT NULL,
    key_process    integer NOT NULL,
    key_process_nc integer NOT NULL,
    oee            jsonb NOT NULL,  -- zhizao.oee.OeeComponents of the enterprise
    lines          jsonb NOT NULL,  -- the same per line code
    PRIMARY KEY (enterprise, day)
);
CREATE INDEX federated_day_day ON federated_day (day);

CREATE FUNCTION federated_take(r federation_report) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO federated_day (enterprise, day, instance_id, revision, received_at, in_service,
                               networked, nc, key_process, key_process_nc, oee, lines)
    VALUES (r.enterprise, r.day, r.instance_id, r.revision, r.received_at,
            (r.body #>> '{devices,in_service}')::integer,
            (r.body #>> '{devices,networked}')::integer,
            (r.body #>> '{devices,nc}')::integer,
            (r.body #>> '{devices,key_process}')::integer,
            (r.body #>> '{devices,key_process_nc}')::integer,
            coalesce(r.body -> 'oee', '{}'), coalesce(r.body -> 'lines', '{}'))
    ON CONFLICT (enterprise, day) DO UPDATE SET
        instance_id = EXCLUDED.instance_id, revision = EXCLUDED.revision,
        received_at = EXCLUDED.received_at, in_service = EXCLUDED.in_service,
        networked = EXCLUDED.networked, nc = EXCLUDED.nc, key_process = EXCLUDED.key_process,
        key_process_nc = EXCLUDED.key_process_nc, oee = EXCLUDED.oee, lines = EXCLUDED.lines;
    INSERT INTO federated_enterprise (credit_code, name, region_code, industry_code, clusters,
                                      above_designated_size, key_enterprise, instance_id,
                                      facts_day)
    VALUES (r.enterprise, r.body #>> '{enterprise,name}', r.body #>> '{enterprise,region_code}',
            r.body #>> '{enterprise,industry_code}',
            ARRAY(SELECT jsonb_array_elements_text(coalesce(r.body #> '{enterprise,clusters}',
                                                            '[]'))),
            coalesce((r.body #>> '{enterprise,above_designated_size}')::boolean, false),
            coalesce((r.body #>> '{enterprise,key_enterprise}')::boolean, false),
            r.instance_id, r.day)
    ON CONFLICT (credit_code) DO UPDATE SET
        name = EXCLUDED.name, region_code = EXCLUDED.region_code,
        industry_code = EXCLUDED.industry_code, clusters = EXCLUDED.clusters,
        above_designated_size = EXCLUDED.above_designated_size,
        key_enterprise = EXCLUDED.key_enterprise, instance_id = EXCLUDED.instance_id,
        facts_day = EXCLUDED.facts_day
    -- The newest day's facts (a move, a new 规上 status); a late revision of an older
    -- day leaves them.
    WHERE federated_enterprise.facts_day <= EXCLUDED.facts_day;
END
$$;

CREATE FUNCTION federated_report_taken() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM federated_take(NEW);
    RETURN NULL;
END
$$;

-- Every report kept is materialised in the same transaction, whoever writes it.
CREATE TRIGGER federation_report_materialise AFTER INSERT OR UPDATE ON federation_report
    FOR EACH ROW EXECUTE FUNCTION federated_report_taken();

-- Reports kept before this migration, oldest received first (the last received wins).
DO $$
DECLARE
    r federation_report;
BEGIN
    FOR r IN SELECT * FROM federation_report ORDER BY received_at, instance_id LOOP
        PERFORM federated_take(r);
    END LOOP;
END
$$;

-- Cluster membership of local and federated enterprises, by cluster code: what the
-- access filter and the kernel's cluster restrictions read, so that a cluster's
-- operator and a cluster scope reach its federated enterprises too.
CREATE VIEW enterprise_cluster_code AS
    SELECT ec.enterprise_id, c.code FROM enterprise_cluster ec JOIN cluster c ON c.id = ec.cluster_id
    UNION ALL
    SELECT fe.id, m.code FROM federated_enterprise fe CROSS JOIN LATERAL unnest(fe.clusters) AS m (code);
