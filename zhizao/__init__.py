"""zhizao (智造): the shared kernel of the platform.

The kernel holds what every service agrees on: the domain model of the equipment
ledger (:mod:`zhizao.registry`), the edge-to-platform wire contract
(:mod:`zhizao.wire`), the storage schema and queries (:mod:`zhizao.storage`),
settings and errors. Services (``edge``, ``ingest``, ``platform_api``,
``dashboards``) import the kernel; the kernel imports no service, except the CLI
(:mod:`zhizao.cli`), which is the one place that composes them.
"""

__version__ = "0.1.0"
