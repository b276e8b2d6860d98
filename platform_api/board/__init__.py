"""The built-in status board 状态看板 (``/board/``), served by the API.

The board is static files: one HTML page, ES modules and a stylesheet in ``static/``
(package data), and ECharts vendored from its npm package with its licence
(``static/vendor/echarts``, see ``docs/board.md``). Nothing is rendered with data on
the server, and nothing is fetched from elsewhere at run time: the page logs in with
the OAuth2 password flow of ``/api/v1/auth/token`` and reads every figure from the
public API with the user's bearer token, so the board sees exactly what the user's
grants reach, through the same scope filter as any other client.

The routes here are therefore public (no token): ``GET /board/`` (the page) and the
static files under ``/board/static/``. Both carry a Content-Security-Policy that
allows scripts, styles and connections to this origin only, and ``no-cache`` so that
a browser revalidates (ETag) and picks up a new version at once.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from zhizao import __version__

STATIC_DIR = Path(__file__).parent / "static"
PREFIX = "/board"

#: Scripts and connections only from this origin; ECharts sets inline styles on the
#: elements it draws, hence 'unsafe-inline' for styles (never for scripts).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data: blob:; connect-src 'self'; font-src 'self';"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(tags=["board 看板"])


def index_html() -> str:
    """The page, with the package version on its asset URLs (a new version is a new URL)."""
    text = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return text.replace("{{version}}", __version__)


@router.get(
    f"{PREFIX}/",
    response_class=HTMLResponse,
    summary="状态看板 The status board (HTML; its data comes from /api/v1 with the user's token)",
    responses={200: {"content": {"text/html": {"example": "<!doctype html>…"}}}},
)
async def board_page() -> HTMLResponse:
    return HTMLResponse(index_html(), headers=HEADERS)


class BoardStatic(StaticFiles):
    """Static files with the board's headers on every answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for key, value in HEADERS.items():
                    if key.lower().encode() not in names:
                        headers.append((key.lower().encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await super().__call__(scope, receive, with_headers)


def mount_board(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(f"{PREFIX}/static", BoardStatic(directory=STATIC_DIR), name="board-static")
