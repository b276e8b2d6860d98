"""Chinese national codes the registry rests on, validated the way the standards say.

- GB 32100-2015 unified social credit code (统一社会信用代码): 18 characters from a
  31-character alphabet (digits and capitals without I, O, S, V, Z); characters 3-8
  are the GB/T 2260 region of registration; the 18th is a check character, a
  weighted sum mod 31 with weights 3**i mod 31.
- GB/T 2260 administrative division code (行政区划代码): six digits; ``PP0000`` is a
  province, ``PPCC00`` a prefecture-level city, anything else a county-level unit.
- GB/T 4754-2017 industry classification (国民经济行业分类): a section letter, then
  2, 3 or 4 digits (division, group, class). Manufacturing is section C, divisions
  13-43.

The functions are pure and raise :class:`zhizao.errors.InvalidValue` naming the rule.
"""

from __future__ import annotations

import re
from enum import StrEnum

from zhizao.errors import InvalidValue

CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_VALUE = {c: i for i, c in enumerate(CREDIT_ALPHABET)}
CREDIT_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))  # 1, 3, 9, 27, 19, 26, ...
_REGION_RE = re.compile(r"^[1-9]\d{5}$")
_INDUSTRY_RE = re.compile(r"^[A-T](\d{2}|\d{3}|\d{4})?$")


def credit_check_character(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters of a credit code."""
    if len(first17) != 17:
        raise InvalidValue("credit_code", first17, "need exactly 17 characters to compute a check")
    total = 0
    for pos, (char, weight) in enumerate(zip(first17, CREDIT_WEIGHTS, strict=True), start=1):
        value = _CREDIT_VALUE.get(char)
        if value is None:
            raise InvalidValue(
                "credit_code",
                first17,
                f"character {pos} {char!r} is not in the GB 32100 alphabet {CREDIT_ALPHABET}",
            )
        total += value * weight
    return CREDIT_ALPHABET[(31 - total % 31) % 31]


def validate_credit_code(code: str) -> str:
    """Return the normalised (upper-case, stripped) credit code or raise naming the rule."""
    normalised = code.strip().upper()
    if len(normalised) != 18:
        raise InvalidValue(
            "credit_code", code, f"must have 18 characters (GB 32100), has {len(normalised)}"
        )
    expected = credit_check_character(normalised[:17])
    if normalised[17] != expected:
        raise InvalidValue(
            "credit_code",
            code,
            f"check character is {normalised[17]!r}, GB 32100 gives {expected!r}",
        )
    if not _REGION_RE.fullmatch(normalised[2:8]):
        raise InvalidValue(
            "credit_code", code, f"characters 3-8 {normalised[2:8]!r} are not a GB/T 2260 region"
        )
    return normalised


def make_credit_code(prefix17: str) -> str:
    """Complete 17 characters with their check character (sample data, tests)."""
    return prefix17 + credit_check_character(prefix17)


class RegionLevel(StrEnum):
    PROVINCE = "province"
    CITY = "city"
    COUNTY = "county"


def validate_region_code(code: str) -> str:
    code = code.strip()
    if not _REGION_RE.fullmatch(code):
        raise InvalidValue(
            "region_code", code, "must be six digits not starting with 0 (GB/T 2260)"
        )
    if code[2:4] == "00" and code[4:6] != "00":
        raise InvalidValue(
            "region_code", code, "a county code needs a city part (digits 3-4 are 00)"
        )
    return code


def region_level(code: str) -> RegionLevel:
    code = validate_region_code(code)
    if code[2:] == "0000":
        return RegionLevel.PROVINCE
    if code[4:] == "00":
        return RegionLevel.CITY
    return RegionLevel.COUNTY


def region_prefix(code: str) -> str:
    """The leading digits every region inside ``code`` shares: 33 for the province
    330000, 3302 for the city 330200, the whole code for a county."""
    width = {RegionLevel.PROVINCE: 2, RegionLevel.CITY: 4, RegionLevel.COUNTY: 6}
    return code.strip()[: width[region_level(code)]]


def region_parent(code: str) -> str | None:
    """The enclosing region: county → city, city → province, province → None."""
    level = region_level(code)
    if level is RegionLevel.PROVINCE:
        return None
    if level is RegionLevel.CITY:
        return code[:2] + "0000"
    return code[:4] + "00"


def region_ancestors(code: str) -> list[str]:
    """The region itself and every enclosing region, innermost first."""
    chain = [validate_region_code(code)]
    while (parent := region_parent(chain[-1])) is not None:
        chain.append(parent)
    return chain


def validate_industry_code(code: str) -> str:
    normalised = code.strip().upper()
    if not _INDUSTRY_RE.fullmatch(normalised):
        raise InvalidValue(
            "industry_code",
            code,
            "must be a GB/T 4754 section letter with 2-4 digits, for example C34 or C3421",
        )
    return normalised
