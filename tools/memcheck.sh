#!/usr/bin/env bash
# Memory-safety run of reactio's core tests (issue 5, item 8).
#
#   tools/memcheck.sh                 valgrind memcheck on a debug build (-O0 -g3)
#   tools/memcheck.sh asan            AddressSanitizer build, un-instrumented python
#   tools/memcheck.sh valgrind tests/test_framing.py -k partial     (any pytest arguments)
#
# The extension is built from the working tree into a scratch directory (never over the
# in-place build others use) and the tests import it from there (PYTHONPATH).  The run fails
# when memcheck reports an invalid read or write, a use of uninitialised memory, an invalid
# or mismatched free, or a bad syscall parameter whose stack passes through reactio's _core
# extension -- errors wholly inside CPython or libc are listed but do not fail the run.  Under
# ASan any AddressSanitizer report fails it.  Test failures are reported; they fail the run
# only with MEMCHECK_STRICT=1 (timing assertions may not hold under valgrind's ~30x slowdown).
#
# Environment: MEMCHECK_KEEP=1 keeps the scratch directory, MEMCHECK_ORIGINS=1 tracks where
# uninitialised values come from (slower), PYTHON picks the interpreter.
set -euo pipefail

MODE=${1:-valgrind}
case "$MODE" in
    valgrind|asan) shift || true ;;
    -*|tests/*) MODE=valgrind ;;
    *) echo "usage: $0 [valgrind|asan] [pytest args...]" >&2; exit 2 ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
# the interpreter itself, not a wrapper script (pyenv shims exec it, and valgrind would then
# check the shell and not python)
PY=$("$PY" -c 'import sys; print(sys.executable)')
WORK=$(mktemp -d "${TMPDIR:-/tmp}/reactio-memcheck.XXXXXX")
cleanup() { [ "${MEMCHECK_KEEP:-0}" = 1 ] && echo "kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT

# The core tests: everything but the stress set, the packaging/typing checks, the tests that
# compile or install other code, and the benchmark harness.
if [ $# -eq 0 ]; then
    set -- tests/test_framing.py tests/test_send.py tests/test_errors.py \
        tests/test_commands.py tests/test_connect.py tests/test_pingpong_seed.py \
        tests/test_faults_lifetime.py tests/test_faults_callbacks.py \
        tests/test_faults_reentrancy.py tests/test_faults_peer.py \
        tests/test_faults_connect.py tests/test_faults_accept.py \
        tests/test_simpleio.py tests/test_threaded.py
fi

echo "== building a $MODE copy of the extension in $WORK"
mkdir -p "$WORK/src"
cp "$ROOT/setup.py" "$WORK/"
cp -r "$ROOT/src/reactio" "$WORK/src/"
find "$WORK/src" \( -name '*.so' -o -name '*.pyd' -o -name '_core.c' -o -name '_cyecho.c' -o -name '_cyudp.c' \) -delete
ln -s src/reactio "$WORK/reactio"        # build_ext --inplace without pyproject's package-dir
if [ "$MODE" = asan ]; then export REACTIO_ASAN=1; else export REACTIO_DEBUG=1; fi
(cd "$WORK" && "$PY" setup.py -q build_ext --inplace >"$WORK/build.log" 2>&1) || {
    tail -40 "$WORK/build.log"; echo "build failed" >&2; exit 1; }
unset REACTIO_ASAN REACTIO_DEBUG

export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONMALLOC=malloc              # every Python allocation visible to the checker
export PYTHONDONTWRITEBYTECODE=1
PRELOAD=
if [ "$MODE" = asan ]; then
    PRELOAD=$("${CC:-gcc}" -print-file-name=libasan.so)
    # python itself is not instrumented: leak checking would report the interpreter
    export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0:log_path=$WORK/asan
fi
LOADED=$(cd "$ROOT" && LD_PRELOAD=$PRELOAD "$PY" -c 'import reactio._core as c; print(c.__file__)')
case "$LOADED" in "$WORK"/*) ;; *) echo "wrong extension imported: $LOADED" >&2; exit 1 ;; esac
echo "== testing $LOADED"

PYTEST=(-m pytest -p no:cacheprovider -p no:timeout -W ignore::pytest.PytestUnknownMarkWarning
        -W ignore::pytest.PytestConfigWarning -q -rfE "$@")
cd "$ROOT"
set +e
if [ "$MODE" = valgrind ]; then
    ORIGINS=no; [ "${MEMCHECK_ORIGINS:-0}" = 1 ] && ORIGINS=yes      # slower, says where from
    valgrind --tool=memcheck --error-exitcode=0 --num-callers=40 --track-origins=$ORIGINS \
        --leak-check=no \
        --xml=yes --xml-file="$WORK/vg.%p.xml" --child-silent-after-fork=yes \
        "$PY" "${PYTEST[@]}" 2>&1 | tee "$WORK/pytest.log"
    TESTS=${PIPESTATUS[0]}
    set -e
    "$PY" - "$WORK" <<'PYEOF'
import glob, sys, xml.etree.ElementTree as ET
BAD = {"InvalidRead", "InvalidWrite", "InvalidFree", "MismatchedFree", "UninitCondition",
       "UninitValue", "SyscallParam", "Overlap", "InvalidJump", "InvalidMemPool"}
ours, theirs, total = [], {}, 0
def errors(path):
    """The complete <error> records, also from a log cut short by a crash."""
    try:
        for event, elem in ET.iterparse(path):
            if elem.tag == "error":
                yield elem
    except ET.ParseError:
        return

for path in glob.glob(sys.argv[1] + "/vg.*.xml"):
    for err in errors(path):
        kind = err.findtext("kind")
        if kind.startswith("Leak_"):
            continue                  # at-exit leak records (XML mode emits them anyway)
        total += 1
        stacks = [[(f.findtext("fn") or "?", f.findtext("obj") or "?",
                    f.findtext("file") or "", f.findtext("line") or "")
                   for f in st.iter("frame")] for st in err.findall("stack")]
        frames = stacks[0] if stacks else []
        # Attributed to reactio when the innermost frame outside valgrind's preload and libc
        # (memcpy, free, ...) is in the extension, or when the bad address is in a block the
        # extension allocated or freed (a view of a freed receive buffer read by CPython's
        # memcpy).  CPython's own reports -- uninitialised words in the eval loop reached
        # through a callback, glibc's vectorised over-reads of str objects -- stay outside.
        inner = [f for f in frames if not any(x in f[1] for x in
                                              ("vgpreload", "/libc.so", "/libc-", "ld-linux"))]
        mine = bool(inner) and "_core" in inner[0][1]
        if not mine and kind.startswith(("Invalid", "Mismatched")):
            mine = any("_core" in o for st in stacks[1:] for _, o, _, _ in st)
        if kind in BAD and mine:
            what = err.findtext("what") or (err.find("xwhat").findtext("text")
                                            if err.find("xwhat") is not None else kind)
            ours.append((kind, what, frames[:12]))
        else:
            theirs[kind] = theirs.get(kind, 0) + 1
print(f"== memcheck: {total} error records; outside reactio's extension (ignored): {theirs}")
for kind, what, frames in ours:
    print(f"\n{kind}: {what}")
    for fn, obj, fl, line in frames:
        print(f"    {fn}  ({fl}:{line})" if fl else f"    {fn}  [{obj}]")
print(f"== memcheck: {len(ours)} error(s) in reactio's extension")
sys.exit(1 if ours else 0)
PYEOF
    MEM=$?
else
    export LD_PRELOAD=$PRELOAD
    "$PY" "${PYTEST[@]}" 2>&1 | tee "$WORK/pytest.log"
    TESTS=${PIPESTATUS[0]}
    unset LD_PRELOAD
    set -e
    MEM=0
    if ls "$WORK"/asan.* >/dev/null 2>&1; then
        cat "$WORK"/asan.*
        MEM=1
    fi
    echo "== asan: $( (ls "$WORK"/asan.* 2>/dev/null || true) | wc -l) report(s)"
fi
echo "== pytest exit status $TESTS, memory errors: $([ $MEM = 0 ] && echo none || echo FOUND)"
if [ $MEM != 0 ]; then exit 1; fi
if [ "$TESTS" -gt 5 ]; then                # pytest's own codes are 0..5: this is a crash
    echo "== the test process crashed (status $TESTS)" >&2
    exit 1
fi
if [ "${MEMCHECK_STRICT:-0}" = 1 ] && [ "$TESTS" != 0 ]; then exit "$TESTS"; fi
exit 0
