"""Fixtures (the helpers the tests import are in tests/support/).

Every test runs with a guard on the ``reactio`` logger: an ERROR record the test did not ask
for (through the ``expected_errors`` fixture) fails the test, so a reactor that dies quietly
cannot pass.  Network tests use loopback only and are bounded by pytest-timeout.
"""
from __future__ import annotations

import logging
import shutil
import tempfile

import pytest

import reactio
from reactio import ReactRuntime


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


class ExpectedErrors:
    """The ERROR records of the ``reactio`` logger during a test that expects some."""

    def __init__(self, collector: _Collector):
        self._collector = collector

    @property
    def records(self) -> list[logging.LogRecord]:
        return list(self._collector.records)

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self._collector.records]

    def matching(self, text: str) -> list[logging.LogRecord]:
        return [r for r in self._collector.records if text in r.getMessage()]


@pytest.fixture(autouse=True)
def reactio_error_guard(request):
    collector = _Collector()
    logger = logging.getLogger("reactio")
    logger.addHandler(collector)
    request.node._reactio_errors = collector
    yield collector
    logger.removeHandler(collector)
    records, collector.records = collector.records, []   # (they hold tracebacks: let go)
    request.node._reactio_errors = None
    if "expected_errors" not in request.fixturenames and records:
        lines = "\n".join(f"  {r.getMessage()}" for r in records)
        pytest.fail(f"unexpected errors on the reactio logger:\n{lines}")


@pytest.fixture
def expected_errors(request, reactio_error_guard):
    return ExpectedErrors(reactio_error_guard)


@pytest.fixture
def rt():
    runtime = ReactRuntime()
    yield runtime
    runtime.close()


@pytest.fixture
def unix_dir():
    """A fresh directory for Unix socket files, with a short name: pytest's tmp_path can be
    longer than the 107 bytes a socket path may have (sun_path)."""
    path = tempfile.mkdtemp(prefix="rio-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["tcp", "unix"])
def stream_addr(request):
    """A listen address for each stream transport (loopback TCP, a Unix socket file): tests
    that take it check the same stream semantics over both.  support.runtime.listen returns
    what connect() and raw_client() take for either."""
    if request.param == "tcp":
        return "127.0.0.1:0"
    if reactio.BACKEND == "iocp":
        pytest.skip("the IOCP backend refuses Unix sockets "
                    "(test_unix_streams.py::test_iocp_refuses_unix_addresses)")
    return f"unix:{request.getfixturevalue('unix_dir')}/s.sock"
