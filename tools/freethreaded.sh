#!/usr/bin/env bash
# Build and test reactio on free-threaded CPython 3.13t (issue 17).
#
# No Debian release ships a free-threaded interpreter, so this builds one from the python3.13
# Debian source package inside a Debian 13 (trixie) minbase chroot, makes a venv with the test
# dependencies, builds reactio from the working tree into a scratch copy inside the chroot and
# runs pytest there, the GIL disabled.  Nothing is built in, or written to, the working tree
# (it is bind-mounted read-only), and nothing is installed into the host's Python.
#
# usage: tools/freethreaded.sh [--setup-only | --build-only | --ci] [--tsan] [pytest args...]
#        tools/freethreaded.sh [--tsan] --exec CMD [ARGS...]
#   (default)     set up (cached), build reactio, run `python -m pytest -q tests/ -m "not stress"`
#                 ... the GIL disabled; pytest args are passed on (a path argument or -m
#                 replaces the default selection), e.g. `tools/freethreaded.sh -m stress`
#   --setup-only  only the chroot, the interpreter and its venv (pytest, pytest-timeout,
#                 hypothesis, Cython>=3.1, setuptools>=77; trustme and uvloop too where they
#                 have 3.13t wheels, else the TLS / uvloop tests skip)
#   --build-only  set up and build reactio, then stop (the free-threaded compile check)
#   --ci          a bounded selection for CI instead of the whole suite: the free-threading
#                 tests (tests/test_freethreaded*.py, full counts) and the core stream tests
#                 (CI_TESTS below); then a cp313t wheel of the scratch copy, installed in a
#                 fresh 3.13t venv, passes tests/test_smoke.py (REACTIO_SMOKE_INSTALLED=1,
#                 not under --tsan; about 20 s); see docs/internals-threading.md for the times
#   --exec CMD    set up and build reactio, then run CMD in the scratch copy with the venv's
#                 python first on PATH (e.g. --exec python -m reactio.bench scale --threads
#                 1,2 --in-process); extra environment as VAR=value words before CMD
#   --tsan        the same with an interpreter configured --with-thread-sanitizer too (its own
#                 prefix, venv and scratch copy; reactio is a debug build with -fsanitize=thread;
#                 small test counts; reports are collected, summarized in
#                 $REACTIO_FT_DIR/logs/tsan/summary.txt, and do not fail the run)
#
# The GIL check (tools/ft_gilcheck.py, loaded with -p, independent of tests/conftest.py):
# sys._is_gil_enabled() must be False after `import reactio` and at the end of the session,
# or the run fails.  Nothing sets PYTHON_GIL: the extension modules declare that they run
# without the GIL (# cython: freethreading_compatible = True, Py_mod_gil), and a probe checks
# that importing reactio leaves it disabled (without the declaration, the interpreter turns the
# GIL back on with a RuntimeWarning).
#
# Environment:
#   REACTIO_FT_DIR           cache folder (default /var/cache/reactio-ft): the chroot, sources,
#                            builds, logs; a second run on the same machine takes seconds
#   REACTIO_FT_PATCH=FILE    apply this patch (-p1) to the scratch copy before building: try a
#                            core change under 3.13t without touching the working tree
#   REACTIO_FT_MIRROR        the Debian mirror (default: the host's own, from /etc/apt)
#   REACTIO_FT_JOBS          make -j (default: nproc)
#   REACTIO_FT_TIMEOUT       pytest-timeout per test (default: pyproject's 60 s; TSan: 600 s)
#   REACTIO_FT_FULL          1 (default): tests/test_freethreaded.py at full counts (8 senders x
#                            100,000 commands ...); 0: the small counts of the default suite
#
# Needs: Debian or Ubuntu as root (apt-get installs debootstrap and util-linux here); the
# chroot's apt and pip reach Debian's mirror and PyPI.  Runs in a private mount namespace:
# every mount it makes (proc, dev, the read-only tree) disappears when it exits.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${REACTIO_FT_DIR:-/var/cache/reactio-ft}
R=$W/root                           # the chroot
SUITE=trixie
SRCPKG=python3.13
JOBS=${REACTIO_FT_JOBS:-$(nproc)}
VENV_PKGS=(pytest pytest-timeout hypothesis 'Cython>=3.1' 'setuptools>=77')
# the rest of the test extra, which may lack free-threaded wheels for 3.13t (then the tests
# that need it skip and say so)
VENV_OPT_PKGS=('trustme>=1.0' 'uvloop>=0.17')
# --ci: what runs the cross-thread paths and the core of every stream kind
CI_TESTS=(tests/test_freethreaded.py tests/test_freethreaded_results.py tests/test_commands.py
          tests/test_threaded.py tests/test_run_loop.py tests/test_shutdown.py
          tests/test_send.py tests/test_send_path.py tests/test_framing.py
          tests/test_close_semantics.py tests/test_connect.py tests/test_unix_streams.py
          tests/test_udp.py tests/test_tls.py)
# Build dependencies of the interpreter (what python3.13's own build-deps need for the modules
# the tests use), plus what the suite's own tools need: a C compiler for the bench harness's
# clients, valgrind (tests/test_cost.py) and strace (bench pipeline), rsync for the scratch copy.
CHROOT_PKGS=(build-essential pkg-config ca-certificates dpkg-dev xz-utils rsync patch
             libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev libsqlite3-dev
             libreadline-dev libncurses-dev uuid-dev libgdbm-dev libexpat1-dev libzstd-dev
             valgrind strace procps)

ARGS=("$@")
mode=test
flavour=ft
ci=0
pytest_args=()
exec_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --setup-only) mode=setup ;;
    --build-only) mode=build ;;
    --ci) ci=1; pytest_args=(${CI_TESTS[@]+"${CI_TESTS[@]}"} -m "not stress" ${pytest_args[@]+"${pytest_args[@]}"}) ;;
    --tsan) flavour=ft-tsan ;;
    --exec) mode=exec; shift; exec_args=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; pytest_args+=("$@"); break ;;
    *) pytest_args+=("$1") ;;
  esac
  shift
done

T0=$(date +%s%N)
log() { printf '[freethreaded %6.1fs] %s\n' "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts)"

# ---------------------------------------------------------------- 0. a private mount namespace
# Every mount below lives in it and vanishes with the script: nothing is left mounted on the
# host, even after a kill -9.
if [ "${_REACTIO_FT_NS:-}" != 1 ]; then
  command -v unshare >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux; }
  exec env _REACTIO_FT_NS=1 unshare --mount --propagation private -- "$0" ${ARGS[@]+"${ARGS[@]}"}
fi

mkdir -p "$W/logs"
exec 9>"$W/.lock"
flock -n 9 || { log "waiting for another run using $W"; flock 9; }

# A step is redone unless its stamp file holds the same key (a half-done step is redone).
stamp_ok() { [ -f "$W/.ok-$1" ] && [ "$(cat "$W/.ok-$1")" = "$2" ]; }
stamp_set() { printf '%s' "$2" > "$W/.ok-$1"; }
stamp_clear() { rm -f "$W/.ok-$1"; }

# run a step's command with its output in $W/logs/$1.log; on failure show the log's tail
logged() {
  local name=$1 t rc=0; shift
  t=$(date +%s)
  "$@" >"$W/logs/$name.log" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    tail -n 40 "$W/logs/$name.log" >&2
    die "$name failed (exit $rc) after $(( $(date +%s) - t )) s; full log: $W/logs/$name.log"
  fi
  log "$name: done in $(( $(date +%s) - t )) s (log: $W/logs/$name.log)"
}

# ---------------------------------------------------------------- 1. host tools
host_tools() {
  local missing=() p
  for p in debootstrap debian-archive-keyring; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "apt (host): installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

mirror() {   # the host's Debian mirror: the first URI of its first non-security entry
  if [ -n "${REACTIO_FT_MIRROR:-}" ]; then echo "$REACTIO_FT_MIRROR"; return; fi
  local f=/etc/apt/sources.list.d/debian.sources u=
  if [ -r "$f" ]; then
    u=$(awk 'BEGIN { RS = ""; FS = "\n" }
             $0 ~ /(^|\n)Suites:[^\n]*-security/ { next }
             { for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { split($i, a, " "); print a[2]; exit } }' "$f")
  fi
  if [ -z "$u" ] && [ -r /etc/apt/sources.list ]; then
    u=$(awk '$1 == "deb" && $0 !~ /-security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' \
        /etc/apt/sources.list)
  fi
  [ -n "$u" ] || die "no Debian mirror found in /etc/apt (set REACTIO_FT_MIRROR)"
  case $u in *debian*) ;; *) log "warning: $u does not look like a Debian mirror" ;; esac
  echo "$u"
}

# ---------------------------------------------------------------- 2. the chroot
MOUNTED=0
mount_root() {   # proc, dev and the working tree (read-only); once per run
  [ "$MOUNTED" = 1 ] && return
  mount -t proc proc "$R/proc"
  mount --rbind /dev "$R/dev"
  mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"     # the chroot's own POSIX shm
  mkdir -p "$R/mnt/tree"
  mount --bind "$ROOT" "$R/mnt/tree"
  mount -o remount,bind,ro "$R/mnt/tree"
  # name resolution and TLS as on the host: pip's CA bundle is the host's (PIP_CERT)
  cp -L /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true
  cp -L /etc/hosts "$R/etc/hosts" 2>/dev/null || true
  local ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
  [ -r "$ca" ] || ca=/etc/ssl/certs/ca-certificates.crt
  cp -L "$ca" "$R/etc/reactio-ft-ca.pem"
  MOUNTED=1
}

# in_root CMD...: run in the chroot with a clean environment (none of the host's pip, PATH or
# PYTHON* settings leak in); extra VAR=value words may come first.
in_root() {
  mount_root
  local envs=(HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive
              PATH="$VENV/bin:$PREFIX/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
              PIP_CERT=/etc/reactio-ft-ca.pem SSL_CERT_FILE=/etc/reactio-ft-ca.pem
              PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_DEFAULT_TIMEOUT=180)
  local v
  for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -n "${!v:-}" ] && envs+=("$v=${!v}")
  done
  while [ $# -gt 0 ] && [[ $1 == [A-Z_]*=* ]]; do envs+=("$1"); shift; done
  chroot "$R" /usr/bin/env -i "${envs[@]}" "$@" 9>&-
}

setup_chroot() {
  local m key
  m=$(mirror)
  key="debootstrap --variant=minbase $SUITE $m"
  stamp_ok chroot "$key" && [ -x "$R/usr/bin/apt-get" ] && return
  host_tools
  log "debootstrap: a $SUITE minbase chroot in $R (mirror $m)"
  stamp_clear deps; stamp_clear source
  rm -rf "$R"
  logged debootstrap debootstrap --variant=minbase "$SUITE" "$R" "$m"
  printf 'Types: deb deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$m" "$SUITE" > "$R/etc/apt/sources.list.d/debian.sources"
  rm -f "$R/etc/apt/sources.list"
  # no documentation or man pages in the chroot (faster apt, smaller cache)
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
    > "$R/etc/dpkg/dpkg.cfg.d/01-reactio-ft-nodoc"
  stamp_set chroot "$key"
}

setup_deps() {
  local key="${CHROOT_PKGS[*]}"
  stamp_ok deps "$key" && return
  log "apt (chroot): the interpreter's build dependencies and the test tools"
  logged apt-deps in_root sh -c "apt-get update -qq && apt-get install -y -q --no-install-recommends ${CHROOT_PKGS[*]}"
  stamp_set deps "$key"
}

# ---------------------------------------------------------------- 3. the interpreter
setup_source() {
  local ver key
  ver=$(in_root apt-cache showsrc "$SRCPKG" | sed -n 's/^Version: //p' | sort -V | tail -n 1)
  [ -n "$ver" ] || die "apt-get source: no $SRCPKG in $SUITE's deb-src"
  key="$SRCPKG $ver"
  if stamp_ok source "$key" && [ -x "$R/src/cpython/configure" ]; then
    PYVER=$ver; return
  fi
  log "apt-get source $SRCPKG ($ver)"
  in_root sh -c 'rm -rf /src && mkdir -p /src/dl'
  logged apt-source in_root sh -c "cd /src/dl && apt-get source -q --download-only $SRCPKG"
  # the upstream tarball alone: CPython as released, without Debian's packaging patches
  in_root sh -c 'set -e; cd /src; o=$(ls dl/python3.13_*.orig.tar.* | head -n 1); mkdir x;
                 tar xf "$o" -C x; mv x/Python-* cpython; rmdir x; rm -rf dl'
  PYVER=$ver
  stamp_set source "$key"
  stamp_clear "interp-ft"; stamp_clear "interp-ft-tsan"
}

setup_interpreter() {
  local flags key
  flags="--disable-gil --prefix=$PREFIX --with-ensurepip=install"
  # (TSan: no test modules, so the slower instrumented build and install do less)
  [ "$flavour" = ft-tsan ] && flags="$flags --with-thread-sanitizer --disable-test-modules"
  key="$PYVER $flags"
  if stamp_ok "interp-$flavour" "$key" && [ -x "$R$PY" ]; then return; fi
  log "building CPython $PYVER ($flags), make -j$JOBS"
  stamp_clear "venv-$flavour"
  in_root sh -c "rm -rf /build/$flavour $PREFIX && mkdir -p /build/$flavour"
  logged "configure-$flavour" in_root sh -c "cd /build/$flavour && /src/cpython/configure $flags"
  logged "make-$flavour" in_root sh -c "cd /build/$flavour && make -j$JOBS"
  logged "install-$flavour" in_root sh -c "cd /build/$flavour && make install"
  in_root "$PY" -c 'import sys, sysconfig
assert sysconfig.get_config_var("Py_GIL_DISABLED") == 1, "not a free-threaded build"
assert not sys._is_gil_enabled(), "the GIL is enabled at start-up"' \
    || die "$PY is not free-threaded"
  stamp_set "interp-$flavour" "$key"
}

setup_venv() {
  local key="$PYVER ${VENV_PKGS[*]} ${VENV_OPT_PKGS[*]}" p
  # (bin/python links to the chroot's own /opt path: look for pyvenv.cfg from outside)
  if stamp_ok "venv-$flavour" "$key" && [ -f "$R$VENV/pyvenv.cfg" ]; then return; fi
  log "venv $VENV: ${VENV_PKGS[*]}"
  in_root sh -c "rm -rf $VENV && $PY -m venv $VENV"
  # wheels only: the newest hypothesis releases come as sdists whose build downloads a Rust
  # toolchain, and nothing here should compile a dependency anyway
  logged "pip-$flavour" in_root "$VENV/bin/python" -m pip install -q --only-binary=:all: "${VENV_PKGS[@]}"
  for p in "${VENV_OPT_PKGS[@]}"; do
    in_root "$VENV/bin/python" -m pip install -q --only-binary=:all: "$p" >>"$W/logs/pip-$flavour.log" 2>&1 \
      || log "pip: no $PYVER free-threaded wheels for $p (or its dependencies); its tests skip"
  done
  stamp_set "venv-$flavour" "$key"
}

# ---------------------------------------------------------------- 4. reactio
# The working tree is copied (rsync, honouring .gitignore) into a scratch copy that keeps its
# build products between runs, so an unchanged tree is not re-cythonized.  Each flavour and
# each patch has its own copy.
build_reactio() {
  local patch=${REACTIO_FT_PATCH:-} sum=
  if [ -n "$patch" ]; then
    [ -r "$patch" ] || die "REACTIO_FT_PATCH=$patch: no such file"
    sum=$(sha256sum "$patch" | cut -c1-12)
    cp "$patch" "$R/tmp/reactio-ft.patch"
  fi
  SCRATCH=/work/$flavour${sum:+-patch$sum}
  log "copying the working tree to $SCRATCH (chroot)"
  in_root sh -c "mkdir -p $SCRATCH && rsync -a --delete --filter=':- .gitignore' --exclude=/.git \
    /mnt/tree/ $SCRATCH/"
  if [ -n "$patch" ]; then
    # applied to the scratch copy only (its own copy per patch: rsync restores the tree's
    # files, with their older times, on the next run)
    log "applying $patch to the scratch copy"
    in_root sh -c "cd $SCRATCH && patch -p1 -s -N -r - < /tmp/reactio-ft.patch" \
      || die "$patch does not apply to the working tree"
  fi
  # TSan: the interpreter's own CFLAGS (sysconfig) already carry -fsanitize=thread; a debug
  # build of reactio (-O0 -g3, invariant checks on) gives reports with line numbers
  local debug=${REACTIO_DEBUG:-0} cflags=
  if [ "$flavour" = ft-tsan ]; then debug=1; cflags=-fsanitize=thread; fi
  if [ "$flavour" = ft-tsan ] && [ -f "$R/opt/venv313t/pyvenv.cfg" ]; then
    # cythonize with the uninstrumented 3.13t (setup.py cythonizes at import; the generated C
    # is the same): under TSan the Cython compiler itself runs ten times slower
    logged cythonize-ft-tsan in_root sh -c "cd $SCRATCH && /opt/venv313t/bin/python setup.py --name"
  fi
  log "building reactio${cflags:+ (REACTIO_DEBUG=1 $cflags)} into $VENV"
  logged "reactio-build-$flavour" in_root REACTIO_DEBUG="$debug" \
    CFLAGS="$cflags" LDFLAGS="$cflags" \
    sh -c "cd $SCRATCH && python -m pip install -v --no-build-isolation --no-deps . \
      && python -m pip show reactio >/dev/null"
  # Does the module declare that it runs without the GIL?  (no PYTHON_GIL here)
  local probe
  probe=$(in_root "$TSAN_ENV" sh -c 'cd / && python -c "import sys, warnings
warnings.simplefilter(\"always\")
import reactio
print(\"GIL\", sys._is_gil_enabled())"' 2>&1 | grep -v '^  *import reactio' | tr '\n' ' ') || true
  if [ "$(printf '%s' "$probe" | sed 's/ *$//')" != "GIL False" ]; then
    die "import reactio turns the GIL back on (is an extension module missing the directive
    freethreading_compatible?): $probe"
  fi
  log "probe: import reactio keeps the GIL disabled (the modules declare Py_MOD_GIL_NOT_USED)"
}

run_tests() {
  local have_sel=0 a
  for a in ${pytest_args[@]+"${pytest_args[@]}"}; do
    case $a in -m|-m*|tests|tests/*|*.py|*.py::*) have_sel=1 ;; esac
  done
  local sel=()
  [ "$have_sel" = 1 ] || sel=(tests/ -m "not stress")
  local timeout=${REACTIO_FT_TIMEOUT:-}
  [ -z "$timeout" ] && [ "$flavour" = ft-tsan ] && timeout=600
  local report=/tmp/reactio-ft-gilcheck.txt
  in_root rm -rf "$report" /tmp/tsan
  log "pytest (GIL disabled): ${sel[*]} ${pytest_args[*]:-}"
  local rc=0
  in_root mkdir -p /tmp/tsan
  set +e
  in_root REACTIO_FT_GILCHECK="$report" PYTHONPATH="$SCRATCH/tools" \
    REACTIO_FT_FULL="${REACTIO_FT_FULL:-$FULL_DEFAULT}" "$TSAN_ENV" \
    sh -c "cd $SCRATCH && exec python -X faulthandler -m pytest -p ft_gilcheck -p no:cacheprovider \
      -rfEs ${timeout:+-o timeout=$timeout} \"\$@\"" pytest \
      ${sel[@]+"${sel[@]}"} ${pytest_args[@]+"${pytest_args[@]}"} 2>&1 | tee "$W/logs/last-run-$flavour.log"
  rc=${PIPESTATUS[0]}
  set -e
  # the plugin's verdict, read back independently of pytest's exit code
  local verdict
  verdict=$(cat "$R$report" 2>/dev/null || echo "missing")
  case $verdict in
    "after-import=False at-end=False") log "GIL check: disabled after import reactio and at the end" ;;
    *) log "GIL check FAILED: $verdict"; [ $rc -eq 0 ] && rc=3 ;;
  esac
  [ "$flavour" = ft-tsan ] && tsan_summary
  log "done (pytest exit code $rc;" \
      "output in $W/logs/last-run-$flavour.log)"
  return "$rc"
}

# --ci: the cp313t wheel.  CI has no Docker engine for cibuildwheel, so this proves what its
# cp313t job would: a wheel built from the scratch copy carries the free-threaded ABI tag,
# installs into a fresh venv of the 3.13t interpreter (pytest and pytest-timeout only) and
# passes tests/test_smoke.py against the installed package (REACTIO_SMOKE_INSTALLED=1: reactio
# must come from site-packages; on a "t" build the file also checks that importing it leaves
# the GIL disabled), run from a folder where the tree's src/ is not importable.
wheel_check() {
  local d=/tmp/reactio-ft-wheel t t2 whls whl abi rc=0 smoke
  t=$(date +%s)
  in_root sh -c "rm -rf $d && mkdir -p $d/dist $d/run"
  logged wheel-build in_root sh -c "cd $SCRATCH && python -m pip wheel -v --no-deps --no-build-isolation -w $d/dist ."
  whls=("$R$d"/dist/reactio-*.whl)
  [ ${#whls[@]} = 1 ] && [ -f "${whls[0]}" ] || die "wheel-build: expected one reactio wheel in $R$d/dist"
  whl=$(basename "${whls[0]}")
  abi=$(printf '%s' "${whl%.whl}" | awk -F- '{ print $(NF-1) }')   # name-ver-python-abi-platform
  [ "$abi" = cp313t ] || die "wheel $whl: ABI tag $abi, not cp313t"
  log "wheel: $whl"
  logged wheel-venv in_root sh -c "$PY -m venv $d/venv && $d/venv/bin/python -m pip install -q \
    --only-binary=:all: pytest pytest-timeout && $d/venv/bin/python -m pip install -q --no-index $d/dist/$whl"
  set +e
  in_root REACTIO_SMOKE_INSTALLED=1 PATH="$d/venv/bin:/usr/bin:/bin" sh -c "cd $d/run && exec python \
    -m pytest -p no:cacheprovider -q -rA $SCRATCH/tests/test_smoke.py" 2>&1 | tee "$W/logs/wheel-smoke.log"
  rc=${PIPESTATUS[0]}
  set -e
  smoke=$(grep -E '[0-9]+ (passed|failed|errors?) ' "$W/logs/wheel-smoke.log" | tail -n 1 | tr -d '=')
  [ $rc -eq 0 ] || die "wheel smoke test failed (pytest exit $rc):$smoke; log: $W/logs/wheel-smoke.log"
  # the two checks that make this step worth running must have run, not skipped
  for t2 in test_imported_from_an_installed_wheel test_free_threaded_build_keeps_the_gil_disabled; do
    grep -q "^PASSED .*::$t2\$" "$W/logs/wheel-smoke.log" || die "wheel smoke test: $t2 did not pass"
  done
  log "wheel smoke test (installed $whl, fresh venv):$smoke; done in $(( $(date +%s) - t )) s"
}

# ThreadSanitizer reports (one file per process in /tmp/tsan): how many, and which of them
# have a frame in reactio's own code; the reports themselves go to $W/logs/tsan/.
tsan_summary() {
  local out=$W/logs/tsan f n_all=0 n_core=0
  rm -rf "$out"; mkdir -p "$out"
  cp "$R"/tmp/tsan/report.* "$out"/ 2>/dev/null || true
  # split each file into reports; keep one per distinct top frame pair
  python3 - "$out" > "$out/summary.txt" <<'PYEOF'
import collections, glob, os, re, sys
out = sys.argv[1]
reports = []
for path in sorted(glob.glob(os.path.join(out, "report.*"))):
    text = open(path, errors="replace").read()
    reports += [r for r in text.split("==================") if "WARNING: ThreadSanitizer" in r]
kinds = collections.Counter()
ours = collections.OrderedDict()
for r in reports:
    kind = re.search(r"WARNING: ThreadSanitizer: ([^(\n]+)", r).group(1).strip()
    kinds[kind] += 1
    frames = re.findall(r"#\d+ (\S+) (\S+)", r)
    if any("_core" in loc or "reactio" in loc for _, loc in frames):
        top = tuple(f"{fn} {loc.rsplit('/', 1)[-1]}" for fn, loc in frames
                    if "_core" in loc or "reactio" in loc)[:3]
        ours.setdefault((kind, top), r)
print(f"{len(reports)} reports: {dict(kinds)}")
print(f"{len(ours)} distinct with a frame in reactio:")
for (kind, top), r in ours.items():
    print(f"--- {kind}: " + " <- ".join(top))
print()
for (kind, top), r in ours.items():
    print("=" * 70)
    print(r.strip())
PYEOF
  log "TSan: $(head -n 2 "$out/summary.txt" | tr '\n' ' ') (details: $out/summary.txt)"
}

# ---------------------------------------------------------------- main
if [ "$flavour" = ft-tsan ]; then
  PREFIX=/opt/py313t-tsan VENV=/opt/venv313t-tsan FULL_DEFAULT=0
  # CPython's own suppressions for the free-threaded build; races are reported, not fatal
  TSAN_ENV="TSAN_OPTIONS=halt_on_error=0 exitcode=0 report_signal_unsafe=0 second_deadlock_stack=1 suppressions=/src/cpython/Tools/tsan/suppressions_free_threading.txt log_path=/tmp/tsan/report"
else
  PREFIX=/opt/py313t VENV=/opt/venv313t FULL_DEFAULT=1
  TSAN_ENV="REACTIO_FT_FLAVOUR=ft"
fi
PY=$PREFIX/bin/python3.13t
log "cache $W, flavour $flavour, mode $mode"
setup_chroot
setup_deps
setup_source
setup_interpreter
setup_venv
log "interpreter: $(in_root "$VENV/bin/python" -VV | tr -d '\n')"
case $mode in
  setup) log "setup done: $R$VENV/bin/python" ;;
  build) build_reactio; log "build done" ;;
  test) build_reactio; run_tests   # (a failure exits here: set -e)
        if [ "$ci" = 1 ] && [ "$flavour" = ft ]; then wheel_check; fi ;;
  exec) build_reactio
        [ ${#exec_args[@]} -gt 0 ] || die "--exec needs a command"
        log "exec (GIL as the interpreter and reactio leave it): ${exec_args[*]}"
        in_root "$TSAN_ENV" sh -c "cd $SCRATCH && exec env \"\$@\"" exec "${exec_args[@]}" ;;
esac
