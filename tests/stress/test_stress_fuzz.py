"""Issue 5, item 5: framing fuzz with hypothesis (machinery in tests/helpers/framing_fuzz.py).
REACTIO_STRESS_FUZZ_EXAMPLES (default 200) examples of each property; tests/test_faults.py runs
a handful of each in the light set."""
from __future__ import annotations

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stress_util import HELPERS, env_int, report

sys.path.insert(0, HELPERS)
import framing_fuzz as ff  # noqa: E402

pytestmark = [pytest.mark.stress, pytest.mark.timeout(300)]

EXAMPLES = env_int("REACTIO_STRESS_FUZZ_EXAMPLES", 200)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

stats = {"examples": 0, "bytes": 0, "frames": 0, "writes": 0, "misuse": 0, "invalid": {}}


@FUZZ
@given(data=st.data())
def test_fuzz_frames_in_random_writes(data):
    wire = data.draw(ff.wires(), label="wire")
    chunks = data.draw(ff.cuts(len(wire)), label="cuts")
    style = data.draw(st.sampled_from(ff.STYLES), label="style")
    fast_dispatch = data.draw(st.booleans(), label="fast_dispatch")
    recv_min = data.draw(st.sampled_from([1, 7, 10, 64, 4096, 65536]), label="recv_min")
    frames, ref, violations, closed = ff.run_framing_example(wire, chunks, style, fast_dispatch,
                                                             recv_min)
    assert violations == []
    assert frames == ref
    assert closed == ("closed", None)
    stats["examples"] += 1
    stats["bytes"] += len(wire)
    stats["frames"] += len(ref)
    stats["writes"] += len(chunks)


def test_fuzz_frames_report(request):
    assert stats["examples"] >= min(EXAMPLES, 10)
    report(request, examples=stats["examples"], bytes=stats["bytes"], frames=stats["frames"],
           writes=stats["writes"])


@FUZZ
@given(data=st.data())
def test_fuzz_message_result_misuse(expected_errors, data):
    chunks = data.draw(st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=12),
                       label="chunks")
    reactor, echoed = ff.run_misuse_example(data, chunks)
    assert echoed == b"ping"                 # the runtime survived
    assert reactor.closed is not None
    assert reactor.violations == []
    assert reactor.close_violations() == []
    if reactor.first_invalid is not None:
        kind = reactor.first_invalid[0]
        stats["invalid"][kind] = stats["invalid"].get(kind, 0) + 1
    stats["misuse"] += 1


def test_fuzz_misuse_report(request):
    assert stats["misuse"] >= min(EXAMPLES, 10)
    report(request, examples=stats["misuse"], invalid_results_by_kind=stats["invalid"])
