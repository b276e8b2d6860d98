"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API returns has ``type``, ``title``, ``status`` and ``detail``; a
validation error also has ``errors``, one entry per field with the field's location,
the rule it broke and the value it had, so a client (or a person reading the
response) can tell exactly what to change. Values of secret fields are never echoed.
Errors never name an object the caller may not see: a missing object and one
outside the caller's scope give the same 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from zhizao.errors import InvalidValue

log = structlog.get_logger("platform_api")

MEDIA_TYPE = "application/problem+json"
_SECRET_FIELDS = frozenset({"password", "new_password", "old_password", "secret", "token"})

_TITLES = {
    400: "请求有误 Bad request",
    401: "未登录或凭据无效 Not authenticated",
    403: "无权访问 Forbidden",
    404: "未找到 Not found",
    405: "方法不允许 Method not allowed",
    409: "冲突 Conflict",
    412: "前提条件不满足 Precondition failed",
    413: "内容过大 Content too large",
    415: "不支持的媒体类型 Unsupported media type",
    422: "数据校验失败 Validation failed",
    429: "请求过于频繁 Too many requests",
    500: "服务器内部错误 Internal server error",
    503: "服务不可用 Service unavailable",
}


class FieldProblem(BaseModel):
    field: str = Field(examples=["body.code"])
    rule: str = Field(examples=["must be 1-64 letters, digits, '_', '.' or '-'"])
    value: Any = Field(default=None, examples=["M 01"])


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(default="about:blank", examples=["urn:zhizao:problem:validation"])
    title: str = Field(examples=["数据校验失败 Validation failed"])
    status: int = Field(examples=[422])
    detail: str = Field(default="", examples=["body.code: must be 1-64 letters, digits ..."])
    instance: str | None = Field(default=None, examples=["/api/v1/devices"])
    errors: list[FieldProblem] | None = None


class ProblemError(Exception):
    """Raised by routes and dependencies; rendered as a problem response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        errors: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.errors = errors
        self.headers = headers


def not_found(what: str, key: str) -> ProblemError:
    return ProblemError(404, f"{what} {key!r} was not found", kind="not-found")


def field_error(field: str, value: Any, rule: str, status: int = 422) -> ProblemError:
    return ProblemError(
        status,
        f"{field}: {rule}",
        kind="validation",
        errors=[FieldProblem(field=field, rule=rule, value=_safe(field, value))],
    )


def validation_problem(exc: ValidationError, prefix: str = "body") -> ProblemError:
    """A domain model's ValidationError, raised by a route that built the model from
    a request, as the 422 the request itself would have got."""
    errors = [field_problem(err, (prefix,)) for err in exc.errors(include_url=False)]
    detail = "; ".join(f"{e.field}: {e.rule}" for e in errors[:5])
    return ProblemError(422, detail, kind="validation", errors=errors)


def _safe(field: str, value: Any) -> Any:
    if field.rsplit(".", 1)[-1] in _SECRET_FIELDS:
        return "***"
    if isinstance(value, bytes):
        return value[:200].decode("utf-8", "replace")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "…"


def render(
    request: Request,
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    errors: list[FieldProblem] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=f"urn:zhizao:problem:{kind}" if kind else "about:blank",
        title=_TITLES.get(status, "错误 Error"),
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=MEDIA_TYPE,
        headers=headers,
    )  # fmt: skip


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def field_problem(err: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> FieldProblem:
    """One pydantic error as a field problem. A rule of the domain model (an
    InvalidValue) is given in its own words, and a model-level rule (service dates in
    order) names the field it is about rather than the whole body."""
    loc = (*prefix, *err.get("loc", ()))
    rule, value = str(err.get("msg", "")), err.get("input")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidValue):
        rule = cause.rule
        if len(loc) <= 1:
            loc, value = (*loc, cause.field), cause.value
    field = _location(loc)
    return FieldProblem(field=field, rule=rule, value=_safe(field, value))


def install(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, ProblemError):  # registered for that class only
            raise exc
        return render(
            request, exc.status, exc.detail, kind=exc.kind, errors=exc.errors, headers=exc.headers
        )

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, RequestValidationError):  # registered for that class only
            raise exc
        errors = [field_problem(err) for err in exc.errors()]
        detail = "; ".join(f"{e.field}: {e.rule}" for e in errors[:5])
        return render(request, 422, detail, kind="validation", errors=errors)

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, InvalidValue):  # registered for that class only
            raise exc
        problem = field_error(exc.field, exc.value, exc.rule)
        return render(request, 422, problem.detail, kind="validation", errors=problem.errors)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, StarletteHTTPException):  # registered for that class only
            raise exc
        headers = dict(exc.headers) if exc.headers else None
        return render(request, exc.status_code, str(exc.detail), headers=headers)

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path, method=request.method)
        return render(request, 500, "the server could not answer this request", kind="internal")

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(InvalidValue, on_invalid)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_error)


#: ``responses=`` for routes: the error statuses they answer with. The OpenAPI hook of
#: :mod:`platform_api.app` gives each the ``Problem`` schema (application/problem+json).
def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"description": _TITLES.get(status, "Error")} for status in statuses}
