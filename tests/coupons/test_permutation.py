"""coupons.rules.Permutation: a keyed bijection over its domain, for every domain size and key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perkflow.coupons.rules import Permutation


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=0, max_size=32), n=st.integers(min_value=2, max_value=3000))
def test_it_is_a_bijection_on_zero_to_n(key: bytes, n: int) -> None:
    perm = Permutation(key, n)
    images = [perm(x) for x in range(n)]
    # Every input lands inside the domain and no two inputs share an image: all n codes distinct.
    assert sorted(images) == list(range(n))


@settings(max_examples=30, deadline=None)
@given(key=st.binary(min_size=1, max_size=32), n=st.integers(min_value=16, max_value=4096))
def test_another_key_gives_another_order(key: bytes, n: int) -> None:
    first, second = Permutation(key, n), Permutation(key + b"\x00", n)
    xs = range(min(n, 64))
    assert [first(x) for x in xs] != [second(x) for x in xs]


@given(n=st.integers(min_value=2, max_value=10**12), x=st.integers(min_value=0, max_value=10**12))
def test_large_domains_stay_inside_and_refuse_the_outside(n: int, x: int) -> None:
    perm = Permutation(b"k", n)
    if x < n:
        assert 0 <= perm(x) < n
        assert perm(x) == Permutation(b"k", n)(x)  # the same key and size: the same code
    else:
        with pytest.raises(ValueError, match="outside the domain"):
            perm(x)


def test_a_domain_of_fewer_than_two_is_refused() -> None:
    with pytest.raises(ValueError, match="domain too small"):
        Permutation(b"k", 1)
