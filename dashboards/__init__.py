"""Grafana dashboards as code (docs/dashboards.md).

``build`` makes the four dashboards with the Grafana foundation SDK (``query`` is the
typed PostgreSQL query the SDK lacks, ``panels_sql`` the SQL of every panel), ``roles``
makes the PostgreSQL roles their datasources log in as, ``provision`` pushes everything to
Grafana's HTTP API or writes file provisioning, and ``grafana_sql`` expands panel SQL as
Grafana would, for the tests.
"""
