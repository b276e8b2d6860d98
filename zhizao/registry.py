"""Domain model of the hierarchy and the equipment ledger (设备台账), DESIGN §4.

region → cluster → enterprise → site → line → device, plus edge gateways. These are
pydantic models of what the registry holds, apart from API schemas and stored rows.
An invalid value raises a ``pydantic.ValidationError`` whose entries carry the
field (``loc``), the value (``input``) and the rule (``msg``); rules that are ours
are raised as :class:`zhizao.errors.InvalidValue` so the message names all three.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from datetime import date
from enum import StrEnum
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from zhizao import codes
from zhizao.errors import InvalidValue

_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def _check_code(value: str) -> str:
    if not _CODE_RE.fullmatch(value):
        raise InvalidValue(
            "code",
            value,
            "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
    return value


def _check_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidValue(
            "time_zone", value, "must be an IANA time zone such as Asia/Shanghai"
        ) from exc
    return value


@functools.lru_cache(maxsize=4096)
def _credit_code(value: str) -> str:
    # A ledger of 100,000 devices names a few hundred enterprises: the check
    # character (GB 32100) is computed once per distinct code, not once per row.
    return codes.validate_credit_code(value)


CreditCode = Annotated[str, AfterValidator(_credit_code)]
RegionCode = Annotated[str, AfterValidator(codes.validate_region_code)]
IndustryCode = Annotated[str, AfterValidator(codes.validate_industry_code)]
Code = Annotated[str, AfterValidator(_check_code)]
TimeZoneName = Annotated[str, AfterValidator(_check_time_zone)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Region(_Model):
    """A GB/T 2260 division; its level and parent follow from the code."""

    code: RegionCode
    name: Name

    @property
    def level(self) -> codes.RegionLevel:
        return codes.region_level(self.code)

    @property
    def parent_code(self) -> str | None:
        return codes.region_parent(self.code)


class Cluster(_Model):
    """An industrial cluster (产业集群): a region's concentration of one industry."""

    code: Code
    name: Name
    region_code: RegionCode
    industry_code: IndustryCode


class Enterprise(_Model):
    credit_code: CreditCode
    name: Name
    region_code: RegionCode
    industry_code: IndustryCode
    cluster_codes: tuple[Code, ...] = ()
    above_designated_size: bool = False  # 规上 (规模以上工业企业)
    key_enterprise: bool = False  # 重点企业
    time_zone: TimeZoneName = "Asia/Shanghai"


class Site(_Model):
    enterprise: CreditCode
    code: Code
    name: Name


class Line(_Model):
    enterprise: CreditCode
    code: Code
    name: Name
    site_code: Code | None = None


class DeviceType(StrEnum):
    """Kinds of equipment in the ledger; the Chinese label is what reports show."""

    CNC_MACHINE_TOOL = "cnc_machine_tool"
    INDUSTRIAL_ROBOT = "industrial_robot"
    INJECTION_MOULDING = "injection_moulding_machine"
    LOOM = "loom"
    KNITTING_MACHINE = "knitting_machine"
    PRESS = "press"
    WELDING = "welding_machine"
    LASER_CUTTER = "laser_cutter"
    DIE_CASTING = "die_casting_machine"
    PLC_LINE = "plc_controlled_line"
    TEST_EQUIPMENT = "test_equipment"
    CONVEYOR = "conveyor"
    COMPRESSOR = "air_compressor"
    PRESS_BRAKE = "press_brake"
    PACKAGING = "packaging_machine"
    AGV = "agv"
    AUXILIARY = "auxiliary_equipment"
    COOLING_TOWER = "cooling_tower"
    CRANE = "crane"
    FORKLIFT = "forklift"
    OTHER = "other"

    @property
    def label_zh(self) -> str:
        return DEVICE_TYPE_LABELS[self]

    @property
    def is_auxiliary(self) -> bool:
        """Utility and handling equipment that serves production without producing.

        A ledger row of such a type whose 是否生产设备 cell is empty is not production
        equipment, so it stays out of the networking and NC rates. Inspection
        equipment (a CMM measuring every part) and 其他 are a process step as often
        as not: they keep the ordinary default (production equipment).
        """
        return self in AUXILIARY_DEVICE_TYPES


DEVICE_TYPE_LABELS: dict[DeviceType, str] = {
    DeviceType.CNC_MACHINE_TOOL: "数控机床",
    DeviceType.INDUSTRIAL_ROBOT: "工业机器人",
    DeviceType.INJECTION_MOULDING: "注塑机",
    DeviceType.LOOM: "织机",
    DeviceType.KNITTING_MACHINE: "针织机",
    DeviceType.PRESS: "冲压机",
    DeviceType.WELDING: "焊接设备",
    DeviceType.LASER_CUTTER: "激光切割机",
    DeviceType.DIE_CASTING: "压铸机",
    DeviceType.PLC_LINE: "PLC控制产线",
    DeviceType.TEST_EQUIPMENT: "检测设备",
    DeviceType.CONVEYOR: "输送设备",
    DeviceType.COMPRESSOR: "空压机",
    DeviceType.PRESS_BRAKE: "折弯机",
    DeviceType.PACKAGING: "包装机",
    DeviceType.AGV: "AGV",
    DeviceType.AUXILIARY: "辅助设备",
    DeviceType.COOLING_TOWER: "冷却塔",
    DeviceType.CRANE: "起重设备",
    DeviceType.FORKLIFT: "叉车",
    DeviceType.OTHER: "其他",
}

AUXILIARY_DEVICE_TYPES = frozenset(
    {
        DeviceType.COMPRESSOR,
        DeviceType.AUXILIARY,
        DeviceType.COOLING_TOWER,
        DeviceType.CRANE,
        DeviceType.FORKLIFT,
    }
)


def name_key(name: str) -> str:
    """How two spellings of a line or site name are told to be the same name.

    Full-width and half-width forms, case and white space do not make another
    line: ``三号线``, ``三号线 `` and ``三 号 线`` are one line.
    """
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", name)).casefold()


def derived_code(prefix: str, name: str) -> str:
    """A stable code for a line or site the ledger names but gives no code.

    The code depends on the name alone (after :func:`name_key`), so every import of
    a ledger naming 三号线 maps to the same line, on any machine, in any order.
    """
    digest = hashlib.sha256(name_key(name).encode()).hexdigest()[:8].upper()
    return f"{prefix}-{digest}"


def is_code(value: str) -> bool:
    """Whether ``value`` can serve as a code as written (``L1``, ``BL-1``)."""
    return _CODE_RE.fullmatch(value) is not None


def check_service_dates(commissioned_on: date | None, decommissioned_on: date | None) -> None:
    """A device leaves service no earlier than it entered it (InvalidValue if not)."""
    if (
        commissioned_on is not None
        and decommissioned_on is not None
        and decommissioned_on < commissioned_on
    ):
        raise InvalidValue(
            "decommissioned_on",
            decommissioned_on.isoformat(),
            f"is before commissioned_on {commissioned_on.isoformat()}",
        )


class Device(_Model):
    """One row of the equipment ledger, networked or not."""

    enterprise: CreditCode
    code: Code
    name: Name
    device_type: DeviceType
    site_code: Code | None = None
    line_code: Code | None = None
    #: The names the ledger gives (三号线, 冲压车间). Without a code the registry
    #: finds the line or site by this name or derives its code (:func:`derived_code`).
    site_name: Name | None = None
    line_name: Name | None = None
    is_production_equipment: bool = True
    is_nc: bool = False  # 数控: digitally controlled
    key_process: bool = False  # 关键工序
    ideal_cycle_time_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    commissioned_on: date | None = None
    decommissioned_on: date | None = None

    @model_validator(mode="after")
    def _service_dates_in_order(self) -> Self:
        check_service_dates(self.commissioned_on, self.decommissioned_on)
        return self

    def in_service_on(self, day: date) -> bool:
        """In the ledger on ``day``: commissioned by then and not yet decommissioned.

        The decommissioning day itself no longer counts: the device left service that day.
        """
        if self.commissioned_on is not None and day < self.commissioned_on:
            return False
        return not (self.decommissioned_on is not None and day >= self.decommissioned_on)


class EdgeGateway(_Model):
    """An edge PC; ingest accepts its data only for its own enterprise's devices."""

    enterprise: CreditCode
    edge_id: Code
    name: Name | None = None
    device_codes: tuple[Code, ...] = ()
