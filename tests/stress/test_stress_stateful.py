"""Issue 10, the stateful layer at ten times the default suite's size (and longer runs):
REACTIO_STRESS_STATEFUL_EXAMPLES (default 700) derandomized examples of up to
REACTIO_STRESS_STATEFUL_STEPS (default 35) steps of tests/helpers/stateful_machine.py, in a
subprocess, bounded at 10 minutes."""
from __future__ import annotations

import pytest

from stress_util import env_int

from test_stateful import run_machine

pytestmark = [pytest.mark.stress, pytest.mark.timeout(660)]

EXAMPLES = env_int("REACTIO_STRESS_STATEFUL_EXAMPLES", 700)
STEPS = env_int("REACTIO_STRESS_STATEFUL_STEPS", 35)


def test_stress_stateful_runtime_against_hostile_peers():
    run_machine(EXAMPLES, STEPS, shrink_seconds=120, timeout=600)
