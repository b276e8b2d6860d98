"""A ledger of 20,000 devices through the CLI: batches, progress, errors, re-import.

Rows are written 5,000 per statement, so this file spans four batches; a bad row in
the third must cost only itself, a re-import must change nothing, and an import this
long reports its progress on stderr. (The time such an import takes is a benchmark,
bench/bench_ledger.py, not a test.)
"""

from __future__ import annotations

import re
from pathlib import Path

from zhizao.codes import make_credit_code
from zhizao.storage.registry import BATCH_ROWS

from .test_ledger_realworld import rows, summary_numbers, wide_console, zhizao  # noqa: F401

DEVICES = 20_000
ENTERPRISES = [make_credit_code(f"91330206MA{n:07d}") for n in range(40)]


def write_ledger(tmp_path: Path, *, bad_row: int | None = None) -> tuple[Path, Path]:
    enterprises = tmp_path / "enterprises.csv"
    lines = [f"{code},宁波第{n}机械有限公司,330206,C3670" for n, code in enumerate(ENTERPRISES)]
    enterprises.write_text(
        "统一社会信用代码,企业名称,行政区划代码,行业代码\n" + "\n".join(lines) + "\n",
        encoding="utf-8",
    )
    lines = ["统一社会信用代码,设备编号,设备名称,设备类型,车间,产线,标准节拍(秒)"]
    for n in range(DEVICES):
        cycle = "-5" if bad_row is not None and n + 2 == bad_row else str(30 + n % 50)
        lines.append(
            f"{ENTERPRISES[n % len(ENTERPRISES)]},CNC-{n:05d},加工中心 #{n},数控机床,"
            f"机加{n % 3}车间,L{n % 7},{cycle}"
        )
    devices = tmp_path / "devices.csv"
    devices.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return enterprises, devices


def test_a_20000_row_ledger_in_batches_with_progress_and_one_bad_row(
    db_url: str, tmp_path: Path
) -> None:
    assert DEVICES > 3 * BATCH_ROWS
    bad_row = 2 * BATCH_ROWS + 1234  # in the third batch
    enterprises, devices = write_ledger(tmp_path, bad_row=bad_row)
    assert zhizao("registry", "import", str(enterprises), "--db-url", db_url)[0] == 0

    code, out = zhizao("registry", "import", str(devices), "--db-url", db_url)

    assert code == 1, out[-2000:]
    assert summary_numbers(out) == (DEVICES - 1, 1, 1, 0)
    assert f"│ devices.csv  │ {bad_row}" in out
    # Progress on stderr (mixed into the output here), a line per tenth of each step.
    assert "读取 reading devices.csv: 20,001 / 20,001 行 rows" in out
    assert "检查 checking devices.csv: 10,000 / 20,001 行 rows" in out
    assert "存储 storing devices: 19,999 / 19,999 行 rows" in out
    stored = rows(
        db_url,
        "SELECT count(*), count(DISTINCT (enterprise_id, code)), min(ideal_cycle_time_s),"
        " count(DISTINCT site_id), count(DISTINCT line_id) FROM device",
    )
    # 40 enterprises x 3 workshops and x 7 lines, each created once.
    assert stored == [(DEVICES - 1, DEVICES - 1, 30.0, 120, 280)]
    assert rows(db_url, "SELECT code FROM device WHERE code = %s", f"CNC-{bad_row - 2:05d}") == []

    stamp = rows(db_url, "SELECT max(updated_at) FROM device")
    code, out = zhizao("registry", "import", str(devices), "--db-url", db_url)
    assert code == 1
    assert summary_numbers(out) == (DEVICES - 1, 1, 1, 0)
    # read, stored, rejected, inserted, updated, unchanged
    assert table_row(out, "设备 devices") == [DEVICES, DEVICES - 1, 1, 0, 0, DEVICES - 1]
    assert rows(db_url, "SELECT max(updated_at) FROM device") == stamp  # nothing rewritten


def table_row(out: str, label: str) -> list[int]:
    line = next(line for line in out.splitlines() if label in line)
    return [int(cell) for cell in re.findall(r"│\s*(\d+)\s*(?=│)", line)]


def test_a_small_import_shows_no_progress(db_url: str, tmp_path: Path) -> None:
    enterprises, _ = write_ledger(tmp_path)
    code, out = zhizao("registry", "import", str(enterprises), "--db-url", db_url)
    assert code == 0, out
    assert "行 rows\n" not in out.replace("rows stored", "")
    assert "读取 reading" not in out
