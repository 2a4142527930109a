"""The MessageResult caches under contention (issue 17, C7 in docs/internals-threading.md).

ExpectMsgSize(n) / DropMsgSize(n) for small n return one cached object per size, which any
thread may be the first to make.  Threads that race for the first use of a size all get a
result of that size and kind, and afterwards every call returns one object.  On a
free-threaded build the cached results and the two functions are immortal: taking references
to them does not change their reference count (the threads of several runtimes no longer
fight over it on every message).
"""
from __future__ import annotations

import sys
import sysconfig
import threading

import pytest

from reactio import DropMsgSize, ExpectMsgSize

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
THREADS = 8
# sizes below the cache's bound (8192) that no other test asks for
SIZES = range(7000, 7400)

pytestmark = pytest.mark.timeout(60)


def test_threads_racing_for_first_use_of_a_size_get_one_result_each():
    barrier = threading.Barrier(THREADS)
    got: list = [None] * THREADS
    errors: list = []

    def first_use(i: int) -> None:
        try:
            barrier.wait(30)
            # half the threads go up, half down: they meet on every size at some point
            order = list(SIZES) if i % 2 == 0 else list(reversed(SIZES))
            got[i] = {n: (ExpectMsgSize(n), DropMsgSize(n)) for n in order}
        except BaseException as exc:     # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for n in SIZES:
        expect, drop = ExpectMsgSize(n), DropMsgSize(n)
        assert (expect.size, expect.is_drop) == (n, False)
        assert (drop.size, drop.is_drop) == (n, True)
        assert expect is ExpectMsgSize(n) and drop is DropMsgSize(n)
        for per_thread in got:
            e, d = per_thread[n]
            assert e == expect and d == drop
            assert (e.size, e.is_drop, d.size, d.is_drop) == (n, False, n, True)


@pytest.mark.skipif(not FREE_THREADED, reason="immortal only on a free-threaded build (under "
                                               "the GIL no two threads touch a count at once)")
@pytest.mark.parametrize("obj", [ExpectMsgSize(64), DropMsgSize(64), ExpectMsgSize(7999),
                                 ExpectMsgSize, DropMsgSize],
                         ids=["cached Expect", "cached Drop", "cached, made late",
                              "ExpectMsgSize", "DropMsgSize"])
def test_cached_results_and_the_functions_are_immortal(obj):
    before = sys.getrefcount(obj)
    held = [obj] * 1000
    assert sys.getrefcount(obj) == before, "a new reference changed the count: not immortal"
    del held


def test_results_beyond_the_cache_are_new_objects_of_the_right_size():
    big = 1 << 20
    a, b = ExpectMsgSize(big), ExpectMsgSize(big)
    assert a == b and a is not b and (a.size, a.is_drop) == (big, False)
    if FREE_THREADED:
        before = sys.getrefcount(a)
        held = [a] * 10
        assert sys.getrefcount(a) == before + 10, "an uncached result is an ordinary object"
        del held
