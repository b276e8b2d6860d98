"""A fake Grafana on pytest-httpserver: the parts of Grafana's HTTP API that
``zhizao dashboards push`` uses, answering as Grafana documents them (folders,
datasources by uid, dashboards/db, dashboards/uid, search, frontend settings), with a
bearer token checked and every write recorded.

What it cannot tell is whether a real Grafana accepts the JSON and shows the panels:
docs/dashboards.md says what only the compose file in deploy/ exercises.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


@dataclass
class FakeGrafana:
    token: str
    version: str = "11.6.0"
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    boards: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: list[tuple[str, str]] = field(default_factory=list)
    _next_id: int = 1

    def install(self, server: HTTPServer) -> None:
        server.expect_request(re.compile(r"^/api/.*")).respond_with_handler(self.handle)

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def handle(self, request: Request) -> Response:  # noqa: PLR0911, PLR0912 - one per route
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json({"message": "Unauthorized"}, 401)
        path, method = request.path, request.method
        body = request.get_json(silent=True) or {}
        if method != "GET":
            self.writes.append((method, path))
        if path == "/api/frontend/settings":
            return _json({"buildInfo": {"version": self.version, "edition": "Open Source"}})
        if m := re.fullmatch(r"/api/folders/([^/]+)", path):
            return self._folder(method, m[1], body)
        if path == "/api/folders" and method == "POST":
            uid = body.get("uid") or f"f{self._id()}"
            if uid in self.folders:
                return _json({"message": "a folder with the same uid already exists"}, 409)
            self.folders[uid] = {"id": self._id(), "uid": uid, "title": body["title"], "version": 1}
            return _json(self.folders[uid])
        if m := re.fullmatch(r"/api/datasources/uid/([^/]+)", path):
            return self._datasource(method, m[1], body)
        if path == "/api/datasources" and method == "POST":
            if any(d["name"] == body["name"] for d in self.datasources.values()):
                return _json({"message": "data source with the same name already exists"}, 409)
            self._store_datasource(body["uid"], body)
            stored = self.datasources[body["uid"]]
            return _json({"datasource": stored, "id": stored["id"], "message": "Datasource added",
                          "name": stored["name"]})  # fmt: skip
        if m := re.fullmatch(r"/api/dashboards/uid/([^/]+)", path):
            if m[1] not in self.boards:
                return _json({"message": "Dashboard not found"}, 404)
            return _json(self.boards[m[1]])
        if path == "/api/dashboards/db" and method == "POST":
            return self._save_dashboard(body)
        if path == "/api/search":
            return _json(self._search(request.args.get("tag"), request.args.get("type")))
        return _json({"message": "Not found"}, 404)

    def _folder(self, method: str, uid: str, body: dict[str, Any]) -> Response:
        folder = self.folders.get(uid)
        if folder is None:
            return _json({"message": "folder not found", "status": "not-found"}, 404)
        if method == "PUT":
            if not body.get("overwrite") and body.get("version") != folder["version"]:
                return _json({"message": "the folder has been changed by someone else"}, 412)
            folder.update(title=body.get("title", folder["title"]), version=folder["version"] + 1)
        return _json(folder)

    def _store_datasource(self, uid: str, body: dict[str, Any]) -> None:
        secure = body.get("secureJsonData") or {}
        if "password" in secure:
            self.passwords[uid] = secure["password"]
        kept = {k: v for k, v in body.items() if k != "secureJsonData"}
        previous = self.datasources.get(uid, {})
        self.datasources[uid] = {
            "id": previous.get("id", self._id()),
            "orgId": 1,
            "readOnly": False,
            "withCredentials": False,
            "database": "",
            "basicAuthUser": "",
            **kept,
            "version": previous.get("version", 0) + 1,
            "secureJsonFields": {"password": uid in self.passwords},
        }

    def _datasource(self, method: str, uid: str, body: dict[str, Any]) -> Response:
        if uid not in self.datasources:
            return _json({"message": "Data source not found"}, 404)
        if method == "PUT":
            self._store_datasource(uid, {**body, "uid": uid})
            return _json({"datasource": self.datasources[uid], "id": self.datasources[uid]["id"],
                          "message": "Datasource updated", "name": body["name"]})  # fmt: skip
        return _json(self.datasources[uid])

    def _save_dashboard(self, body: dict[str, Any]) -> Response:
        board = dict(body["dashboard"])
        uid = board["uid"]
        folder = body.get("folderUid")
        if folder is not None and folder not in self.folders:
            return _json({"message": "folder not found"}, 400)
        old = self.boards.get(uid)
        if old is not None and not body.get("overwrite"):
            return _json({"message": "The dashboard has been changed by someone else",
                          "status": "version-mismatch"}, 412)  # fmt: skip
        version = 1 if old is None else old["dashboard"]["version"] + 1
        board.update(id=old["dashboard"]["id"] if old else self._id(), version=version)
        self.boards[uid] = {
            "dashboard": board,
            "meta": {"folderUid": folder or "", "version": version, "slug": uid,
                     "url": f"/d/{uid}/{uid}", "provisioned": False},
        }  # fmt: skip
        return _json({"id": board["id"], "uid": uid, "url": f"/d/{uid}/{uid}",
                      "status": "success", "version": version, "slug": uid})  # fmt: skip

    def _search(self, tag: str | None, kind: str | None) -> list[dict[str, Any]]:
        found = []
        for uid, saved in self.boards.items():
            board = saved["dashboard"]
            if tag is not None and tag not in board.get("tags", []):
                continue
            if kind not in (None, "dash-db"):
                continue
            meta = saved["meta"]
            found.append({"id": board["id"], "uid": uid, "title": board["title"],
                          "type": "dash-db", "tags": board.get("tags", []),
                          "folderUid": meta["folderUid"], "url": meta["url"]})  # fmt: skip
        return found
