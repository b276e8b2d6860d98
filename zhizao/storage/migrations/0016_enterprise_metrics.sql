-- The metric names each enterprise has used. Ingest admits a new name for an enterprise
-- only while it has fewer than ZHIZAO_INGEST_MAX_METRIC_NAMES (docs/ingest.md, "Metric
-- names per enterprise"), so a misconfigured edge inventing names (a timestamp or a
-- serial number in the name) cannot grow metric_name and the workers' caches without
-- bound; points under a refused name go to the dead letters.
CREATE TABLE enterprise_metric (
    enterprise_id integer NOT NULL REFERENCES enterprise (id) ON DELETE CASCADE,
    metric_id     integer NOT NULL REFERENCES metric_name (id),
    first_seen    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (enterprise_id, metric_id)
);

-- The names already stored count: an enterprise keeps every name it has. A skip scan of
-- metric_point's primary key (device_id, metric_id, time), one probe per device and
-- name, instead of reading every point of a large table.
INSERT INTO enterprise_metric (enterprise_id, metric_id)
SELECT DISTINCT d.enterprise_id, m.metric_id
FROM device d
CROSS JOIN LATERAL (
    WITH RECURSIVE ids (metric_id) AS (
        (SELECT p.metric_id FROM metric_point p WHERE p.device_id = d.id
         ORDER BY p.metric_id LIMIT 1)
        UNION ALL
        SELECT (SELECT p.metric_id FROM metric_point p
                WHERE p.device_id = d.id AND p.metric_id > ids.metric_id
                ORDER BY p.metric_id LIMIT 1)
        FROM ids WHERE ids.metric_id IS NOT NULL
    )
    SELECT ids.metric_id FROM ids WHERE ids.metric_id IS NOT NULL
) m
ON CONFLICT DO NOTHING;
