"""The API's error answer lists each Problem as `{field, message}`, built in one place."""

from __future__ import annotations

from perkflow.errors import Problem
from perkflow.web.i18n import N_
from perkflow.web.openapi import ErrorBody, field_problems


def test_a_problem_answers_as_field_and_message() -> None:
    errors = field_problems([Problem("body.name", "Field required"), Problem("", N_("x"))])
    assert errors == [
        {"field": "body.name", "message": "Field required"},
        {"field": "", "message": "x"},
    ]
    # The answer validates against the schema the OpenAPI document publishes.
    body = ErrorBody(code="validation_failed", message="body.name: Field required", errors=errors)
    assert body.model_dump(exclude_none=True)["errors"] == errors
