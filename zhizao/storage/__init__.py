"""Storage: schema migrations, the registry store and idempotent fact writes.

Plain PostgreSQL ≥ 14 everywhere; TimescaleDB hypertables, compression and
retention where the extension is available (see :mod:`zhizao.storage.migrate`).
All SQL is parameterised; library errors become :mod:`zhizao.errors` at this edge.
"""
