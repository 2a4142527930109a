"""The test machinery's own checks: the leak counter of tests/support/fds.py sees what a
runtime owns, on both backends, including a socket no Python object holds any more."""
from __future__ import annotations

import collections
import socket

from reactio import ReactRuntime

from support.env import BACKEND
from support.fds import runtime_descriptors
from support.reactors import EchoReactor
from support.runtime import listen_factory, pump_until
from support.sockets import raw_client


def test_runtime_descriptors_sees_a_leaked_socket():
    base = runtime_descriptors()
    fd = socket.socket().detach()               # open, and no Python object closes it
    try:
        assert runtime_descriptors() - base == collections.Counter({"socket": 1})
    finally:
        socket.close(fd)
    assert runtime_descriptors() == base


def test_runtime_descriptors_sees_what_a_runtime_owns_until_close():
    base = runtime_descriptors()
    rt = ReactRuntime()
    try:
        lid, port = listen_factory(rt, EchoReactor)
        peer = raw_client(port)
        pump_until(rt, lambda: rt.count_streams() == 1)
        during = runtime_descriptors() - base
        # the listener, the stream and the peer (IOCP: and the pre-created AcceptEx sockets)
        assert during["socket"] >= 3, during
        if BACKEND == "epoll":
            assert during["anon_inode:[eventpoll]"] == 1, during
            assert during["anon_inode:[eventfd]"] == 1, during
        peer.close()
    finally:
        rt.close()
    del rt
    assert runtime_descriptors() == base
