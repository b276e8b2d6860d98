"""The board in a real browser (Debian's Chromium, headless, driven by Playwright)
against ``zhizao api run`` on a seeded database (tests/board/world.py).

A person logs in, clicks down from the province to a line, and reads figures: each
must be the API's own figure for the same scope and day, formatted for zh-CN
(``74.8%``, ``1,210``) and with times in the enterprise's zone while the browser
sits in New York. Pages outside a role's scope are refused, raw telemetry is not
shown to roles without it, a figure changes on screen when new facts are rolled up,
a line without new data is marked stale, the session's end leads back to the login,
and the 大屏 mode cycles on its own. Every page is saved as a screenshot.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.api.world import NB1, NB2, NB_MOLD, PASSWORD, WZ, WZ_SHOE
from tests.board.conftest import BoardServer, Watched, run_async
from tests.board.world import DAY, fresh_point, more_parts

D = DAY.isoformat()
TIMEOUT = 30_000


# -- helpers ------------------------------------------------------------------------------


def pct(value: float | None) -> str:
    """What Intl.NumberFormat('zh-CN', percent, 1 decimal) shows: the exact binary
    value rounded half away from zero."""
    if value is None:
        return "—"
    shown = (Decimal(value) * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return f"{shown}%"


def count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def login(page: Page, board: BoardServer, user: str, hash_: str = "") -> None:
    page.goto(board.board + hash_)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button[type=submit]")
    expect(page.locator("#bar")).to_be_visible(timeout=TIMEOUT)


def on_page(page: Page, kind: str, **data: str) -> None:
    """Wait until the view shows the page of that kind (data-page and its keys)."""
    selector = f'#view [data-page="{kind}"]' + "".join(f'[data-{k}="{v}"]' for k, v in data.items())
    expect(page.locator(selector)).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#fresh")).to_have_attribute("data-state", "ok", timeout=TIMEOUT)


def shoot(page: Page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def shown(page: Page, kpi: str, **data: str) -> tuple[str, str]:
    """(data-value, text) of the one figure named ``kpi``: the page's tile, or the
    figure with those data attributes (a table's row)."""
    where = "" if data else ".tiles "
    selector = f'{where}[data-kpi="{kpi}"]' + "".join(f'[data-{k}="{v}"]' for k, v in data.items())
    figure = page.locator(selector)
    expect(figure).to_have_count(1, timeout=TIMEOUT)
    return figure.get_attribute("data-value") or "", figure.inner_text().strip()


def same(page: Page, kpi: str, value: float | int | None, text: str, **data: str) -> None:
    raw, said = shown(page, kpi, **data)
    assert said == text, f"{kpi} {data}: shows {said!r}, the API's figure is {text!r}"
    if value is None:
        assert raw == ""
    else:
        assert float(raw) == value, f"{kpi} {data}: data-value {raw} != API {value}"


def rate_of(answer: dict[str, Any], group: str) -> dict[str, Any]:
    return next(
        i for i in answer["items"] if i["group"] == group and i["method"] == "ratio_of_sums"
    )


def hash_of(page: Page) -> str:
    return page.evaluate("location.hash")


# -- the figures of each page, against the API ---------------------------------------------


def check_region(page: Page, board: BoardServer, user: str, code: str, by: str | None) -> None:
    level = "province" if code.endswith("0000") else "city" if code.endswith("00") else "county"
    for kind, kpi in (("networking", "networking"), ("nc", "nc")):
        answer = board.api(user, f"/kpi/{kind}", date=D, group_by=level, region=code)
        item = rate_of(answer, code)
        same(page, kpi, item["rate"], pct(item["rate"]))
        if by:
            groups = board.api(user, f"/kpi/{kind}", date=D, group_by=by, region=code)
            table = page.locator(f"table.by-{by}")
            for item in (i for i in groups["items"] if i["method"] == "ratio_of_sums"):
                cell = table.locator(f'[data-kpi="{kpi}"][data-group="{item["group"]}"]')
                expect(cell).to_have_text(pct(item["rate"]))


def check_cluster(page: Page, board: BoardServer, user: str, code: str) -> None:
    oee = board.api(user, "/kpi/oee", level="cluster", code=code, date=D)["result"]
    tile = page.locator('.tiles [data-kpi="oee"]')
    expect(tile).to_have_text(pct(oee["oee"]))
    net = rate_of(
        board.api(user, "/kpi/networking", date=D, group_by="cluster", cluster=code), code
    )
    expect(page.locator('.tiles [data-kpi="networking"]')).to_have_text(pct(net["rate"]))
    ranking = board.api(user, "/kpi/networking", date=D, group_by="enterprise", cluster=code)
    for item in (i for i in ranking["items"] if i["method"] == "ratio_of_sums"):
        ent = board.api(user, "/kpi/oee", level="enterprise", code=item["group"], date=D)
        same(page, "oee", ent["result"]["oee"], pct(ent["result"]["oee"]), group=item["group"])
        same(page, "networking", item["rate"], pct(item["rate"]), group=item["group"])


def check_enterprise(page: Page, board: BoardServer, user: str, cc: str, *, lines: bool = True
                     ) -> None:  # fmt: skip
    oee = board.api(user, "/kpi/oee", level="enterprise", code=cc, date=D)["result"]
    same(page, "oee", oee["oee"], pct(oee["oee"]))
    evidence = board.api(user, "/kpi/networking/evidence", date=D, group_by="enterprise", group=cc)
    same(page, "networking", evidence["rate"], pct(evidence["rate"]))
    same(page, "not-networked", evidence["not_counted"], count(evidence["not_counted"]))
    if not lines:
        return
    line = board.api(user, "/kpi/oee", level="line", code="L1", enterprise=cc, date=D)["result"]
    same(page, "line-oee", line["oee"], pct(line["oee"]), line="L1")
    same(page, "line-availability", line["availability"], pct(line["availability"]), line="L1")
    same(page, "line-produced", line["produced"], count(line["produced"]), line="L1")


def check_line(page: Page, board: BoardServer, user: str, cc: str) -> str:
    """The line's tiles against the API's OEE of the shift shown; returns the shift."""
    shift = page.locator('#view [data-page="line"]').get_attribute("data-shift") or ""
    params: dict[str, str] = {"level": "line", "code": "L1", "enterprise": cc, "date": D}
    if shift:
        params.update(period="shift", shift=shift)
    report = board.api(user, "/kpi/oee", **params)
    r = report["result"]
    for kpi in ("oee", "availability", "performance", "quality"):
        same(page, kpi, r[kpi], pct(r[kpi]))
    same(page, "produced", r["produced"], count(r["produced"]))
    for device in report["devices"]:
        d = device["result"]
        same(page, "device-oee", d["oee"], pct(d["oee"]), device=device["device"])
    return shift


# -- tests ---------------------------------------------------------------------------------


def test_a_wrong_password_is_refused_on_the_login_page(page: Page, board: BoardServer,
                                                       shots: Path) -> None:  # fmt: skip
    page.goto(board.board)
    expect(page.locator("form.login")).to_be_visible()
    shoot(page, shots, "login")
    page.fill("input[name=username]", "eng_nb1")
    page.fill("input[name=password]", "not-the-password")
    page.click("form.login button[type=submit]")
    expect(page.locator("[data-role=login-message]")).to_contain_text("用户名或密码错误")
    assert page.locator("#bar").is_hidden()
    assert "token" not in (page.evaluate("JSON.stringify(sessionStorage)") or "")


def test_admin_drills_down_from_the_province_to_a_line_by_clicking(
    watched: Watched, board: BoardServer, shots: Path
) -> None:
    page = watched.page
    login(page, board, "admin")
    # Home for an admin is the province, on the latest day with data.
    on_page(page, "region", region="330000")
    expect(page.locator("#day")).to_have_value(D)
    expect(page.locator("#day-note")).to_contain_text("latest day with data")
    check_region(page, board, "admin", "330000", "city")
    check_region(page, board, "admin", "330000", "cluster")
    shoot(page, shots, "region-province")
    # Choosing the day pins it: the links below carry it on.
    page.fill("#day", D)
    expect(page.locator("#latest")).to_be_visible(timeout=TIMEOUT)
    assert f"day={D}" in hash_of(page)

    page.locator("table.by-city").get_by_role("link", name=re.compile("宁波市")).click()
    on_page(page, "region", region="330200")
    check_region(page, board, "admin", "330200", "county")
    shoot(page, shots, "region-city")

    page.locator("table.by-county").get_by_role("link", name=re.compile("海曙区")).click()
    on_page(page, "region", region="330203")
    check_region(page, board, "admin", "330203", "cluster")
    shoot(page, shots, "region-county")

    page.locator("table.by-cluster").get_by_role(
        "link", name=re.compile("宁波模具产业集群")
    ).click()
    on_page(page, "cluster", cluster=NB_MOLD)
    check_cluster(page, board, "admin", NB_MOLD)
    shoot(page, shots, "cluster")

    page.locator("table.ranking").get_by_role("link", name=re.compile("宁波甲模具")).click()
    on_page(page, "enterprise", enterprise=NB1)
    check_enterprise(page, board, "admin", NB1)
    shoot(page, shots, "enterprise")

    page.locator("table.lines").get_by_role("link", name=re.compile("L1")).click()
    on_page(page, "line", enterprise=NB1, line="L1")
    shift = check_line(page, board, "admin", NB1)
    # The shift shown is the one holding the line's newest data (白班 08:00-20:00).
    assert shift == "白班"
    expect(page.locator(".tl-row")).to_have_count(2)  # M01 and M02, the production devices
    expect(page.locator('.tl-row[data-device="M01"] .tl-block[data-state="UNPLANNED_STOP"]')
           ).to_have_count(1)  # fmt: skip
    # M02 lost its connection at 18:00 and is offline at the shift's end.
    same(page, "offline-now", 1, "1")
    shoot(page, shots, "line")

    # The day chosen stays while drilling: the breadcrumb back keeps it.
    page.locator('#crumbs a[href^="#/enterprise/"]').click()
    on_page(page, "enterprise", enterprise=NB1)
    assert f"day={D}" in hash_of(page)

    # Everything came from this server: no CDN, no other origin.
    outside = [u for u in watched.requests if not u.startswith(board.base)]
    assert outside == []
    api = [u for u in watched.requests if "/api/v1/" in u]
    assert api
    assert all(u.startswith(f"{board.base}/api/v1/") for u in api)


def test_each_role_starts_on_the_page_of_its_grant(page: Page, board: BoardServer) -> None:
    for user, kind, data in (
        ("eng_nb1", "enterprise", {"enterprise": NB1}),
        ("op_nb_mold", "cluster", {"cluster": NB_MOLD}),
        ("analyst_ningbo", "region", {"region": "330200"}),
        ("analyst_lucheng", "region", {"region": "330302"}),
    ):
        login(page, board, user)
        on_page(page, kind, **data)
        assert page.locator("#who").inner_text() == user
        page.click("#logout")
        expect(page.locator("form.login")).to_be_visible()


def test_pages_outside_the_scope_are_refused(page: Page, board: BoardServer, shots: Path) -> None:
    login(page, board, "eng_nb1")
    on_page(page, "enterprise", enterprise=NB1)
    for target, api in (
        (f"#/enterprise/{WZ}?day={D}", f"/kpi/oee?level=enterprise&code={WZ}&date={D}"),
        (f"#/line/{WZ}/L1?day={D}", f"/kpi/oee?level=line&code=L1&enterprise={WZ}&date={D}"),
        (f"#/cluster/{WZ_SHOE}?day={D}", f"/kpi/networking?group_by=cluster&cluster={WZ_SHOE}"),
        (f"#/region/330300?day={D}", "/kpi/networking?group_by=city&region=330300"),
    ):
        # The API says "not found" to this user; the board says so too and shows nothing.
        bearer = {"Authorization": f"Bearer {board.token('eng_nb1')}"}
        answer = httpx.get(f"{board.base}/api/v1{api}", timeout=30, headers=bearer)
        assert answer.status_code == 404, api
        page.goto(board.board + target)
        notice = page.locator("#view .notice-error")
        expect(notice).to_contain_text("不在您的权限范围内", timeout=TIMEOUT)
        assert page.locator("[data-kpi]").count() == 0
        assert "温州丙鞋业" not in page.locator("#view").inner_text()
    shoot(page, shots, "out-of-scope")


def test_cluster_and_regional_roles_see_kpis_but_no_raw_telemetry(
    page: Page, board: BoardServer, shots: Path
) -> None:
    login(page, board, "op_nb_mold")
    on_page(page, "cluster", cluster=NB_MOLD)
    check_cluster(page, board, "op_nb_mold", NB_MOLD)
    page.goto(f"{board.board}#/line/{NB1}/L1?day={D}")
    on_page(page, "line", enterprise=NB1, line="L1")
    check_line(page, board, "op_nb_mold", NB1)
    expect(page.locator("#view")).to_contain_text("仅企业角色可见")
    assert page.locator(".tl-row").count() == 0
    shoot(page, shots, "line-cluster-operator")


def test_times_are_the_enterprises_local_times_wherever_the_browser_is(
    page: Page, board: BoardServer
) -> None:
    assert page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == "America/New_York"
    login(page, board, "eng_nb1", f"#/line/{NB1}/L1?day={D}&shift=白班")
    on_page(page, "line", enterprise=NB1, line="L1")
    expect(page.locator('.tabs a[data-shift="白班"]')).to_have_text("白班 08:00–20:00")
    expect(page.locator('.tabs a[data-shift="夜班"]')).to_have_text("夜班 20:00–08:00")
    ticks = page.locator(".tl-axis span").all_inner_texts()
    assert ticks[0] == "08:00"
    assert ticks[-1] == "20:00"
    expect(page.locator("#zone-note")).to_contain_text("Asia/Shanghai (UTC+08:00)")


def test_a_device_never_seen_is_listed_as_not_networked(page: Page, board: BoardServer) -> None:
    login(page, board, "analyst_ningbo", f"#/enterprise/{NB2}?day={D}")
    on_page(page, "enterprise", enterprise=NB2)
    check_enterprise(page, board, "analyst_ningbo", NB2)
    row = page.locator('table.silent tr[data-device="P02"]')
    expect(row).to_contain_text("从未 never")


def test_a_figure_changes_on_screen_when_new_data_arrives(
    page: Page, own_board: BoardServer, shots: Path
) -> None:
    board = own_board
    login(page, board, "eng_nb1", f"#/line/{NB1}/L1?day={D}&shift=白班&refresh=1")
    on_page(page, "line", enterprise=NB1, line="L1", shift="白班")
    check_line(page, board, "eng_nb1", NB1)
    before = board.api("eng_nb1", "/kpi/oee", level="line", code="L1", enterprise=NB1, date=D,
                       period="shift", shift="白班")["result"]  # fmt: skip
    same(page, "produced", before["produced"], count(before["produced"]))
    # 50 more good parts at 19:30, rolled up while the page is open: no reload.
    page.evaluate("window.__notReloaded = true")
    run_async(more_parts(board.db_url, 50))
    # The API reuses an answer for up to ZHIZAO_API_RESULT_CACHE_S (5 s): a change made
    # outside it (here straight in the database, as the rollup service does) shows
    # within that time.
    deadline = time.monotonic() + 15
    while True:
        after = board.api("eng_nb1", "/kpi/oee", level="line", code="L1", enterprise=NB1,
                          date=D, period="shift", shift="白班")["result"]  # fmt: skip
        if after["produced"] != before["produced"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert after["produced"] == before["produced"] + 50
    expect(page.locator('[data-kpi="produced"]')).to_have_text(count(after["produced"]),
                                                              timeout=TIMEOUT)  # fmt: skip
    expect(page.locator('.tiles [data-kpi="oee"]')).to_have_text(pct(after["oee"]))
    assert after["oee"] != before["oee"]
    check_line(page, board, "eng_nb1", NB1)
    assert page.evaluate("window.__notReloaded") is True
    shoot(page, shots, "line-after-new-data")


def test_a_line_without_new_data_is_stale_until_data_arrives(
    page: Page, own_board: BoardServer
) -> None:
    board = own_board
    login(page, board, "eng_nb1", f"#/line/{NB1}/L1?day={D}&refresh=1&stale=5")
    on_page(page, "line", enterprise=NB1, line="L1")
    badge = page.locator("h1 .stale-badge")
    # The line's newest point is of 2026-03-02 and nothing new comes: stale.
    expect(badge).to_have_attribute("data-stale", "1", timeout=TIMEOUT)
    expect(badge).to_contain_text("数据停滞")
    # A point of now arrives: fresh at the next refresh.
    run_async(fresh_point(board.db_url, datetime.now(UTC)))
    expect(badge).to_have_attribute("data-stale", "0", timeout=TIMEOUT)
    expect(badge).to_contain_text("最新 latest")


def test_the_end_of_a_session_leads_back_to_the_login(page: Page, board: BoardServer) -> None:
    login(page, board, "eng_nb1", f"#/enterprise/{NB1}?day={D}&refresh=1")
    on_page(page, "enterprise", enterprise=NB1)
    # A token the API no longer accepts (revoked, signed with an old secret): 401.
    page.evaluate("""() => {
        const key = "zhizao.board.session";
        const s = JSON.parse(sessionStorage.getItem(key));
        s.token = s.token.slice(0, -4) + "AAAA";
        sessionStorage.setItem(key, JSON.stringify(s));
    }""")
    expect(page.locator("form.login")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("[data-role=login-message]")).to_contain_text("请重新登录")
    # Logging in again leads back to the page that was open.
    page.fill("input[name=username]", "eng_nb1")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button[type=submit]")
    on_page(page, "enterprise", enterprise=NB1)


def test_an_expired_login_leads_back_to_the_login(page: Page, board: BoardServer) -> None:
    page.clock.install()
    login(page, board, "eng_nb1", f"#/enterprise/{NB1}?day={D}")
    on_page(page, "enterprise", enterprise=NB1)
    # Tokens last 15 minutes: the board leaves when its token does, not at a 401.
    page.clock.fast_forward("16:00")
    expect(page.locator("form.login")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("[data-role=login-message]")).to_contain_text("登录已过期")


def test_the_tv_mode_cycles_through_the_enterprise_and_its_lines(
    page: Page, board: BoardServer, shots: Path
) -> None:
    login(page, board, "eng_nb1", f"#/enterprise/{NB1}?day={D}")
    on_page(page, "enterprise", enterprise=NB1)
    page.click("#tv")
    expect(page.locator("body")).to_have_class(re.compile(r"\btv\b"), timeout=TIMEOUT)
    assert "tv=1" in hash_of(page)
    shoot(page, shots, "enterprise-tv")
    # Faster than the default 20 s for the test: every 2 s the next page.
    page.goto(f"{board.board}{hash_of(page)}&cycle=4")
    on_page(page, "line", enterprise=NB1, line="L1")
    assert "tv=1" in hash_of(page)
    shoot(page, shots, "line-tv")
    on_page(page, "enterprise", enterprise=NB1)
    page.click("#tv")  # 退出大屏 exit TV
    expect(page.locator("body")).not_to_have_class(re.compile(r"\btv\b"), timeout=TIMEOUT)
