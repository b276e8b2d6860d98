"""Ingest tests own their broker (``own_mosquitto``) and, for outages, their database."""

from tests.fix_pgcluster import pg_cluster

__all__ = ["pg_cluster"]
