"""The coalescer groups concurrent requests, bounds the groups in flight, answers each caller."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from perkflow.kit.coalesce import Coalescer


def test_requests_arriving_during_a_group_form_the_next_and_get_their_own_results() -> None:
    groups: list[list[int]] = []

    def settle(requests: list[int]) -> list[str]:
        groups.append(list(requests))
        time.sleep(0.05)  # the work: others arrive meanwhile
        return [f"r{n}" for n in requests]

    coalescer: Coalescer[int, str] = Coalescer(settle, max_group=8)

    async def main() -> list[str]:
        first = asyncio.ensure_future(coalescer.submit(0))
        await asyncio.sleep(0.01)  # request 0 is being settled alone
        rest = await asyncio.gather(*(coalescer.submit(n) for n in range(1, 20)))
        return [await first, *rest]

    assert asyncio.run(main()) == [f"r{n}" for n in range(20)]
    # One group in flight: the first request alone, then the others in groups of at most 8.
    assert groups == [[0], list(range(1, 9)), list(range(9, 17)), list(range(17, 20))]


def test_at_most_in_flight_groups_are_settled_at_once() -> None:
    busy = 0
    most = 0
    lock = threading.Lock()

    def settle(requests: list[int]) -> list[int]:
        nonlocal busy, most
        with lock:
            busy += 1
            most = max(most, busy)
        time.sleep(0.02)
        with lock:
            busy -= 1
        return requests

    coalescer: Coalescer[int, int] = Coalescer(settle, max_group=2, in_flight=3)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(coalescer.submit(n) for n in range(40))))

    assert asyncio.run(main()) == list(range(40))
    assert most == 3


def test_a_failing_group_fails_its_own_callers_and_the_next_group_goes_on() -> None:
    calls = 0

    def settle(requests: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("went away")
        return [n * 10 for n in requests]

    coalescer: Coalescer[int, int] = Coalescer(settle, max_group=4)

    async def main() -> tuple[str, int]:
        try:
            await coalescer.submit(1)
            first = "answered"
        except RuntimeError as exc:
            first = str(exc)
        return first, await coalescer.submit(2)

    assert asyncio.run(main()) == ("went away", 20)


def test_a_settle_that_loses_a_result_fails_the_group_rather_than_misanswer() -> None:
    coalescer: Coalescer[int, int] = Coalescer(lambda requests: requests[1:], max_group=4)

    async def main() -> list[object]:
        return await asyncio.gather(
            *(coalescer.submit(n) for n in range(3)), return_exceptions=True
        )

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(lambda requests: requests, max_group=0)
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(lambda requests: requests, max_group=1, in_flight=0)
