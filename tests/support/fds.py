"""Leak checks: what a runtime can own, counted the same way on both backends.

``runtime_descriptors()`` counts the kinds of descriptor a runtime creates -- and only those,
so that what the interpreter, pytest or wine open meanwhile does not count:

* epoll (Linux): the entries of /proc/self/fd that are sockets or anonymous inodes (the epoll
  set, the inbox's eventfd), by kind.
* IOCP (Windows): the process's live socket handles, found by asking getsockopt(SO_TYPE) of
  every handle value (a closed or non-socket handle answers WSAENOTSOCK).  A socket the runtime
  leaked -- a stream, a listener, a pre-created AcceptEx socket, a failed connect's socket --
  stays a live handle and is counted.  The completion port itself is not a socket and is not
  counted.  (/proc/self/fd would count wine's own descriptors too, which change under it.)

Take a baseline before the runtime exists, close every socket the test opened, and compare::

    base = runtime_descriptors()
    ...
    assert runtime_descriptors() == base

``open_fds()`` is the plain count of /proc/self/fd (Linux only), for the stress tests that
measure the whole process.
"""
from __future__ import annotations

import collections
import gc
import os
import sys

__all__ = ["open_fds", "runtime_descriptors"]


def open_fds() -> int:
    """Open descriptors of the process (Linux), after a collection (a socket object dropped by
    an earlier failure would otherwise close at a random later moment)."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def runtime_descriptors() -> collections.Counter:
    """The descriptors of the kinds a runtime owns, as a Counter by kind, after a collection.
    Compare two of them with ``==`` (the assertion message shows both)."""
    gc.collect()
    if sys.platform == "win32":
        return collections.Counter({"socket": len(_windows_socket_handles())})
    return _linux_descriptors()


def _linux_descriptors() -> collections.Counter:
    kinds: collections.Counter = collections.Counter()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:                     # listdir's own descriptor, closed since
            continue
        if target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith("anon_inode:"):
            kinds[target] += 1              # anon_inode:[eventpoll], anon_inode:[eventfd]
    return kinds


_getsockopt = None


def _windows_socket_handles() -> list[int]:
    """Every handle value of this process that is a live socket.  Handles are multiples of 4
    and Windows hands out the lowest free ones, so the scan covers 4..65532 and goes on while
    sockets are found near its end."""
    global _getsockopt
    import ctypes
    import socket  # noqa: F401  (Python's socket module has called WSAStartup)

    if _getsockopt is None:
        fn = ctypes.WinDLL("ws2_32").getsockopt
        fn.argtypes = [ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                       ctypes.POINTER(ctypes.c_int)]
        fn.restype = ctypes.c_int
        _getsockopt = fn
    SOL_SOCKET, SO_TYPE = 0xFFFF, 0x1008
    value = ctypes.c_int()
    size = ctypes.c_int()
    found = []
    handle, top = 4, 1 << 16
    while handle < top:
        size.value = ctypes.sizeof(value)
        if _getsockopt(handle, SOL_SOCKET, SO_TYPE, ctypes.byref(value), ctypes.byref(size)) == 0:
            found.append(handle)
            top = max(top, 2 * handle)
        handle += 4
    return found
