"""Build the reactio extension.

One Cython module, ``reactio._core``, holds the hot loop. The backend is chosen by the C
preprocessor in ``src/reactio/reactio_sys.h`` (epoll on Linux, IOCP on Windows), so the same
generated C file builds on both platforms; only the libraries linked differ here.

Environment knobs (cold, for developers):
  REACTIO_DEBUG=1     -O0 -g, assertions on, no NDEBUG, and the stream state machine checks
                      its invariants at every transition (use with valgrind / gdb)
  REACTIO_ASAN=1      build with AddressSanitizer, invariant checks on (tools/memcheck.sh asan)
  REACTIO_ANNOTATE=1  write cython -a HTML next to the sources
"""
import os
import sys

from setuptools import Extension, setup
from Cython.Build import cythonize

debug = os.environ.get("REACTIO_DEBUG") == "1"
asan = os.environ.get("REACTIO_ASAN") == "1"

extra_compile_args = []
extra_link_args = []
libraries = []
define_macros = []

if sys.platform == "win32":
    libraries += ["ws2_32", "mswsock"]
    if not debug and os.environ.get("CC", "").find("mingw") < 0:
        extra_compile_args += ["/O2"]
else:
    if debug or asan:
        extra_compile_args += ["-O0", "-g3", "-UNDEBUG"]
        define_macros += [("REACTIO_CHECK_INVARIANTS", "1")]
    else:
        extra_compile_args += ["-O2", "-g0"]
        define_macros += [("NDEBUG", "1")]
    if asan:
        extra_compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer"]
        extra_link_args += ["-fsanitize=address"]

# what every extension is built with (the same flavour: release, debug or ASan)
build_options = dict(
    include_dirs=["src/reactio"],
    define_macros=define_macros,
    extra_compile_args=extra_compile_args,
    extra_link_args=extra_link_args,
)
ext = Extension("reactio._core", ["src/reactio/_core.pyx"], libraries=libraries, **build_options)

extensions = [ext]
if sys.platform != "win32":
    # the Cython reactors of the bench harness's reactio-cy leg (python -m reactio.bench)
    extensions.append(Extension("reactio.bench._cyecho", ["src/reactio/bench/_cyecho.pyx"],
                                **build_options))
    extensions.append(Extension("reactio.bench._cyudp", ["src/reactio/bench/_cyudp.pyx"],
                                **build_options))

directives = {
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
    "embedsignature": True,
    "embedsignature.format": "clinic",   # signatures inspect (and stubtest) can read
    "binding": False,
}
setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src"],
        language_level=3,
        annotate=os.environ.get("REACTIO_ANNOTATE") == "1",
        compiler_directives=directives,
    ),
)
