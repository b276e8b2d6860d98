"""Vendor ECharts into the board from its npm package, pinned, with its licence.

    .venv/bin/python scripts/vendor_echarts.py [--version 6.1.0] [--check]

Runs ``npm pack echarts@VERSION`` in a temporary folder (npm as configured on the
machine; npm checks the tarball's integrity), and copies
``dist/echarts.common.min.js`` (line, bar, pie, scatter and the common components:
all the board draws), ``LICENSE``, ``NOTICE`` and the bundled
third-party licence into ``platform_api/board/static/vendor/echarts/``, with
``echarts.json`` naming the version, the tarball's integrity and each file's
SHA-256. ``tests/api/test_board.py`` checks the files against that manifest, so an
edited or half-updated copy fails the tests. ``--check`` only compares.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "platform_api" / "board" / "static" / "vendor" / "echarts"
VERSION = "6.1.0"
FILES = {
    "package/dist/echarts.common.min.js": "echarts.common.min.js",
    "package/LICENSE": "LICENSE",
    "package/NOTICE": "NOTICE",
    "package/licenses/LICENSE-d3": "LICENSE-d3",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pack(version: str, work: Path) -> tuple[Path, str]:
    result = subprocess.run(  # noqa: S603 - a fixed command; the version is the pin
        ["npm", "pack", f"echarts@{version}", "--json"],  # noqa: S607 - npm from PATH
        cwd=work, capture_output=True, text=True, check=True,
    )  # fmt: skip
    info = json.loads(result.stdout)[0]
    return work / info["filename"], str(info["integrity"])


def vendor(version: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tarball, integrity = pack(version, work)
        with tarfile.open(tarball) as archive:
            archive.extractall(work, members=[archive.getmember(n) for n in FILES], filter="data")
        DEST.mkdir(parents=True, exist_ok=True)
        for old in DEST.iterdir():
            old.unlink()
        for source, name in FILES.items():
            shutil.copyfile(work / source, DEST / name)
    manifest: dict[str, object] = {
        "package": "echarts",
        "version": version,
        "integrity": integrity,
        "files": {name: sha256(DEST / name) for name in sorted(FILES.values())},
    }
    (DEST / "echarts.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def check() -> list[str]:
    manifest = json.loads((DEST / "echarts.json").read_text(encoding="utf-8"))
    return [
        f"{name}: SHA-256 differs from echarts.json"
        for name, digest in manifest["files"].items()
        if not (DEST / name).exists() or sha256(DEST / name) != digest
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=VERSION)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    manifest = vendor(args.version)
    print(f"vendored echarts {manifest['version']} ({manifest['integrity']}) into {DEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
