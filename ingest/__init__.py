"""Ingest service: uplink messages from the broker into the fact tables (issue 4).

See :mod:`ingest.service` for the design and docs/ingest.md for operation.
"""

from ingest.service import run_ingest
from ingest.settings import IngestSettings, ingest_settings

__all__ = ["IngestSettings", "ingest_settings", "run_ingest"]
