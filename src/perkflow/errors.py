"""Domain errors carry their HTTP status; one handler turns them into responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with what was given, at a path such as `rule.all[2].value` or `line 3`."""

    path: str
    message: str

    def text(self) -> str:
        """`path: message`, or the message alone when it concerns the whole input."""
        return f"{self.path}: {self.message}" if self.path else self.message

    def __str__(self) -> str:
        return self.text()


class PerkflowError(Exception):
    """Base of every error a user can cause; `status_code` is what the API answers."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """JSON body of the error."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body


class ValidationFailed(PerkflowError):
    status_code = 422
    code = "validation_failed"


class NotFound(PerkflowError):
    status_code = 404
    code = "not_found"


class Unauthenticated(PerkflowError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(PerkflowError):
    status_code = 403
    code = "forbidden"


class Conflict(PerkflowError):
    status_code = 409
    code = "conflict"


class TooManyRequests(PerkflowError):
    status_code = 429
    code = "too_many_requests"
