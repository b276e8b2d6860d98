"""GB 32100 credit codes, GB/T 2260 regions, GB/T 4754 industries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhizao.codes import (
    CREDIT_ALPHABET,
    RegionLevel,
    credit_check_character,
    make_credit_code,
    region_ancestors,
    region_level,
    validate_credit_code,
    validate_industry_code,
    validate_region_code,
)
from zhizao.errors import InvalidValue

# The worked example widely quoted with the standard.
KNOWN_VALID = ["91350100M000100Y43"]

prefixes = st.builds(
    lambda head, region, body: head + region + body,
    st.text(alphabet=CREDIT_ALPHABET, min_size=2, max_size=2),
    st.from_regex(r"[1-9][0-9]{5}", fullmatch=True),
    st.text(alphabet=CREDIT_ALPHABET, min_size=9, max_size=9),
)


@pytest.mark.parametrize("code", KNOWN_VALID)
def test_published_codes_validate(code: str) -> None:
    assert validate_credit_code(code) == code


@given(prefixes)
def test_completed_code_always_validates(prefix: str) -> None:
    code = make_credit_code(prefix)
    assert validate_credit_code(code.lower()) == code


@given(prefixes, st.integers(min_value=0, max_value=16), st.sampled_from(CREDIT_ALPHABET))
def test_any_single_substitution_is_detected(prefix: str, pos: int, char: str) -> None:
    # Weights 3**i mod 31 are all non-zero mod a prime, so changing one character
    # always changes the weighted sum mod 31 and hence the check character.
    code = make_credit_code(prefix)
    if code[pos] == char:
        return
    tampered = code[:pos] + char + code[pos + 1 :]
    with pytest.raises(InvalidValue):
        validate_credit_code(tampered)


def test_wrong_check_character_names_both() -> None:
    with pytest.raises(InvalidValue) as info:
        validate_credit_code("91350100M000100Y44")
    assert info.value.field == "credit_code"
    assert "'4'" in info.value.rule
    assert "'3'" in info.value.rule


@pytest.mark.parametrize(
    ("code", "rule"),
    [
        ("9135010", "18 characters"),
        ("91350100M000100I43", "not in the GB 32100 alphabet"),
    ],
)
def test_malformed_codes_name_the_rule(code: str, rule: str) -> None:
    with pytest.raises(InvalidValue, match=rule):
        validate_credit_code(code)


def test_check_character_of_the_standard_example() -> None:
    assert credit_check_character("91350100M000100Y4") == "3"


@pytest.mark.parametrize(
    ("code", "level", "chain"),
    [
        ("330000", RegionLevel.PROVINCE, ["330000"]),
        ("330100", RegionLevel.CITY, ["330100", "330000"]),
        ("330106", RegionLevel.COUNTY, ["330106", "330100", "330000"]),
        ("331082", RegionLevel.COUNTY, ["331082", "331000", "330000"]),
    ],
)
def test_region_levels_follow_from_the_code(
    code: str, level: RegionLevel, chain: list[str]
) -> None:
    assert region_level(code) is level
    assert region_ancestors(code) == chain


@pytest.mark.parametrize("code", ["33010", "033010", "3301a6", "330006"])
def test_bad_region_codes(code: str) -> None:
    with pytest.raises(InvalidValue, match="region_code"):
        validate_region_code(code)


@pytest.mark.parametrize("code", ["C", "C34", "c342", "C3421"])
def test_industry_codes(code: str) -> None:
    assert validate_industry_code(code) == code.upper()


@pytest.mark.parametrize("code", ["34", "C3", "C34211", "Z34"])
def test_bad_industry_codes(code: str) -> None:
    with pytest.raises(InvalidValue, match="GB/T 4754"):
        validate_industry_code(code)
