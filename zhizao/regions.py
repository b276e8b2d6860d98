"""Reference list of Zhejiang's GB/T 2260 administrative divisions (行政区划).

``zhizao/data/regions_zhejiang.csv`` holds the province, its 11 prefecture-level
cities and its 90 county-level divisions with the codes in force since the 2021
reorganisation of Hangzhou (上城/拱墅 merged, 临平 and 钱塘 created), after 龙港市
(2019), 玉环市 (2017), 临安区 (2017), 奉化区 (2016) and 洞头区 (2015). The registry
seeds regions from it, so enterprises anywhere in the province resolve to a
county, city and province without a regions sheet in every ledger.

The file ships inside the package and is read through :mod:`importlib.resources`,
so it works from a wheel or a zip as well as from a checkout.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from functools import cache
from importlib import resources

from zhizao.codes import region_ancestors
from zhizao.errors import InvalidValue
from zhizao.registry import Region

_RESOURCE = ("data", "regions_zhejiang.csv")


@cache
def _load() -> tuple[Region, ...]:
    resource = resources.files("zhizao")
    for part in _RESOURCE:
        resource = resource / part
    text = resource.read_text(encoding="utf-8")
    return tuple(
        Region(code=row["code"], name=row["name"]) for row in csv.DictReader(io.StringIO(text))
    )


def zhejiang_regions() -> list[Region]:
    """Province 330000, its cities and counties, parents before children (file order)."""
    # A fresh list each call: the cached tuple must not be mutated through the result.
    return list(_load())


#: Suffixes a ledger may leave off a division's name: 温州 for 温州市, 乐清 for 乐清市.
_NAME_SUFFIXES = ("省", "市", "区", "县")


def _name_key(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


@cache
def _name_index() -> dict[str, frozenset[str]]:
    """Every way a ledger writes a division's name → the codes it may mean.

    A county is found by its own name (鹿城区), with its city in front (温州市鹿城区,
    温州鹿城区) or with the province too (浙江省温州市鹿城区); any level also without
    its suffix (温州, 乐清) where that is still a name of the list.
    """
    names = {region.code: _name_key(region.name) for region in _load()}
    index: dict[str, set[str]] = {}

    def forms(name: str) -> set[str]:
        stripped = {name[: -len(s)] for s in _NAME_SUFFIXES if name.endswith(s) and len(name) > 2}
        return {name} | stripped

    for code in names:
        chain = [names[c] for c in region_ancestors(code)[::-1] if c in names]  # province first
        keys: set[str] = set()
        # The division's own name, then with one or more enclosing names in front.
        for start in range(len(chain)):
            parts = chain[start:]
            keys |= {"".join(p) for p in _products([forms(part) for part in parts])}
        for key in keys:
            index.setdefault(key, set()).add(code)
    return {key: frozenset(codes) for key, codes in index.items()}


def _products(options: list[set[str]]) -> list[tuple[str, ...]]:
    result: list[tuple[str, ...]] = [()]
    for choice in options:
        result = [(*prefix, item) for prefix in result for item in sorted(choice)]
    return result


def region_code_for(value: str) -> str:
    """The GB/T 2260 code a ledger cell means: the code itself, or a Zhejiang name.

    ``330302``, ``鹿城区``, ``温州市鹿城区`` and ``浙江省温州市鹿城区`` all give 330302.
    A name that fits no division, or several (a suffix-less form shared by two), is an
    :class:`InvalidValue` that asks for the code.
    """
    text = _name_key(value)
    if text.isascii():
        return text  # a code, validated where the model checks codes
    codes = _name_index().get(text)
    if not codes:
        raise InvalidValue(
            "region_code",
            value,
            "is neither a GB/T 2260 code nor the name of a Zhejiang city or county "
            "(e.g. 330302 or 温州市鹿城区)",
        )
    if len(codes) > 1:
        raise InvalidValue(
            "region_code", value, f"may mean {', '.join(sorted(codes))}; give the code"
        )
    return next(iter(codes))
