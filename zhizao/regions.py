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
from functools import cache
from importlib import resources

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
