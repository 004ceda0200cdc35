"""The one Problem type: where something given is wrong, and what."""

from __future__ import annotations

import dataclasses

import pytest

from perkflow.errors import Problem


def test_a_problem_reads_as_its_path_then_its_message() -> None:
    problem = Problem("rule.all[2].value", "column arpu_yuan is a number; got 'x'")
    assert problem.text() == "rule.all[2].value: column arpu_yuan is a number; got 'x'"
    assert str(problem) == problem.text()


def test_a_problem_of_the_whole_input_is_its_message_alone() -> None:
    assert Problem("", "the file is empty").text() == "the file is empty"


def test_a_problem_is_a_frozen_value() -> None:
    problem = Problem("line 3 [cell]", "'x' is neither target nor control")
    assert problem == Problem("line 3 [cell]", "'x' is neither target nor control")
    assert {problem: 1}[Problem("line 3 [cell]", "'x' is neither target nor control")] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.path = "elsewhere"  # type: ignore[misc]
    assert dataclasses.asdict(problem) == {
        "path": "line 3 [cell]",
        "message": "'x' is neither target nor control",
    }
