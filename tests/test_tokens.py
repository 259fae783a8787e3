"""Round-trip tokens (hyperdht.dhtrpc.tokens): whatever the cache holds,
every token is sha256(secret || host) of the live secrets, as in dht-rpc."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdht.dhtrpc import tokens
from hyperdht.dhtrpc.tokens import TokenStore


def model_token(secret: bytes, host: str) -> bytes:
    return hashlib.sha256(secret + host.encode()).digest()


HOSTS = st.sampled_from(["198.18.0.1", "198.18.0.2", "10.0.0.2", "::1", "", "é"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("issue"), HOSTS),
        st.tuples(st.just("check"), HOSTS, st.booleans(), st.sampled_from([0, 1, 2])),
        st.tuples(st.just("rotate")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), ops=OPS, small_cache=st.booleans())
def test_tokens_match_the_model(seed: int, ops: list[tuple], small_cache: bool) -> None:
    rng = random.Random(seed)
    model_rng = random.Random(seed)
    old_max, old_slots = tokens._CACHE_MAX, tokens._ASKED_SLOTS
    if small_cache:
        # Every path: a full cache, hosts sharing an "asked" flag.
        tokens._CACHE_MAX, tokens._ASKED_SLOTS = 2, 2
    try:
        store = TokenStore(rng.randbytes)
        secrets = [model_rng.randbytes(32), model_rng.randbytes(32)]
        for op in ops:
            if op[0] == "issue":
                assert store.issue(op[1]) == model_token(secrets[0], op[1])
            elif op[0] == "check":
                _, host, own_host, age = op
                issued_to = host if own_host else host + "x"
                # age 0: current secret, 1: previous, 2: a secret never live.
                secret = secrets[age] if age < 2 else b"\0" * 32
                expected = own_host and age < 2
                assert store.check(model_token(secret, issued_to), host) is expected
            else:
                store.rotate()
                secrets = [model_rng.randbytes(32), secrets[0]]
    finally:
        tokens._CACHE_MAX, tokens._ASKED_SLOTS = old_max, old_slots


def test_a_host_is_cached_from_its_second_token() -> None:
    store = TokenStore(random.Random(1).randbytes)
    first = store.issue("198.18.0.9")
    assert store._cache == {}
    assert store.issue("198.18.0.9") == first
    assert store._cache == {"198.18.0.9": first}
    store.rotate()
    assert store._cache == {} and not any(store._asked)
    assert store.issue("198.18.0.9") != first
