"""The route × role matrix: what every persona must get from every route.

Each area's test module declares its routes as :class:`Case` rows in a module-level
``CASES`` list; ``test_matrix.py`` runs them all for every persona against an object
inside and one outside each persona's scope, and fails if any route of the app's
OpenAPI document has no case, so a route cannot be added without deciding who may
call it.

Kinds, and the status a persona gets for an object of enterprise ``ent``:

* ``public``: no authentication (health, login);
* ``self``: any authenticated user, about themselves;
* ``admin``: admins only (403 for the rest);
* ``summary``: 2xx if ``ent`` is in the persona's scope, else 404;
* ``raw``: 403 for personas with no enterprise role; 2xx inside their scope; 404 outside;
* ``write``: 2xx if the persona may change ``ent``; 403 if it may only see it; else 404;
* ``list``: 2xx for every authenticated persona; every item and the total only of the
  persona's scope (``item_enterprise`` says whose an item is);
* ``writer``: 2xx for personas that may change some enterprise (admins, enterprise
  engineers), 403 for the rest, whatever ``ent`` (the ledger upload: whose rows an
  engineer may import is decided row by row, and tested apart).

``prepare`` adds what the seeded world lacks (a site, say) to the test's database
before the calls: once for read routes, on each persona's fresh database for writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.api.world import NB1, RAW, SEES, WRITES, WZ

Kind = Literal["public", "self", "admin", "summary", "raw", "write", "list", "writer"]


@dataclass(frozen=True)
class Case:
    method: str
    template: str
    kind: Kind
    #: The concrete URL for an object of the given enterprise (or the template's URL).
    url: Callable[[str], str] | None = None
    #: Request body (JSON) for the given persona and enterprise.
    body: Callable[[str, str], Any] | None = None
    #: Form body instead of JSON.
    form: Callable[[str, str], dict[str, str]] | None = None
    #: Multipart files: field name → (file name, content, media type).
    files: Callable[[str, str], dict[str, tuple[str, bytes, str]]] | None = None
    #: Run on the test's database (its URL) before the calls.
    prepare: Callable[[str], None] | None = None
    ok: int = 200
    #: For ``list``: the enterprise an item belongs to (None: not per enterprise).
    item_enterprise: Callable[[dict[str, Any]], str | None] | None = None
    #: Enterprises to try: inside NB1 and outside WZ, unless the route has no object.
    enterprises: tuple[str, ...] = (NB1, WZ)
    note: str = ""
    extra_ok: frozenset[int] = field(default=frozenset())

    @property
    def key(self) -> tuple[str, str]:
        return self.method.upper(), self.template

    @property
    def objects(self) -> tuple[str, ...]:
        """Enterprises to try: routes that are not about an enterprise are tried once."""
        if self.kind in ("public", "self", "admin", "list"):
            return self.enterprises[:1]
        return self.enterprises

    def target(self, ent: str) -> str:
        return self.url(ent) if self.url else self.template


def expected(case: Case, persona: str, ent: str) -> int:  # noqa: PLR0911 - one per kind
    if case.kind in ("public", "self", "list"):
        return case.ok
    if case.kind == "admin":
        return case.ok if persona == "admin" else 403
    if case.kind == "writer":
        return case.ok if persona in WRITES else 403
    if case.kind == "summary":
        return case.ok if ent in SEES[persona] else 404
    if case.kind == "raw":
        if persona not in RAW:
            return 403
        return case.ok if ent in RAW[persona] else 404
    # write
    if ent in WRITES.get(persona, frozenset()):
        return case.ok
    return 403 if ent in SEES[persona] else 404
