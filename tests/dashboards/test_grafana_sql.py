"""The expander of Grafana's template variables and PostgreSQL macros gives what
Grafana's documentation shows for each (the examples of its PostgreSQL datasource page
and of its variable formats), and what it gives runs on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from dashboards.grafana_sql import Variable, expand, expand_macros, interpolate

FROM = datetime(2017, 4, 21, 5, 1, 17, tzinfo=UTC)
TO = datetime(2017, 4, 21, 5, 6, 17, tzinfo=UTC)


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("$__timeFilter(time_col)",
         "time_col BETWEEN '2017-04-21T05:01:17Z' AND '2017-04-21T05:06:17Z'"),
        ("$__timeFrom()", "'2017-04-21T05:01:17Z'"),
        ("$__timeTo()", "'2017-04-21T05:06:17Z'"),
        ("$__timeGroup(dateColumn,'5m')", "floor(extract(epoch from dateColumn)/300)*300"),
        ("$__timeGroupAlias(dateColumn,'5m')",
         'floor(extract(epoch from dateColumn)/300)*300 AS "time"'),
        ("$__timeGroup(r.hour, '1h')", "floor(extract(epoch from r.hour)/3600)*3600"),
        ("$__time(dateColumn)", 'dateColumn AS "time"'),
        ("$__unixEpochFilter(dateColumn)", "dateColumn >= 1492750877 AND dateColumn <= 1492751177"),
    ],
)  # fmt: skip
def test_macros_expand_as_grafana_documents(macro: str, expanded: str) -> None:
    assert expand_macros(macro, time_from=FROM, time_to=TO) == expanded


def test_a_time_zone_of_the_range_does_not_change_the_utc_text() -> None:
    from zoneinfo import ZoneInfo

    local = FROM.astimezone(ZoneInfo("Asia/Shanghai"))
    assert expand_macros("$__timeFrom()", time_from=local, time_to=TO) == "'2017-04-21T05:01:17Z'"


def _vars(text: str, **values: Variable | str | list[str]) -> str:
    return interpolate(text, values, time_from=FROM, time_to=TO, interval="5m")


def test_variables_and_their_formats() -> None:
    many = ["a", "it's"]
    assert _vars("$x", x="L1") == "L1"
    assert _vars("${x}", x="L1") == "L1"
    assert _vars("[[x]]", x="L1") == "L1"
    assert _vars("x = '$x'", x="L1") == "x = 'L1'"
    assert _vars("$x", x=many) == "'a','it''s'"  # multi-value: quoted for SQL
    assert _vars("${x:sqlstring}", x="it's") == "'it''s'"
    assert _vars("${x:sqlstring}", x=many) == "'a','it''s'"
    assert _vars("${x:csv}", x=many) == "a,it's"
    assert _vars("${x:raw}", x="0.8") == "0.8"
    assert _vars("${x:singlequote}", x=many) == "'a','it\\'s'"
    assert _vars("${x:doublequote}", x=many) == '"a","it\'s"'
    assert _vars("IN ($x)", x=Variable(("only",), multi=True)) == "IN ('only')"


def test_global_variables() -> None:
    assert _vars("$__interval") == "5m"
    assert _vars("${__interval_ms}") == "300000"
    assert _vars("${__from} ${__to}") == "1492750877000 1492751177000"
    # Macros are left for the datasource.
    assert _vars("$__timeFilter(t)") == "$__timeFilter(t)"


def test_a_variable_without_a_value_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(KeyError, match="line"):
        _vars("l.code = ${line:sqlstring}")


def test_what_it_expands_runs_on_postgresql(db_url: str) -> None:
    text = expand(
        "SELECT $__timeGroupAlias(t, '$__interval'), count(*) AS n"
        " FROM (SELECT generate_series($__timeFrom()::timestamptz, $__timeTo()::timestamptz,"
        " interval '1 minute') AS t) x WHERE $__timeFilter(t) AND ${name:sqlstring} = 'it''s'"
        " GROUP BY 1 ORDER BY 1",
        {"name": "it's"},
        time_from=FROM,
        time_to=TO,
        interval="5m",
    )
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(text.encode()).fetchall()
    assert sum(int(n) for _, n in rows) == 6  # 05:01:17 ... 05:06:17, each minute
    assert all(float(t) % 300 == 0 for t, _ in rows)
