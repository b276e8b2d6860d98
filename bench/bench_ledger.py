"""Ledger import benchmark: 100,000 devices from XLSX and CSV, beside bare baselines.

    .venv/bin/python bench/bench_ledger.py [--devices 100000] [--server-url postgresql://...]

Generates a ledger of ``--devices`` devices of 500 enterprises (one 企业 sheet, one
设备台账 sheet with workshops, lines, flags, cycle times and dates) as an ``.xlsx``
written with XlsxWriter (shared strings and real date cells, as Excel saves them) and
as ``.csv`` files, then measures each of these in a fresh process, so that its peak
RSS is its own:

- ``openpyxl``: a bare openpyxl read-only read of every row of the workbook;
- ``csv``: a bare ``csv.reader`` pass over the device file;
- ``copy``: a bare ``COPY`` of the same device rows into ``device`` of a fresh
  database holding the enterprises (the same constraints and indexes, no checks);
- ``parse xlsx``: ``zhizao.ledger.read_ledger`` of the workbook (no database);
- ``import xlsx``: what ``zhizao registry import`` does, into a fresh database;
- ``reimport xlsx``: the same file again (every row unchanged);
- ``import csv``: the device CSV into a fresh database holding the enterprises.

Prints seconds and peak RSS for each; the differences to the baselines are what the
importer adds. Asserts nothing about time (DESIGN: benchmarks print).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import xlsxwriter

from zhizao.codes import make_credit_code
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import with_database
from zhizao.storage.migrate import upgrade

ENTERPRISES = 500
ENTERPRISE_HEADER = ["统一社会信用代码", "企业名称", "行政区划代码", "行业代码", "是否规上"]
DEVICE_HEADER = ["统一社会信用代码", "设备编号", "设备名称", "设备类型", "车间", "产线",
                 "是否数控", "关键工序", "标准节拍(秒)", "投产日期"]  # fmt: skip
TYPES = ["数控机床", "加工中心", "工业机器人", "注塑机", "冲床", "空压机", "三坐标"]


def enterprises() -> list[list[object]]:
    return [
        [make_credit_code(f"91330206MA{n:07d}"), f"宁波第{n}精密机械有限公司", "330206", "C3670",
         "是" if n % 3 else "否"]
        for n in range(ENTERPRISES)
    ]  # fmt: skip


def devices(count: int, codes: list[str]) -> list[list[object]]:
    return [
        [codes[n % len(codes)], f"CNC-{n:06d}", f"立式加工中心 VMC850 #{n}", TYPES[n % len(TYPES)],
         f"机加{n % 5}车间", f"L{n % 10}", "是" if n % 2 else "否", "否", 30 + n % 50,
         datetime.date(2018 + n % 8, 1 + n % 12, 1 + n % 28)]
        for n in range(count)
    ]  # fmt: skip


def write_files(folder: Path, count: int) -> tuple[Path, Path, Path]:
    ents = enterprises()
    devs = devices(count, [str(e[0]) for e in ents])
    xlsx = folder / "ledger.xlsx"
    book = xlsxwriter.Workbook(str(xlsx))
    day = book.add_format({"num_format": "yyyy-mm-dd"})
    sheet = book.add_worksheet("企业")
    sheet.write_row(0, 0, ENTERPRISE_HEADER)
    for row, values in enumerate(ents, start=1):
        sheet.write_row(row, 0, values)
    sheet = book.add_worksheet("设备台账")
    sheet.write_row(0, 0, DEVICE_HEADER)
    for row, values in enumerate(devs, start=1):
        sheet.write_row(row, 0, values[:-1])
        when = values[-1]
        assert isinstance(when, datetime.date)
        sheet.write_datetime(row, len(values) - 1, _midnight(when), day)
    book.close()
    enterprises_csv, devices_csv = folder / "enterprises.csv", folder / "devices.csv"
    for path, header, rows in (
        (enterprises_csv, ENTERPRISE_HEADER, ents),
        (devices_csv, DEVICE_HEADER, devs),
    ):
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return xlsx, enterprises_csv, devices_csv


def _midnight(day: datetime.date) -> datetime.datetime:
    # A spreadsheet date has no time zone.
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).replace(tzinfo=None)


# -- measurements, each run in a process of its own ----------------------------------


def _peak_mb() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over an
    exec, so a child would report the peak of the parent that forked it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, path: Path, url: str) -> dict[str, float]:
    from zhizao.cli.registry import import_ledger
    from zhizao.ledger import read_ledger

    start = time.perf_counter()
    rows = 0
    if kind == "openpyxl":
        from openpyxl import load_workbook

        book = load_workbook(path, read_only=True, data_only=True)
        for sheet in book.worksheets:
            for _ in sheet.iter_rows(values_only=True):
                rows += 1
        book.close()
    elif kind == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows = sum(1 for _ in csv.reader(handle))
    elif kind == "copy":
        rows = _copy_devices(path, url)
    elif kind == "parse":
        rows = len(read_ledger(path).devices)
    else:  # import, reimport
        ledger, changes = asyncio.run(import_ledger(DatabaseSettings(url=url), path))
        rows = changes.stored
        if ledger.errors:
            raise SystemExit(f"unexpected errors: {ledger.errors[:3]}")
    return {"seconds": time.perf_counter() - start, "peak_mb": _peak_mb(), "rows": rows}


def _copy_devices(path: Path, url: str) -> int:
    with psycopg.connect(url) as conn:
        ids = dict(conn.execute("SELECT credit_code, id FROM enterprise").fetchall())
        count = 0
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            next(reader)
            with conn.cursor().copy(
                "COPY device (enterprise_id, code, name, device_type, is_nc, key_process,"
                " ideal_cycle_time_s, commissioned_on) FROM STDIN"
            ) as copy:
                for credit, code, name, kind, _, _, nc, key, cycle, day in reader:
                    copy.write_row((ids[credit], code, name, kind, nc == "是", key == "是",
                                    float(cycle), day))  # fmt: skip
                    count += 1
    return count


def _run(kind: str, path: Path, url: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", kind, str(path), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _fresh(server: str, name: str, with_enterprises: Path | None) -> str:
    with psycopg.connect(with_database(server, "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    asyncio.run(upgrade(DatabaseSettings(url=url)))
    if with_enterprises is not None:
        from zhizao.cli.registry import import_ledger

        asyncio.run(import_ledger(DatabaseSettings(url=url), with_enterprises))
    return url


def _drop(server: str, name: str) -> None:
    with psycopg.connect(with_database(server, "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--measure", nargs=3, metavar=("KIND", "FILE", "URL"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.measure:
        kind, file, url = args.measure
        print(json.dumps(measure(kind, Path(file), url)))
        return
    server = args.server_url
    db = "zhizao_bench_ledger"
    with tempfile.TemporaryDirectory() as folder:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"load average (1, 5, 15 min) at the start: {load}", flush=True)
        started = time.perf_counter()
        xlsx, enterprises_csv, devices_csv = write_files(Path(folder), args.devices)
        print(f"generated {args.devices:,} devices of {ENTERPRISES} enterprises in "
              f"{time.perf_counter() - started:.1f} s: {xlsx.stat().st_size / 2**20:.1f} MiB xlsx, "
              f"{devices_csv.stat().st_size / 2**20:.1f} MiB csv", flush=True)  # fmt: skip
        results: list[tuple[str, dict[str, float]]] = []

        def run(label: str, kind: str, path: Path, url: str = "") -> None:
            results.append((label, _run(kind, path, url)))
            print(f"  {label}: {results[-1][1]['seconds']:.2f} s", flush=True)

        run("baseline: openpyxl read-only read of the xlsx", "openpyxl", xlsx)
        run("baseline: csv.reader over the device csv", "csv", devices_csv)
        url = _fresh(server, db, enterprises_csv)
        run("baseline: COPY of the device rows (fresh db)", "copy", devices_csv, url)
        run("read_ledger of the xlsx (no database)", "parse", xlsx)
        url = _fresh(server, db, None)
        run("import xlsx into a fresh db", "import", xlsx, url)
        run("re-import of the same xlsx (all unchanged)", "import", xlsx, url)
        url = _fresh(server, db, enterprises_csv)
        run("import device csv (enterprises registered)", "import", devices_csv, url)
        _drop(server, db)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nload average (1, 5, 15 min) at the end: {load}")
    print(f"\n{'what':<48} {'rows':>9} {'seconds':>8} {'peak RSS MB':>12}")
    for label, result in results:
        print(f"{label:<48} {int(result['rows']):>9,} {result['seconds']:>8.2f} "
              f"{result['peak_mb']:>12.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
