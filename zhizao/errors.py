"""Every error zhizao raises on purpose.

    ZhizaoError
    ├── InvalidValue            a value broke a domain rule (field, value, rule)
    ├── ContractError           an uplink message does not follow the wire contract
    │   └── TopicError          the topic is not a zhizao uplink topic
    ├── ConfigError             a configuration file is wrong (file, key, problem)
    ├── LedgerError             a ledger file cannot be read at all (row errors are data,
    │                           see zhizao.ledger.RowError, and never raise)
    ├── SpoolError              the edge's disk spool cannot store or read points
    ├── MqttError               a broker refused a connection or message, or it is gone
    │   ├── ConnectionReplaced  the client was replaced (protocol fallback), unsent
    │   └── PublishRejected     the broker answered a PUBLISH with an error reason code
    └── StorageError            the database refused or is unreachable
        ├── DatabaseUnavailable the server cannot be reached (retry later)
        ├── DataRefused         the database refused a value of one message (never retried)
        └── MigrationError      the schema cannot be brought to the current version

Library errors (psycopg, pydantic, openpyxl) are translated at the boundary with
``raise ... from exc`` so callers handle one tree and keep the original cause.
"""

from __future__ import annotations

from typing import Any


class ZhizaoError(Exception):
    """Base of every error raised on purpose by zhizao."""


class InvalidValue(ZhizaoError, ValueError):
    """A value broke a rule of the domain model.

    Subclasses ValueError so that pydantic validators can raise it and report it
    with the field's location.
    """

    def __init__(self, field: str, value: Any, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}={value!r}: {rule}")


class ContractError(ZhizaoError):
    """An uplink message does not follow the wire contract (docs/wire-contract.md)."""

    def __init__(self, reason: str, *, path: str = "") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class TopicError(ContractError):
    """The MQTT topic is not one of the zhizao uplink topics."""


class ConfigError(ZhizaoError):
    """A configuration file is wrong; the message names the file, key and problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class LedgerError(ZhizaoError):
    """A ledger file cannot be read at all (unknown format, missing sheet or header)."""


class SpoolError(ZhizaoError):
    """The spool cannot store or read points (disk full, corrupt file, wrong edge)."""


class MqttError(ZhizaoError):
    """The broker refused a connection or a message, or the connection is gone."""


class ConnectionReplaced(MqttError):
    """The paho client was replaced (protocol fallback); its messages were not sent."""


class PublishRejected(MqttError):
    """The broker answered a PUBLISH with an error reason code (MQTT 5 only)."""


class StorageError(ZhizaoError):
    """The database refused an operation."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached; the operation may succeed later."""


class DataRefused(StorageError):
    """The database refused a value that came with a message (a NUL in text, a number
    out of range, a site's constraint): retrying cannot help, the message can."""


class MigrationError(StorageError):
    """The schema cannot be brought to the current version."""
