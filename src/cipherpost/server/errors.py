"""API errors: every failure is a 4xx JSON body with a stable ``code``."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer: HTTP status, a stable machine code, a sentence, extra fields."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"code": self.code, "message": self.message}, **self.extra}


def bad_request(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message)


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "missing or invalid credentials")


def account_suspended() -> ApiError:
    return ApiError(403, "account_suspended",
                    "this account is suspended by the server's operators")


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def rate_limited(retry_after: float) -> ApiError:
    error = ApiError(429, "rate_limited", "too many requests; retry later",
                     retry_after=max(1, round(retry_after)))
    error.headers["Retry-After"] = str(max(1, round(retry_after)))
    return error
