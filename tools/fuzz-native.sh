#!/usr/bin/env bash
# Run the framing fuzz target (tests/fuzz/fuzz_framing.py) with coverage of the Cython core:
# the extension is built with clang and -fsanitize=fuzzer-no-link into a scratch directory
# (never over the in-place build others use), and the target imports it from there.
#
#   tools/fuzz-native.sh -max_total_time=60            (any libFuzzer arguments)
#   tools/fuzz-native.sh CORPUS_DIR -max_total_time=600
#
# Needs clang (CLANG, default: clang, else clang-14) and atheris (pip install .[fuzz]).  No
# sanitizer runtime is preloaded: atheris's wheel has no asan_with_fuzzer.so, and the
# instrumented module finds libFuzzer's coverage hooks in the libFuzzer atheris loads (see the
# target's docstring).  FUZZ_KEEP=1 keeps the scratch directory; crash-* files are written to
# the current directory (libFuzzer's -artifact_prefix= changes that).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
CLANG=${CLANG:-$(command -v clang || command -v clang-14 || true)}
[ -n "$CLANG" ] || { echo "no clang found (apt-get install clang-14, or set CLANG)" >&2; exit 2; }
"$PY" -c 'import atheris' 2>/dev/null || { echo "atheris is not installed (pip install atheris)" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/reactio-fuzz.XXXXXX")
cleanup() { [ "${FUZZ_KEEP:-0}" = 1 ] && echo "kept $WORK" >&2 || rm -rf "$WORK"; }
trap cleanup EXIT

echo "== building an instrumented copy of the extension in $WORK ($CLANG)" >&2
mkdir -p "$WORK/src"
cp "$ROOT/setup.py" "$WORK/"
cp -r "$ROOT/src/reactio" "$WORK/src/"
find "$WORK/src" \( -name '*.so' -o -name '*.pyd' -o -name '_core.c' -o -name '_cyecho.c' -o -name '_cyudp.c' \) -delete
ln -s src/reactio "$WORK/reactio"        # build_ext --inplace without pyproject's package-dir
(cd "$WORK" && CC="$CLANG" LDSHARED="$CLANG -shared" CFLAGS="-fsanitize=fuzzer-no-link" \
    "$PY" setup.py -q build_ext --inplace >"$WORK/build.log" 2>&1) || {
    tail -40 "$WORK/build.log"; echo "build failed" >&2; exit 1; }
nm -D "$WORK"/src/reactio/_core.*.so >"$WORK/symbols.txt"
grep -q __sanitizer_cov_8bit_counters_init "$WORK/symbols.txt" || {
    echo "the extension was built without coverage instrumentation" >&2; exit 1; }

export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
echo "== fuzzing with $(ls "$WORK"/src/reactio/_core.*.so)" >&2
"$PY" "$ROOT/tests/fuzz/fuzz_framing.py" "$@"
