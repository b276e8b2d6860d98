"""The SQL of every panel, as Grafana's PostgreSQL datasource receives it (before its
macros and the dashboard's variables are expanded: :mod:`dashboards.grafana_sql`).

Two kinds of readers, two kinds of SQL (migration 0012, docs/dashboards.md):

- line and enterprise dashboards log in as the enterprise's own role and read the
  registry and rollups, where row-level security leaves them only their enterprise's
  rows whatever the SQL says, and the facts through the ``tenant_*`` views (the fact
  tables may be TimescaleDB hypertables, which cannot have row-level security);
- cluster and province dashboards log in as the aggregate role and read the
  ``dash_*`` views only.

The figures follow DESIGN §7 like :mod:`zhizao.storage.kpi`: sums of the rollups'
components, then one division. Instant ranges read the hour rollups (hours that start in
[from, to), as :func:`zhizao.storage.kpi.oee_for_interval` does for hour-aligned ranges);
networking and NC rates read the enterprise's local days from the day of ``from`` to the
day of ``to`` (Grafana's "today" ends at 23:59:59.999 local time, so that day is the last).
"""

from __future__ import annotations

#: the state classes in the order of the ``state_class`` enum (migration 0002)
STATES = ("RUNNING", "IDLE", "SETUP", "UNPLANNED_STOP", "PLANNED_STOP", "OFFLINE")


def _fill(template: str, **parts: str) -> str:
    for name, text in parts.items():
        template = template.replace(f"<<{name}>>", text)
    if "<<" in template:
        raise ValueError(f"unfilled part in {template!r}")
    return template.strip()


ENTERPRISE = "e.credit_code = ${enterprise:sqlstring}"
LINE = "l.code = ${line:sqlstring}"
HOURS = "r.hour >= $__timeFrom() AND r.hour < $__timeTo()"
PBT = "(r.scheduled_s - r.sched_planned_stop_s + r.overtime_running_s)"
APT = "(r.sched_running_s + r.overtime_running_s)"

OEE_COLUMNS = _fill(
    """
    sum(r.ideal_good_s) / nullif(sum(<<PBT>>), 0) AS "OEE",
    sum(<<APT>>) / nullif(sum(<<PBT>>), 0) AS "A 时间开动率 availability",
    sum(r.ideal_time_s) / nullif(sum(<<APT>>), 0) AS "P 性能开动率 performance",
    sum(r.good)::float8 / nullif(sum(r.good + r.reject), 0) AS "Q 合格品率 quality"
    """,
    PBT=PBT,
    APT=APT,
)

LINE_ROLLUPS = _fill(
    """
    FROM rollup_device_hour r
    JOIN device d ON d.id = r.device_id
    JOIN enterprise e ON e.id = d.enterprise_id
    JOIN line l ON l.id = d.line_id
    WHERE <<ENTERPRISE>> AND <<LINE>> AND d.is_production_equipment AND <<HOURS>>
    """,
    ENTERPRISE=ENTERPRISE,
    LINE=LINE,
    HOURS=HOURS,
)

# --- line ----------------------------------------------------------------------------

LINE_STATE_TIMELINE = _fill(
    """
    SELECT greatest(s.time, $__timeFrom()::timestamptz) AS "time", d.code AS metric,
           array_position(enum_range(NULL::state_class), s.state) - 1 AS "状态 state"
    FROM tenant_state_change s
    JOIN device d ON d.id = s.device_id
    JOIN enterprise e ON e.id = d.enterprise_id
    JOIN line l ON l.id = d.line_id
    WHERE <<ENTERPRISE>> AND <<LINE>> AND s.time <= $__timeTo()
      AND s.time >= coalesce((SELECT max(p.time) FROM tenant_state_change p
                              WHERE p.device_id = s.device_id AND p.time <= $__timeFrom()),
                             $__timeFrom()::timestamptz)
    ORDER BY 1, 2
    """,
    ENTERPRISE=ENTERPRISE,
    LINE=LINE,
)

LINE_OEE = f"SELECT {OEE_COLUMNS}\n{LINE_ROLLUPS}"

LINE_COUNTS_PER_HOUR = _fill(
    """
    SELECT $__timeGroupAlias(r.hour, '1h'), sum(r.good) AS "合格 good",
           sum(r.reject) AS "不良 reject"
    <<FROM>>
    GROUP BY 1 ORDER BY 1
    """,
    FROM=LINE_ROLLUPS,
)

LINE_LOSSES = _fill(
    """
    SELECT x.loss AS "损失 loss", x.seconds AS "时间 time"
    FROM (
        SELECT sum(r.sched_unplanned_stop_s - r.micro_unplanned_s) AS breakdowns,
               sum(r.sched_setup_s) AS setup, sum(r.sched_idle_s - r.micro_idle_s) AS idle,
               sum(r.micro_idle_s + r.micro_unplanned_s) AS micro,
               sum(r.sched_offline_s) AS offline,
               sum(<<APT>> - r.ideal_time_s) AS speed,
               sum(r.ideal_time_s - r.ideal_good_s) AS rejects
        <<FROM>>
    ) s
    CROSS JOIN LATERAL (VALUES
        ('故障停机 breakdowns', s.breakdowns), ('换型调整 setup', s.setup),
        ('待机 idle', s.idle), ('短暂停机 micro-stops', s.micro),
        ('离线 offline (coverage gap)', s.offline), ('速度损失 speed loss', s.speed),
        ('不良品 rejects', s.rejects)
    ) AS x(loss, seconds)
    WHERE x.seconds IS NOT NULL
    ORDER BY x.seconds DESC, x.loss
    """,
    APT=APT,
    FROM=LINE_ROLLUPS,
)

#: the last good point or online report of device ``d`` (before ``<<BEFORE>>``)
_LAST_SEEN = """
    greatest(
        (SELECT max(h.last_good) FROM device_hour_tally h
         WHERE h.device_id = d.id AND h.hour < <<BEFORE>>),
        (SELECT max(c.time) FROM tenant_device_connectivity c
         WHERE c.device_id = d.id AND c.online AND c.time < <<BEFORE>>))
"""

LINE_OFFLINE_NOW = _fill(
    """
    SELECT d.code AS "设备 device", d.name AS "名称 name", seen.at AS "最后在线 last seen"
    FROM device d
    JOIN enterprise e ON e.id = d.enterprise_id
    JOIN line l ON l.id = d.line_id
    CROSS JOIN LATERAL (SELECT <<LAST_SEEN>> AS at) seen
    LEFT JOIN LATERAL (SELECT c.online FROM tenant_device_connectivity c
                       WHERE c.device_id = d.id ORDER BY c.time DESC LIMIT 1) conn ON true
    WHERE <<ENTERPRISE>> AND <<LINE>>
      AND (seen.at IS NULL OR seen.at < now() - interval '25 hours' OR NOT conn.online)
    ORDER BY d.code
    """,
    LAST_SEEN=_fill(_LAST_SEEN, BEFORE="now()"),
    ENTERPRISE=ENTERPRISE,
    LINE=LINE,
)

_COVERAGE = f'1 - sum(r.sched_offline_s) / nullif(sum({PBT}), 0) AS "覆盖率 coverage"'

LINE_COVERAGE = f"SELECT {_COVERAGE}\n{LINE_ROLLUPS}"

# --- enterprise ----------------------------------------------------------------------

ENTERPRISE_ROLLUPS = _fill(
    """
    FROM rollup_device_hour r
    JOIN device d ON d.id = r.device_id
    JOIN enterprise e ON e.id = d.enterprise_id
    LEFT JOIN line l ON l.id = d.line_id
    WHERE <<ENTERPRISE>> AND d.is_production_equipment AND <<HOURS>>
    """,
    ENTERPRISE=ENTERPRISE,
    HOURS=HOURS,
)

ENTERPRISE_OEE_BY_LINE = _fill(
    """
    SELECT coalesce(l.code, '') AS "line_code",
           coalesce(l.name, '(不属产线 no line)') AS "产线 line", <<OEE>>
    <<FROM>>
    GROUP BY l.code, l.name
    ORDER BY l.code NULLS LAST
    """,
    OEE=OEE_COLUMNS,
    FROM=ENTERPRISE_ROLLUPS,
)

# Hours are given to the shift of the enterprise's calendar (not a line's) in which they
# start, in local time: exact for shifts on whole hours; the shift's days and the
# holidays of the calendar are not applied (docs/dashboards.md).
ENTERPRISE_OEE_BY_SHIFT = _fill(
    """
    SELECT sh.name AS "班次 shift", <<OEE>>
    FROM rollup_device_hour r
    JOIN device d ON d.id = r.device_id
    JOIN enterprise e ON e.id = d.enterprise_id
    JOIN shift_calendar c ON c.enterprise_id = e.id AND c.line_id IS NULL
    CROSS JOIN LATERAL jsonb_to_recordset(c.definition -> 'shifts')
        AS sh(name text, start text, "end" text)
    CROSS JOIN LATERAL (SELECT (r.hour AT TIME ZONE e.time_zone)::time AS t,
                               sh.start::time AS s, sh."end"::time AS f) k
    WHERE <<ENTERPRISE>> AND d.is_production_equipment AND <<HOURS>>
      AND CASE WHEN k.s < k.f THEN k.t >= k.s AND k.t < k.f ELSE k.t >= k.s OR k.t < k.f END
    GROUP BY sh.name, sh.start
    ORDER BY sh.start
    """,
    OEE=OEE_COLUMNS,
    ENTERPRISE=ENTERPRISE,
    HOURS=HOURS,
)

#: local days of the period for the enterprise of the dashboard, and its devices in
#: service on each of them
_ENTERPRISE_DAYS = _fill(
    """
    WITH ent AS (
        SELECT e.id, e.time_zone FROM enterprise e WHERE <<ENTERPRISE>>
    ), days AS (
        SELECT ent.id AS enterprise_id, g.day::date AS day FROM ent
        CROSS JOIN LATERAL generate_series(
            ($__timeFrom()::timestamptz AT TIME ZONE ent.time_zone)::date,
            ($__timeTo()::timestamptz AT TIME ZONE ent.time_zone)::date,
            interval '1 day') AS g(day)
    ), service AS (
        SELECT d.id, days.day, d.is_nc, days.day = (SELECT max(day) FROM days) AS last_day
        FROM days JOIN device d ON d.enterprise_id = days.enterprise_id
        WHERE d.is_production_equipment
          AND (d.commissioned_on IS NULL OR d.commissioned_on <= days.day)
          AND (d.decommissioned_on IS NULL OR d.decommissioned_on > days.day)
    )
    """,
    ENTERPRISE=ENTERPRISE,
)

ENTERPRISE_RATES = _fill(
    """
    <<DAYS>>
    SELECT count(*) FILTER (WHERE r.good_points > 0 OR r.online_reported)::float8
               / nullif(count(*), 0) AS "联网率 networking rate",
           count(*) FILTER (WHERE s.last_day AND s.is_nc)::float8
               / nullif(count(*) FILTER (WHERE s.last_day), 0) AS "数控化率 NC rate"
    FROM service s LEFT JOIN rollup_device_day r ON r.device_id = s.id AND r.day = s.day
    """,
    DAYS=_ENTERPRISE_DAYS,
)

ENTERPRISE_NOT_NETWORKED = _fill(
    """
    WITH last AS (
        SELECT e.id, e.time_zone,
               ($__timeTo()::timestamptz AT TIME ZONE e.time_zone)::date AS day
        FROM enterprise e WHERE <<ENTERPRISE>>
    )
    SELECT d.code AS "设备 device", d.name AS "名称 name", coalesce(l.code, '') AS "产线 line",
           seen.at AS "最后在线 last seen"
    FROM last
    JOIN device d ON d.enterprise_id = last.id
    LEFT JOIN line l ON l.id = d.line_id
    LEFT JOIN rollup_device_day r ON r.device_id = d.id AND r.day = last.day
    CROSS JOIN LATERAL (SELECT <<LAST_SEEN>> AS at) seen
    WHERE d.is_production_equipment
      AND (d.commissioned_on IS NULL OR d.commissioned_on <= last.day)
      AND (d.decommissioned_on IS NULL OR d.decommissioned_on > last.day)
      AND NOT coalesce(r.good_points > 0 OR r.online_reported, false)
    ORDER BY d.code
    """,
    ENTERPRISE=ENTERPRISE,
    LAST_SEEN=_fill(_LAST_SEEN, BEFORE="((last.day + 1)::timestamp AT TIME ZONE last.time_zone)"),
)

ENTERPRISE_COVERAGE = f"SELECT {_COVERAGE}\n{ENTERPRISE_ROLLUPS}"

# --- cluster and province: the aggregate views only ------------------------------------

#: the local days of the period of enterprise ``e`` (a row of dash_enterprise)
_DAYS = (
    "x.day >= ($__timeFrom()::timestamptz AT TIME ZONE e.time_zone)::date"
    " AND x.day <= ($__timeTo()::timestamptz AT TIME ZONE e.time_zone)::date"
)
_LAST_DAY = "x.day = ($__timeTo()::timestamptz AT TIME ZONE e.time_zone)::date"
_RATES = _fill(
    """
    sum(x.networked)::float8 / nullif(sum(x.in_service), 0) AS "联网率 networking rate",
    sum(x.nc) FILTER (WHERE <<LAST>>)::float8
        / nullif(sum(x.in_service) FILTER (WHERE <<LAST>>), 0) AS "数控化率 NC rate"
    """,
    LAST=_LAST_DAY,
)
_AGG_OEE = 'sum(x.ideal_good_s) / nullif(sum(x.pbt_s), 0) AS "OEE"'
CLUSTER_MEMBERS = (
    "e.credit_code IN (SELECT m.credit_code FROM dash_enterprise_cluster m"
    " WHERE m.cluster_code = ${cluster:sqlstring})"
)

CLUSTER_RANKING = _fill(
    """
    SELECT e.credit_code AS "credit_code", e.name AS "企业 enterprise", <<RATES>>, <<OEE>>
    FROM dash_enterprise e JOIN dash_enterprise_day x ON x.credit_code = e.credit_code
    WHERE <<MEMBERS>> AND <<DAYS>>
    GROUP BY e.credit_code, e.name
    ORDER BY 3 DESC NULLS LAST, 5 DESC NULLS LAST, e.credit_code
    """,
    RATES=_RATES,
    OEE=_AGG_OEE,
    MEMBERS=CLUSTER_MEMBERS,
    DAYS=_DAYS,
)

CLUSTER_TREND = _fill(
    """
    SELECT x.day::timestamp AT TIME ZONE 'Asia/Shanghai' AS "time",
           sum(x.networked)::float8 / nullif(sum(x.in_service), 0) AS "联网率 networking rate",
           <<OEE>>
    FROM dash_enterprise e JOIN dash_enterprise_day x ON x.credit_code = e.credit_code
    WHERE <<MEMBERS>> AND <<DAYS>>
    GROUP BY x.day ORDER BY 1
    """,
    OEE=_AGG_OEE,
    MEMBERS=CLUSTER_MEMBERS,
    DAYS=_DAYS,
)

CLUSTER_DISTRIBUTION = _fill(
    """
    WITH p AS (
        SELECT e.credit_code, sum(x.networked)::float8 / nullif(sum(x.in_service), 0) AS rate
        FROM dash_enterprise e JOIN dash_enterprise_day x ON x.credit_code = e.credit_code
        WHERE <<MEMBERS>> AND <<DAYS>>
        GROUP BY e.credit_code
    )
    SELECT b.label AS "联网率区间 networking-rate band",
           count(p.credit_code) AS "企业数 enterprises"
    FROM (VALUES (0.0, 0.2, '0-20%'), (0.2, 0.4, '20-40%'), (0.4, 0.6, '40-60%'),
                 (0.6, 0.8, '60-80%'), (0.8, 1.01, '80-100%')) AS b(lo, hi, label)
    LEFT JOIN p ON p.rate >= b.lo AND p.rate < b.hi
    GROUP BY b.lo, b.label ORDER BY b.lo
    """,
    MEMBERS=CLUSTER_MEMBERS,
    DAYS=_DAYS,
)

#: enterprises of the chosen region (a GB/T 2260 code of any level) and scope
PROVINCE_AREA = (
    "starts_with(e.county_code, CASE WHEN ${region:sqlstring} LIKE '__0000'"
    " THEN left(${region:sqlstring}, 2) WHEN ${region:sqlstring} LIKE '____00'"
    " THEN left(${region:sqlstring}, 4) ELSE ${region:sqlstring} END)"
    " AND (${scope:sqlstring} = 'all' OR (${scope:sqlstring} = 'above' AND"
    " e.above_designated_size) OR (${scope:sqlstring} = 'key' AND e.key_enterprise))"
)

PROVINCE_RATES = _fill(
    """
    SELECT <<RATES>>
    FROM dash_enterprise e JOIN dash_enterprise_day x ON x.credit_code = e.credit_code
    WHERE <<AREA>> AND <<DAYS>>
    """,
    RATES=_RATES,
    AREA=PROVINCE_AREA,
    DAYS=_DAYS,
)


def _province_by(key: str, names: str, label: str) -> str:
    return _fill(
        """
        SELECT <<KEY>> AS "code", <<NAMES>> AS "<<LABEL>>", <<RATES>>,
               count(DISTINCT e.credit_code) AS "企业数 enterprises"
        FROM dash_enterprise e JOIN dash_enterprise_day x ON x.credit_code = e.credit_code
        <<JOIN>>
        WHERE <<AREA>> AND <<DAYS>>
        GROUP BY 1, 2 ORDER BY 3 DESC NULLS LAST, 1
        """,
        KEY=key,
        NAMES=names,
        LABEL=label,
        RATES=_RATES,
        JOIN=(
            "JOIN dash_enterprise_cluster m ON m.credit_code = e.credit_code"
            " JOIN dash_cluster c ON c.code = m.cluster_code"
            if key == "c.code"
            else ""
        ),
        AREA=PROVINCE_AREA,
        DAYS=_DAYS,
    )


PROVINCE_BY_CITY = _province_by(
    "e.city_code",
    "(SELECT r.name FROM dash_region r WHERE r.code = e.city_code)",
    "市 city",
)
PROVINCE_BY_COUNTY = _province_by(
    "e.county_code",
    "(SELECT r.name FROM dash_region r WHERE r.code = e.county_code)",
    "县(市、区) county",
)
PROVINCE_BY_CLUSTER = _province_by("c.code", "c.name", "产业集群 cluster")
# GB/T 4754: the section letter and two digits are the division (大类), as the KPI API groups.
PROVINCE_BY_INDUSTRY = _province_by(
    "left(e.industry_code, 3)", "left(e.industry_code, 3)", "行业 industry"
)

PROVINCE_TREND = _fill(
    """
    SELECT x.day::timestamp AT TIME ZONE 'Asia/Shanghai' AS "time",
           sum(x.networked)::float8 / nullif(sum(x.in_service), 0) AS "联网率 networking rate",
           sum(x.nc)::float8 / nullif(sum(x.in_service), 0) AS "数控化率 NC rate",
           ${target:raw}::float8 AS "目标 target"
    FROM dash_enterprise e JOIN dash_enterprise_day x ON x.credit_code = e.credit_code
    WHERE <<AREA>> AND <<DAYS>>
    GROUP BY x.day ORDER BY 1
    """,
    AREA=PROVINCE_AREA,
    DAYS=_DAYS,
)

PROVINCE_BEHIND = _fill(
    """
    SELECT e.credit_code AS "credit_code", e.name AS "企业 enterprise",
           (SELECT r.name FROM dash_region r WHERE r.code = e.county_code)
               AS "县(市、区) county", <<RATES>>,
           ${target:raw}::float8 - sum(x.networked)::float8 / nullif(sum(x.in_service), 0)
               AS "差距 gap to target"
    FROM dash_enterprise e JOIN dash_enterprise_day x ON x.credit_code = e.credit_code
    WHERE <<AREA>> AND <<DAYS>>
    GROUP BY e.credit_code, e.name, e.county_code
    HAVING sum(x.in_service) > 0
    ORDER BY 4 ASC, e.credit_code
    LIMIT 20
    """,
    RATES=_RATES,
    AREA=PROVINCE_AREA,
    DAYS=_DAYS,
)
