"""Compile the harness's C programs (``c/*.c``) with the system C compiler, cached.

The sources ship as package data; the harness compiles them at run time so the C floor is
built for, and by, the machine it runs on. Executables are cached in
``$REACTIO_BENCH_CACHE``, else ``$XDG_CACHE_HOME/reactio-bench``, else
``~/.cache/reactio-bench`` (a per-user temp directory when none of these is writable),
keyed by a hash of the source, the shared headers (``c/*.h``, e.g. ``net_util.h``), the
compiler command and the compiler's version, so an
edited source or another compiler never reuses a stale binary. ``$CC`` picks the compiler
(default ``cc``).
"""
from __future__ import annotations

import functools
import hashlib
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import List

SOURCE_DIR = Path(__file__).resolve().parent / "c"
CFLAGS = ["-O2", "-Wall"]

PROGRAMS = {
    "echo_server": "echo_server.c",
    "pingpong_client": "pingpong_client.c",
    "loadgen": "loadgen.c",
    "pipeline_client": "pipeline_client.c",
    "idle_client": "idle_client.c",
    "udp_pingpong": "udp_pingpong.c",
}


class BuildError(Exception):
    """A C program could not be built (no compiler, a compile error, no writable cache)."""


def compiler() -> List[str]:
    return shlex.split(os.environ.get("CC") or "cc")


@functools.lru_cache(maxsize=None)
def compiler_version() -> str:
    """The first line of ``$CC --version``; raises BuildError when there is no compiler."""
    cmd = compiler() + ["--version"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildError(f"no usable C compiler ({' '.join(cmd)}: {e}); install one "
                         "(e.g. gcc) or set $CC") from None
    if out.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return (out.stdout.strip().splitlines() or ["unknown"])[0]


def _candidate_cache_dirs() -> List[Path]:
    dirs = []
    if os.environ.get("REACTIO_BENCH_CACHE"):
        dirs.append(Path(os.environ["REACTIO_BENCH_CACHE"]))
    xdg = os.environ.get("XDG_CACHE_HOME")
    dirs.append(Path(xdg) / "reactio-bench" if xdg else Path.home() / ".cache" / "reactio-bench")
    dirs.append(Path(tempfile.gettempdir()) / f"reactio-bench-{os.getuid()}")
    return dirs


def cache_dir() -> Path:
    """The first writable cache directory (created if needed)."""
    errors = []
    for d in _candidate_cache_dirs():
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK | os.X_OK):
                return d
            errors.append(f"{d}: not writable")
        except OSError as e:
            errors.append(f"{d}: {e}")
    raise BuildError("no writable cache directory for the C programs: " + "; ".join(errors))


def build(name: str) -> Path:
    """Path of the compiled program ``name`` (a key of PROGRAMS), compiling it if needed."""
    src = SOURCE_DIR / PROGRAMS[name]
    try:
        source = src.read_bytes()
        # The headers the programs include (by "name.h", found next to the source): an
        # edited header must not reuse a stale binary either.
        headers = [h.name.encode() + b"\0" + h.read_bytes()
                   for h in sorted(SOURCE_DIR.glob("*.h"))]
    except OSError as e:
        raise BuildError(f"the C sources are not in this install (package data "
                         f"reactio/bench/c/*.c and *.h): {e}") from None
    cmd = compiler()
    key = hashlib.sha256()
    for part in (source, *headers, " ".join(cmd + CFLAGS).encode(),
                 compiler_version().encode()):
        key.update(part)
        key.update(b"\0")
    cache = cache_dir()
    exe = cache / f"{name}-{key.hexdigest()[:16]}"
    if exe.is_file() and os.access(exe, os.X_OK):
        return exe
    # Compile to a private name, then rename: concurrent harnesses never run a half-written
    # binary.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=cache)
    os.close(fd)
    try:
        out = subprocess.run(cmd + CFLAGS + ["-o", tmp, str(src)], capture_output=True,
                             text=True, timeout=120)
        if out.returncode != 0:
            raise BuildError(f"compiling {src.name} failed:\n{out.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, exe)
    except subprocess.TimeoutExpired:
        raise BuildError(f"compiling {src.name} timed out") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return exe
