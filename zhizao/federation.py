"""Federation: a cluster instance reports its enterprises' daily aggregates, signed, to
the provincial instance (docs/federation.md).

* **Identity.** An instance has an Ed25519 key pair, made once by ``zhizao federation
  init`` into a key file only its owner can read. The provincial instance registers
  the public key with the regions and clusters the instance may report for.
* **Reports.** One per enterprise and local day: the enterprise's facts (region,
  industry, clusters, 规上/重点), in-service and networked production devices, NC and
  key-process NC counts, and the OEE time and count components of the enterprise and
  of each line. Never a device, a metric point or a state.
* **Revisions.** A report is enqueued in the outbox when the day's aggregates differ
  from those last enqueued (late data, a ledger change), with the next revision; the
  province keeps the newest revision of each (instance, enterprise, day).
* **Signatures** are over the exact bytes sent (canonical JSON), in the
  ``X-Zhizao-Signature`` header, with the sender in ``X-Zhizao-Instance``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zhizao.codes import region_ancestors
from zhizao.errors import InvalidValue, ZhizaoError
from zhizao.oee import OeeComponents
from zhizao.storage import kpi
from zhizao.storage.connection import Conn

INSTANCE_HEADER = "X-Zhizao-Instance"
SIGNATURE_HEADER = "X-Zhizao-Signature"
#: The largest report accepted (an enterprise-day with its lines is a few kB).
MAX_REPORT_BYTES = 256 * 1024
_INSTANCE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FORMAT = 1


def canonical(value: Any) -> bytes:
    """The JSON bytes that are signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --- identity ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    instance_id: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes_raw()

    @property
    def public_key_text(self) -> str:
        return base64.b64encode(self.public_key).decode()

    def sign(self, body: bytes) -> str:
        return base64.b64encode(self.private_key.sign(body)).decode()


def check_instance_id(value: str, field: str = "instance") -> str:
    if not _INSTANCE.match(value):
        raise InvalidValue(field, value, "must be 1-64 letters, digits, '_', '.' or '-'")
    return value


def init_identity(path: Path, instance_id: str, *, force: bool = False) -> Identity:
    """A new key pair in ``path`` (mode 0600), refusing to overwrite one unless forced."""
    check_instance_id(instance_id)
    if path.exists() and not force:
        raise ZhizaoError(f"{path} exists: this instance has an identity (--force replaces it)")
    key = Ed25519PrivateKey.generate()
    data = {"instance_id": instance_id,
            "private_key": base64.b64encode(key.private_bytes_raw()).decode()}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.chmod(path, 0o600)  # also when the file existed with wider rights
    return Identity(instance_id, key)


def load_identity(path: Path) -> Identity:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data["private_key"]))
        return Identity(check_instance_id(str(data["instance_id"])), key)
    except FileNotFoundError as exc:
        raise ZhizaoError(f"{path}: no identity (run zhizao federation init)") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ZhizaoError(
            f"{path}: not an identity file of zhizao federation init ({exc})"
        ) from exc


def parse_public_key(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise InvalidValue("public_key", text, "must be an Ed25519 public key in base64") from exc
    return raw


def verify(public_key: bytes, body: bytes, signature: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(base64.b64decode(signature), body)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- the report -------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnterprisePart(_Strict):
    credit_code: str = Field(pattern=r"^[0-9A-HJ-NPQRTUWXY]{18}$")
    name: str = Field(max_length=200)
    region_code: str = Field(pattern=r"^\d{6}$")
    industry_code: str = Field(pattern=r"^[A-T]\d{2,4}$")
    clusters: list[str] = Field(default_factory=list, max_length=50)
    above_designated_size: bool = False
    key_enterprise: bool = False


class Counts(_Strict):
    in_service: int = Field(ge=0)  # in-service production devices on the day
    networked: int = Field(ge=0)
    nc: int = Field(ge=0)
    key_process: int = Field(ge=0)  # in-service production devices of key processes
    key_process_nc: int = Field(ge=0)


class DayReport(_Strict):
    format: int = FORMAT
    instance: str
    day: date
    revision: int = Field(ge=1)
    generated_at: datetime
    enterprise: EnterprisePart
    devices: Counts
    #: OEE components (zhizao.oee.OeeComponents) of the enterprise and of each line.
    oee: dict[str, float | int]
    lines: dict[str, dict[str, float | int]] = Field(default_factory=dict, max_length=500)


def _components(c: OeeComponents) -> dict[str, float | int]:
    return asdict(c)


async def day_aggregates(conn: Conn, day: date) -> list[dict[str, Any]]:
    """Each enterprise's aggregates of ``day``, without revision or time (the part
    whose change makes a new revision). Only what this instance measures itself: an
    enterprise it knows from another instance's reports is that instance's to send."""
    facts = await kpi.enterprise_facts(conn, federated=False)
    networked = await kpi.networking_parts(conn, day, day, federated=False)
    nc = await kpi.nc_parts(conn, day, federated=False)
    key = await kpi.nc_parts(conn, day, key_process=True, federated=False)
    cur = await conn.execute(
        "SELECT e.credit_code, d.code, l.code FROM device d"
        " JOIN enterprise e ON e.id = d.enterprise_id LEFT JOIN line l ON l.id = d.line_id"
    )
    line_of = {(str(cc), str(code)): (str(line) if line else None)
               for cc, code, line in await cur.fetchall()}  # fmt: skip
    out = []
    for cc in sorted(facts):
        f = facts[cc]
        report = await kpi.oee_for_days(
            conn, kpi.OeeScope(kpi.Level.ENTERPRISE, cc), day, day, federated=False
        )
        lines: dict[str, OeeComponents] = {}
        for device in report.devices:
            line = line_of.get((cc, device.device))
            if line is not None:
                lines[line] = lines.get(line, OeeComponents()) + device.components
        n, k = nc.get(cc), key.get(cc)
        out.append({
            "enterprise": {
                "credit_code": cc, "name": f.name, "region_code": f.region_code,
                "industry_code": f.industry_code, "clusters": list(f.cluster_codes),
                "above_designated_size": f.above_designated_size,
                "key_enterprise": f.key_enterprise,
            },
            "devices": {
                "in_service": networked[cc].denominator if cc in networked else 0,
                "networked": networked[cc].numerator if cc in networked else 0,
                "nc": n.numerator if n else 0,
                "key_process": k.denominator if k else 0,
                "key_process_nc": k.numerator if k else 0,
            },
            "oee": _components(report.result.components),
            "lines": {code: _components(c) for code, c in sorted(lines.items())},
        })  # fmt: skip
    return out


# --- the outbox (cluster instance) ------------------------------------------------------


@dataclass(frozen=True)
class Enqueued:
    days: int
    enterprises: int
    new: int  # reports enqueued (first or newer revisions)


async def enqueue(
    conn: Conn, identity: Identity, days: Iterable[date], *, now: datetime | None = None
) -> Enqueued:
    """Put every enterprise-day whose aggregates changed since last enqueued in the
    outbox, with the next revision."""
    stamp = (now or datetime.now(UTC)).isoformat()
    new = seen = counted = 0
    for day in days:
        counted += 1
        for aggregates in await day_aggregates(conn, day):
            seen += 1
            cc = aggregates["enterprise"]["credit_code"]
            digest = hashlib.sha256(canonical(aggregates)).digest()
            cur = await conn.execute(
                "SELECT revision, digest FROM federation_outbox WHERE enterprise = %s"
                " AND day = %s ORDER BY revision DESC LIMIT 1",
                (cc, day),
            )
            last = await cur.fetchone()
            if last is not None and bytes(last[1]) == digest:
                continue
            revision = 1 if last is None else int(last[0]) + 1
            body = canonical({"format": FORMAT, "instance": identity.instance_id,
                              "day": day.isoformat(), "revision": revision,
                              "generated_at": stamp, **aggregates})  # fmt: skip
            await conn.execute(
                "INSERT INTO federation_outbox (enterprise, day, revision, body, digest)"
                " VALUES (%s, %s, %s, %s, %s)",
                (cc, day, revision, body, digest),
            )
            new += 1
    await conn.commit()
    return Enqueued(counted, seen, new)


@dataclass(frozen=True)
class Pending:
    id: int
    enterprise: str
    day: date
    revision: int
    body: bytes
    attempts: int


async def due(conn: Conn, now: datetime, limit: int = 500) -> list[Pending]:
    cur = await conn.execute(
        "SELECT id, enterprise, day, revision, body, attempts FROM federation_outbox"
        " WHERE sent_at IS NULL AND next_attempt_at <= %s ORDER BY id LIMIT %s",
        (now, limit),
    )
    return [Pending(int(i), str(e), d, int(r), bytes(b), int(a))
            for i, e, d, r, b, a in await cur.fetchall()]  # fmt: skip


#: Retry delays: 10 s doubling per attempt, at most an hour.
RETRY_FIRST_S = 10.0
RETRY_MAX_S = 3600.0


def retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(RETRY_FIRST_S * 2 ** max(attempts - 1, 0), RETRY_MAX_S))


async def mark_sent(conn: Conn, item: Pending, now: datetime) -> None:
    # Older revisions of the same day that never left are superseded by this one.
    await conn.execute(
        "UPDATE federation_outbox SET sent_at = %s, attempts = attempts + 1, last_error = NULL"
        " WHERE id = %s",
        (now, item.id),
    )
    await conn.execute(
        "UPDATE federation_outbox SET sent_at = %s, last_error = 'superseded'"
        " WHERE enterprise = %s AND day = %s AND revision < %s AND sent_at IS NULL",
        (now, item.enterprise, item.day, item.revision),
    )
    await conn.commit()


async def mark_failed(conn: Conn, item: Pending, now: datetime, error: str) -> None:
    attempts = item.attempts + 1
    await conn.execute(
        "UPDATE federation_outbox SET attempts = %s, next_attempt_at = %s, last_error = %s"
        " WHERE id = %s",
        (attempts, now + retry_delay(attempts), error[:500], item.id),
    )
    await conn.commit()


async def outbox_status(conn: Conn) -> dict[str, Any]:
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE sent_at IS NULL), count(*) FILTER (WHERE sent_at IS NOT"
        " NULL), min(next_attempt_at) FILTER (WHERE sent_at IS NULL), max(sent_at),"
        " (SELECT last_error FROM federation_outbox WHERE sent_at IS NULL AND last_error IS"
        " NOT NULL ORDER BY id DESC LIMIT 1) FROM federation_outbox"
    )
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - an aggregate always answers
    return {"pending": int(row[0]), "sent": int(row[1]), "next_attempt_at": row[2],
            "last_sent_at": row[3], "last_error": row[4]}  # fmt: skip


# --- receiving (provincial instance) ---------------------------------------------------


class Refused(ZhizaoError):
    """A report the province does not take, with the HTTP status that says why."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Peer:
    instance_id: str
    name: str
    public_key: bytes
    regions: tuple[str, ...]
    clusters: tuple[str, ...]
    disabled: bool

    def may_report(self, enterprise: EnterprisePart) -> bool:
        if set(region_ancestors(enterprise.region_code)) & set(self.regions):
            return True
        return bool(set(enterprise.clusters) & set(self.clusters))


async def register_peer(
    conn: Conn, instance_id: str, public_key: bytes, *, name: str = "",
    regions: Iterable[str] = (), clusters: Iterable[str] = (),
) -> Peer:  # fmt: skip
    """Register (or re-register: new key, new scope) an instance that may report."""
    check_instance_id(instance_id)
    regions, clusters = sorted(set(regions)), sorted(set(clusters))
    for region in regions:
        region_ancestors(region)  # validates the code
    if not regions and not clusters:
        raise InvalidValue("scope", "", "give at least one --region or --cluster")
    await conn.execute(
        "INSERT INTO federation_peer (instance_id, name, public_key, regions, clusters)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (instance_id) DO UPDATE SET"
        " name = EXCLUDED.name, public_key = EXCLUDED.public_key, regions = EXCLUDED.regions,"
        " clusters = EXCLUDED.clusters, disabled_at = NULL",
        (instance_id, name, public_key, regions, clusters),
    )
    await conn.commit()
    peer = await find_peer(conn, instance_id)
    assert peer is not None  # noqa: S101 - just written
    return peer


async def find_peer(conn: Conn, instance_id: str) -> Peer | None:
    cur = await conn.execute(
        "SELECT instance_id, name, public_key, regions, clusters, disabled_at IS NOT NULL"
        " FROM federation_peer WHERE instance_id = %s",
        (instance_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return Peer(str(row[0]), str(row[1]), bytes(row[2]), tuple(row[3]), tuple(row[4]),
                bool(row[5]))  # fmt: skip


async def list_peers(conn: Conn) -> list[Peer]:
    cur = await conn.execute("SELECT instance_id FROM federation_peer ORDER BY instance_id")
    out = []
    for (instance_id,) in await cur.fetchall():
        peer = await find_peer(conn, str(instance_id))
        if peer is not None:
            out.append(peer)
    return out


@dataclass(frozen=True)
class Received:
    outcome: str  # stored, replaced, unchanged, stale
    report: DayReport


async def receive(
    conn: Conn, instance_id: str | None, signature: str | None, body: bytes
) -> Received:
    """Check and keep one report; raise :class:`Refused` saying why not."""
    if len(body) > MAX_REPORT_BYTES:
        raise Refused(413, f"a report is at most {MAX_REPORT_BYTES} bytes")
    if not instance_id or not signature:
        raise Refused(401, f"a report needs the {INSTANCE_HEADER} and {SIGNATURE_HEADER} headers")
    peer = await find_peer(conn, instance_id)
    if peer is None or peer.disabled:
        raise Refused(401, f"instance {instance_id!r} is not registered (or is disabled)")
    if not verify(peer.public_key, body, signature):
        raise Refused(401, f"the signature does not match instance {instance_id!r}'s key")
    try:
        report = DayReport.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Refused(422, f"body.{where}: {first['msg']}") from exc
    if report.instance != instance_id:
        raise Refused(422, f"body.instance {report.instance!r} is not the sender {instance_id!r}")
    if report.format != FORMAT:
        raise Refused(422, f"body.format {report.format} is not {FORMAT}")
    try:
        allowed = peer.may_report(report.enterprise)
    except InvalidValue as exc:
        raise Refused(422, f"body.enterprise.{exc.field}: {exc.value!r} {exc.rule}") from exc
    if not allowed:
        raise Refused(
            403,
            f"enterprise {report.enterprise.credit_code} (region"
            f" {report.enterprise.region_code}, clusters {report.enterprise.clusters}) is outside"
            f" instance {instance_id!r}'s registration",
        )
    digest = hashlib.sha256(body).digest()
    cur = await conn.execute(
        "SELECT revision, digest FROM federation_report WHERE instance_id = %s"
        " AND enterprise = %s AND day = %s FOR UPDATE",
        (instance_id, report.enterprise.credit_code, report.day),
    )
    kept = await cur.fetchone()
    if kept is not None and int(kept[0]) > report.revision:
        return Received("stale", report)
    if kept is not None and int(kept[0]) == report.revision:
        if bytes(kept[1]) != digest:
            raise Refused(409, f"revision {report.revision} of {report.enterprise.credit_code}"
                               f" {report.day} was received with other content")  # fmt: skip
        return Received("unchanged", report)
    await conn.execute(
        "INSERT INTO federation_report (instance_id, enterprise, day, revision, generated_at,"
        " body, digest) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (instance_id, enterprise, day) DO UPDATE SET revision = EXCLUDED.revision,"
        " generated_at = EXCLUDED.generated_at, body = EXCLUDED.body, digest = EXCLUDED.digest,"
        " received_at = now()",
        (instance_id, report.enterprise.credit_code, report.day, report.revision,
         report.generated_at, report.model_dump_json(), digest),
    )  # fmt: skip
    return Received("stored" if kept is None else "replaced", report)
