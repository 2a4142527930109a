"""What the machine and the build offer, for skips and expectations.

Skip on ``BACKEND`` when the reason is the runtime's poller ("epoll" or "iocp"); on ``LINUX`` /
``WINDOWS`` only when it really is the operating system (/proc, fork, signals, RLIMIT_NOFILE).
"""
from __future__ import annotations

import socket
import sys

import reactio

BACKEND: str = reactio.BACKEND
LINUX = sys.platform.startswith("linux")
WINDOWS = sys.platform == "win32"


def _under_wine() -> bool:
    """Windows CPython run by wine (tools/windows-test.sh): ntdll exports wine_get_version."""
    if not WINDOWS:
        return False
    import ctypes
    try:
        return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")
    except OSError:
        return False


UNDER_WINE = _under_wine()


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = _has_ipv6()
