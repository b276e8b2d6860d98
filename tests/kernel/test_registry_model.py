"""Invalid registry input raises an error naming the field, the value and the rule."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from zhizao.codes import RegionLevel
from zhizao.registry import Device, DeviceType, Enterprise, Region

ENT = "91350100M000100Y43"


def _only_error(exc: pytest.ExceptionInfo[ValidationError]) -> tuple[str, object, str]:
    [error] = exc.value.errors()
    return ".".join(map(str, error["loc"])), error["input"], error["msg"]


def test_bad_credit_code_names_field_value_and_rule() -> None:
    with pytest.raises(ValidationError) as exc:
        Enterprise(
            credit_code="91350100M000100Y44", name="x", region_code="330106", industry_code="C34"
        )
    field, value, rule = _only_error(exc)
    assert (field, value) == ("credit_code", "91350100M000100Y44")
    assert "check character is '4', GB 32100 gives '3'" in rule


def test_bad_region_code_names_field_value_and_rule() -> None:
    with pytest.raises(ValidationError) as exc:
        Enterprise(credit_code=ENT, name="x", region_code="33A106", industry_code="C34")
    field, value, rule = _only_error(exc)
    assert (field, value) == ("region_code", "33A106")
    assert "GB/T 2260" in rule


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValidationError, match="IANA time zone"):
        Enterprise(
            credit_code=ENT,
            name="x",
            region_code="330106",
            industry_code="C34",
            time_zone="Beijing",
        )


def test_decommission_before_commission_names_both_dates() -> None:
    with pytest.raises(ValidationError) as exc:
        Device(
            enterprise=ENT,
            code="CNC-1",
            name="x",
            device_type=DeviceType.CNC_MACHINE_TOOL,
            commissioned_on=date(2024, 5, 1),
            decommissioned_on=date(2024, 4, 30),
        )
    assert "decommissioned_on='2024-04-30': is before commissioned_on 2024-05-01" in str(exc.value)


def test_device_code_rule() -> None:
    with pytest.raises(ValidationError) as exc:
        Device(enterprise=ENT, code="CNC 1/2", name="x", device_type="press")
    field, value, rule = _only_error(exc)
    assert (field, value) == ("code", "CNC 1/2")
    assert "letters, digits" in rule


def test_in_service_window_excludes_the_decommissioning_day() -> None:
    device = Device(
        enterprise=ENT,
        code="D",
        name="x",
        device_type="loom",
        commissioned_on=date(2024, 1, 10),
        decommissioned_on=date(2024, 2, 1),
    )
    assert not device.in_service_on(date(2024, 1, 9))
    assert device.in_service_on(date(2024, 1, 10))
    assert device.in_service_on(date(2024, 1, 31))
    assert not device.in_service_on(date(2024, 2, 1))


def test_region_level_and_parent() -> None:
    region = Region(code="330282", name="慈溪市")
    assert region.level is RegionLevel.COUNTY
    assert region.parent_code == "330200"


def test_every_device_type_has_a_chinese_label() -> None:
    assert all(t.label_zh for t in DeviceType)
