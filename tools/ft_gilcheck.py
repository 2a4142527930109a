"""pytest plugin for tools/freethreaded.sh: the GIL must stay disabled for the whole run.

Loaded with ``-p ft_gilcheck`` (tools/ on PYTHONPATH), independently of tests/conftest.py:

* at configure time: the interpreter must be a free-threaded build, and
  ``sys._is_gil_enabled()`` must be False right after ``import reactio``;
* at the end of the session it must still be False (an extension module imported by a test
  may have turned it back on);
* the verdict is written to $REACTIO_FT_GILCHECK as ``after-import=<bool> at-end=<bool>``, so
  that the script checks it without trusting pytest's exit code, and a failed check turns the
  session's exit status into a failure.
"""
from __future__ import annotations

import os
import sys
import sysconfig

import pytest

_state: dict[str, object] = {}


def _gil() -> bool:
    return bool(sys._is_gil_enabled())  # type: ignore[attr-defined]


def pytest_configure(config: pytest.Config) -> None:
    if not sysconfig.get_config_var("Py_GIL_DISABLED") or not hasattr(sys, "_is_gil_enabled"):
        raise pytest.UsageError(f"ft_gilcheck: {sys.executable} is not a free-threaded build")
    import reactio
    _state["after_import"] = _gil()
    _state["reactio"] = reactio.__file__
    _write()
    if _state["after_import"]:
        raise pytest.UsageError("ft_gilcheck: the GIL is enabled after `import reactio` "
                                f"(PYTHON_GIL={os.environ.get('PYTHON_GIL')!r})")


def pytest_report_header(config: pytest.Config) -> str:
    return (f"free-threaded: {sys.version.split()[0]} ({sys.executable}), GIL enabled after "
            f"import reactio: {_state.get('after_import')}, reactio from {_state.get('reactio')}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _state["at_end"] = _gil()
    _write()
    if _state["at_end"] and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    at_end = _state.get("at_end")
    terminalreporter.write_line(
        f"ft_gilcheck: GIL enabled after import reactio: {_state.get('after_import')}, "
        f"at the end: {at_end}", red=bool(at_end), green=at_end is False)


def _write() -> None:
    path = os.environ.get("REACTIO_FT_GILCHECK")
    if path:
        with open(path, "w") as f:
            f.write(f"after-import={_state.get('after_import')} at-end={_state.get('at_end')}")
