"""``python -m zhizao.probe [URL]``: the container health check of every service.

Exit 0 when ``URL`` answers 200 within the timeout, 1 otherwise, with one line saying
why. The image has no curl: this uses the standard library only, and reads the URL
from ``ZHIZAO_HEALTH_URL`` when none is given, so that one ``HEALTHCHECK`` in the
Dockerfile serves the API (``:8000/health``), ingest (``:9109/health``), the rollup
service (``:9110/health``) and the edge (``:9108/health``), each setting its own.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8000/health"


def probe(url: str, timeout_s: float = 3.0) -> tuple[bool, str]:
    """Whether ``url`` answers 200, and what it answered (for the health log)."""
    if urlsplit(url).scheme not in ("http", "https"):
        return False, f"{url!r} is not an http:// or https:// URL"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - checked above
            body = response.read(512).decode("utf-8", "replace")
            return response.status == 200, f"{response.status} {body.strip()}"
    except urllib.error.HTTPError as exc:  # 503 while degraded: not healthy
        return False, f"{exc.code} {exc.read(512).decode('utf-8', 'replace').strip()}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {getattr(exc, 'reason', exc)}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else os.environ.get("ZHIZAO_HEALTH_URL", DEFAULT_URL)
    healthy, said = probe(url)
    print(said[:300])  # docker keeps the last lines of a health check: say why
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
