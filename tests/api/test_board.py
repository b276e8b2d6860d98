"""The board's own routes: static files only, public, with a strict CSP.

The board's data always comes from the authenticated API (tests/board drive it in a
real browser); here: what the server sends, that every file the page needs is there
and is package data, and that the vendored chart code is the pinned release.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

from platform_api.board import STATIC_DIR
from scripts.vendor_echarts import check as check_vendored
from tests.api.conftest import ApiClient
from tests.api.matrix import Case

ROOT = Path(__file__).resolve().parents[2]

CASES = [Case("GET", "/board/", "public")]


async def test_the_page_is_served_with_a_policy_that_allows_this_origin_only(
    api: ApiClient,
) -> None:
    client = api.anonymous()
    page = await client.get("/board/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "{{version}}" not in page.text
    # No address outside this origin anywhere in the page.
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    assets = re.findall(r"(?:src|href)=\"(static/[^\"?]+)", page.text)
    assert "static/js/app.js" in assets
    for asset in assets:
        answer = await client.get(f"/board/{asset}")
        assert answer.status_code == 200, asset
        assert answer.headers["content-security-policy"] == csp
        assert answer.headers["cache-control"] == "no-cache"
    # /board without the slash leads to the page.
    redirect = await client.get("/board")
    assert redirect.status_code in (307, 308)
    assert redirect.headers["location"].endswith("/board/")


async def test_a_missing_file_is_a_problem_not_a_page(api: ApiClient) -> None:
    answer = await api.anonymous().get("/board/static/js/nope.js")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


def test_every_module_the_page_imports_is_there() -> None:
    scripts = STATIC_DIR / "js"
    for module in scripts.glob("*.js"):
        for target in re.findall(r"^import .* from \"\./([^\"]+)\";", module.read_text(), re.M):
            assert (scripts / target).exists(), f"{module.name} imports {target}"
        # The board reads the public API only, through api.js.
        text = module.read_text()
        if module.name != "api.js":
            assert "fetch(" not in text, module.name
        assert ".innerHTML" not in text, module.name


def test_every_static_file_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["platform_api.board"]
    base = STATIC_DIR.parent
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            rel = path.relative_to(base).as_posix()
            assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data"


def test_the_vendored_chart_code_is_the_pinned_release_with_its_licence() -> None:
    vendor = STATIC_DIR / "vendor" / "echarts"
    manifest = json.loads((vendor / "echarts.json").read_text(encoding="utf-8"))
    assert manifest["package"] == "echarts"
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    assert {"LICENSE", "NOTICE", "echarts.common.min.js"} <= set(manifest["files"])
    assert check_vendored() == []
    assert "Apache License" in (vendor / "LICENSE").read_text(encoding="utf-8")
    index = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert "vendor/echarts/echarts.common.min.js" in index


def test_the_openapi_document_describes_the_page_as_html() -> None:
    from platform_api import create_app
    from tests.api.conftest import make_settings

    doc = create_app(make_settings("postgresql://unused")).openapi()
    content = doc["paths"]["/board/"]["get"]["responses"]["200"]["content"]
    assert "text/html" in content
