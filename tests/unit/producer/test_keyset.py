"""producer/keyset.py and the C KeySet: both answer as a set[str] of the same keys.

Properties over random sequences of operations against a reference set, the C and
the Python versions side by side; keys whose hashes share their low 12 bits pile
up in one probe run of the C table (it probes from slot ``hash & mask``), which is
where growth and backward-shift deletion could lose a key. No services.
"""

from __future__ import annotations

import functools
import itertools
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from searchsync.producer import native
from searchsync.producer.keyset import KeySetLike, PyKeySet, new_key_set

speedups = native.speedups

LOW_BITS = 0xFFF  # tables up to 4096 slots: keys sharing these bits share a home slot
# The last slot and the first ones: a probe run that wraps around the table's end.
CLUSTERS = (0xFFE, 0xFFF, 0x000, 0x001)


def test_the_c_type_is_used_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    assert speedups is not None, "searchsync.producer._speedups is not built: pip install -e ."
    assert type(new_key_set()) is speedups.KeySet
    monkeypatch.setattr(native, "speedups", None)
    assert type(new_key_set()) is PyKeySet


def c_key_set() -> KeySetLike:
    assert speedups is not None, "searchsync.producer._speedups is not built: pip install -e ."
    return speedups.KeySet()


FACTORIES: dict[str, Callable[[], KeySetLike]] = {"c": c_key_set, "python": PyKeySet}


@pytest.fixture(params=sorted(FACTORIES))
def make(request: pytest.FixtureRequest) -> Callable[[], KeySetLike]:
    factory: Callable[[], KeySetLike] = FACTORIES[request.param]
    return factory


@functools.cache
def clustered_keys(per_cluster: int) -> dict[int, tuple[str, ...]]:
    """per_cluster keys for each of CLUSTERS, hash(key) & LOW_BITS being that value.

    Hashes are randomized per process: searched for here, in ~4096 * per_cluster tries.
    """
    found: dict[int, list[str]] = {bits: [] for bits in CLUSTERS}
    for n in itertools.count():
        key = f"c{n}"
        bucket = found.get(hash(key) & LOW_BITS)
        if bucket is not None and len(bucket) < per_cluster:
            bucket.append(key)
            if all(len(keys) == per_cluster for keys in found.values()):
                break
    every = [key for keys in found.values() for key in keys]
    assert len({hash(key) for key in every}) == len(every)  # 64-bit collisions: ~1e-14
    return {bits: tuple(keys) for bits, keys in found.items()}


def check_table(keys: KeySetLike) -> None:
    """The C table: a power of two of int64 slots, at least 8, at most 3/4 full."""
    if isinstance(keys, PyKeySet):
        assert keys.nbytes > 0
        return
    slots = keys.nbytes // 8
    assert keys.nbytes == slots * 8 and slots >= 8 and slots & (slots - 1) == 0
    assert len(keys) * 4 <= slots * 3


def least_slots(count: int) -> int:
    slots = 8
    while count * 4 > slots * 3:
        slots *= 2
    return slots


PLAIN_KEYS = ("", "a", "b", "ab", "é", "😀", "order:FM-0000001", "order:FM-0000002")
# Keys of the operations: plain ones and a dozen of each cluster.
pool_keys = st.sampled_from(
    [*PLAIN_KEYS, *(key for keys in clustered_keys(150).values() for key in keys[:12])]
)
CONTAINERS: dict[str, Callable[[list[str]], Iterable[str]]] = {
    "list": list,
    "tuple": tuple,
    "set": set,
    "dict": dict.fromkeys,
    "dict_keys": lambda keys: dict.fromkeys(keys).keys(),
    "generator": lambda keys: (key for key in keys),
}
operations = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["add", "discard", "contains"]), pool_keys),
        st.tuples(st.sampled_from(["len", "clear"])),
        st.tuples(
            st.just("update"), st.lists(pool_keys, max_size=40), st.sampled_from(sorted(CONTAINERS))
        ),
    ),
    max_size=120,
)


def apply(keys: KeySetLike | set[str], operation: tuple[Any, ...]) -> object:
    name = operation[0]
    if name == "add":
        if isinstance(keys, set):
            added = operation[1] not in keys
            keys.add(operation[1])
            return added
        return keys.add(operation[1])
    if name == "discard":
        if isinstance(keys, set):
            removed = operation[1] in keys
            keys.discard(operation[1])
            return removed
        return keys.discard(operation[1])
    if name == "contains":
        return operation[1] in keys
    if name == "len":
        return len(keys)
    if name == "clear":
        keys.clear()
        return None
    keys.update(CONTAINERS[operation[2]](operation[1]))
    return None


@given(operations)
@settings(max_examples=400)
def test_operations_answer_as_a_set_of_str(sequence: list[tuple[Any, ...]]) -> None:
    reference: set[str] = set()
    ours = [c_key_set(), PyKeySet()]
    for operation in sequence:
        expected = apply(reference, operation)
        for keys in ours:
            assert apply(keys, operation) == expected, (type(keys).__name__, operation)
            assert len(keys) == len(reference)
            check_table(keys)
    for keys in ours:
        for key in [*PLAIN_KEYS, *reference]:
            assert (key in keys) == (key in reference)


def test_growth_through_many_doublings(make: Callable[[], KeySetLike]) -> None:
    keys = make()
    every = [f"order:FM-{n:07d}" for n in range(200_000)]
    for count, key in enumerate(every, 1):
        assert keys.add(key)
        if count & (count - 1) == 0:  # now and then: the table is the least that fits
            assert len(keys) == count
            check_table(keys)
            if not isinstance(keys, PyKeySet):
                assert keys.nbytes == 8 * least_slots(count)
    assert all(key in keys for key in every)
    assert not any(f"order:FM-{n:07d}" in keys for n in range(200_000, 210_000))
    assert not any(keys.add(key) for key in every[:1000])  # re-adding never grows
    grown = keys.nbytes
    assert all(keys.discard(key) for key in every[::2])
    assert len(keys) == 100_000
    if not isinstance(keys, PyKeySet):
        assert keys.nbytes == grown  # no shrinking but clear()
    assert not any(key in keys for key in every[::2])
    assert all(key in keys for key in every[1::2])
    keys.clear()
    assert len(keys) == 0 and not any(key in keys for key in every[:1000])
    assert keys.nbytes < 1000  # clear() gives the table back
    check_table(keys)


def test_discards_in_a_wrapping_probe_run_keep_every_other_key(
    make: Callable[[], KeySetLike],
) -> None:
    # Two clusters of 150 keys: one homed on the last slot, one on the first, in a
    # 512-slot table. Their probe runs merge into one run that wraps around the end.
    clusters = clustered_keys(150)
    pile = [key for pair in zip(clusters[0xFFF], clusters[0x000], strict=True) for key in pair]
    keys = make()
    keys.update(pile)
    if not isinstance(keys, PyKeySet):
        assert keys.nbytes == 8 * 512
    rng = random.Random(7)
    left = set(pile)
    for key in rng.sample(pile, len(pile)):
        assert keys.discard(key)
        left.discard(key)
        assert key not in keys and not keys.discard(key)
        assert len(keys) == len(left)
        assert all(other in keys for other in left), f"lost a key after discarding {key!r}"
    # added back in another order, discarded from the middle of the run outwards
    keys.update(reversed(pile))
    left = set(pile)
    for at in sorted(range(len(pile)), key=lambda at: abs(at - len(pile) // 2)):
        assert keys.discard(pile[at])
        left.discard(pile[at])
        assert all(other in keys for other in left), f"lost a key after discarding {at}"
    assert len(keys) == 0


@given(st.lists(st.sampled_from(sorted(CLUSTERS)), max_size=200), st.randoms())
@settings(max_examples=200)
def test_clustered_adds_and_discards(clusters: list[int], rng: random.Random) -> None:
    # Long runs of colliding keys, discarded in random order while others are added.
    available = {bits: list(keys) for bits, keys in clustered_keys(150).items()}
    reference: set[str] = set()
    ours = [c_key_set(), PyKeySet()]
    for bits in clusters:
        if reference and rng.random() < 0.3:
            key = rng.choice(sorted(reference))
            reference.discard(key)
            available[hash(key) & LOW_BITS].append(key)
            assert all(keys.discard(key) for keys in ours)
        elif available[bits]:
            key = available[bits].pop()
            reference.add(key)
            assert all(keys.add(key) for keys in ours)
        for keys in ours:
            assert len(keys) == len(reference)
    for keys in ours:
        assert all(key in keys for key in reference)
        assert not any(key in keys for bucket in available.values() for key in bucket)


class Text(str):
    pass


@pytest.mark.parametrize("bad", [b"k", 1, None, ("k",), Text("k")])
def test_keys_that_are_not_exact_str_are_refused(
    make: Callable[[], KeySetLike], bad: object
) -> None:
    keys = make()
    keys.add("k")
    with pytest.raises(TypeError, match="KeySet keys must be str, not"):
        keys.add(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="KeySet keys must be str, not"):
        keys.discard(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="KeySet keys must be str, not"):
        bad in keys  # type: ignore[operator]  # noqa: B015
    assert len(keys) == 1 and "k" in keys


def test_update_stops_at_the_first_bad_key(make: Callable[[], KeySetLike]) -> None:
    containers: list[Callable[[list[Any]], Iterable[str]]] = [list, tuple, dict.fromkeys, iter]
    for container in containers:
        keys = make()
        with pytest.raises(TypeError, match="KeySet keys must be str, not int"):
            keys.update(container(["a", 1, "b"]))
        assert "a" in keys and "b" not in keys and len(keys) == 1
    with pytest.raises(TypeError, match="not iterable"):
        make().update(5)  # type: ignore[arg-type]

    def failing() -> Iterator[str]:
        yield "a"
        raise ValueError("from the iterable")

    keys = make()
    with pytest.raises(ValueError, match="from the iterable"):
        keys.update(failing())
    assert len(keys) == 1


def test_update_from_a_dict_grows_no_more_than_adding(make: Callable[[], KeySetLike]) -> None:
    every = {f"order:FM-{n:07d}": None for n in range(10_000)}
    keys = make()
    keys.update(every)
    assert len(keys) == 10_000
    grown = keys.nbytes
    keys.update(every)
    keys.update(every.keys())
    assert len(keys) == 10_000 and keys.nbytes == grown
    if not isinstance(keys, PyKeySet):
        assert grown == 8 * least_slots(10_000)


def test_the_c_type_takes_no_arguments_and_reports_its_size() -> None:
    assert speedups is not None
    with pytest.raises(TypeError):
        speedups.KeySet(["a"])  # type: ignore[call-arg]
    keys = speedups.KeySet()
    assert keys.nbytes == 64
    assert sys.getsizeof(keys) > keys.nbytes
    keys.update(str(n) for n in range(1000))
    assert keys.nbytes == 8 * 2048
    assert sys.getsizeof(keys) > keys.nbytes
