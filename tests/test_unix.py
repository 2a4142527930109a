"""Unix-domain stream sockets ("unix:/path", "unix:@name"): echo, addresses, the listener's
socket file (created, replaced when stale, removed at close, never someone else's), clear
errors, large transfers with backpressure, many connections, hostile peers.  The stream
semantics shared with TCP are the tests taking the ``stream_addr`` fixture (test_send.py,
test_close_semantics.py, test_framing.py).  The IOCP backend refuses these addresses: the last
test checks that, under wine."""
import errno
import gc
import logging
import os
import socket
import stat

import pytest

import reactio
from reactio import DefaultTcpListenerHandler, Deferred, DropMsgSize, Reactor

from support.env import BACKEND, LINUX
from support.reactors import EchoReactor, SinkReactor
from support.runtime import Completion, connect, listen, listen_factory, pump_until
from support.sockets import raw_client, recv_exact_nb, unix_sockaddr
from support.wire import frame

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(BACKEND != "epoll", reason="Unix sockets run on the epoll "
                                 "backend; IOCP refuses them (test_iocp_refuses_unix_addresses)")]


def try_listen(rt, addr, handler=None):
    """What send_listen's completion got: the listener's ReactorID or the error."""
    done = Completion()
    handler = handler or DefaultTcpListenerHandler(lambda n, p: EchoReactor())
    rt.cmd_sender.send_listen(addr, handler, Deferred.IMMEDIATE, done)
    pump_until(rt, lambda: done.done)
    return done.result


def _gone(rt, lid):
    try:
        rt.local_address(lid)
    except reactio.ReactorNotFoundError:
        return True
    return False


class Addresses(EchoReactor):
    def on_connected(self, ctx, listener_id):
        super().on_connected(ctx, listener_id)
        self.addresses = (ctx.local_address, ctx.peer_address, ctx.nodelay)
        ctx.nodelay = True                      # no such option here: a no-op, no error
        self.nodelay_after = ctx.nodelay


def test_echo_and_addresses_between_two_reactors(rt, unix_dir):
    path = os.path.join(unix_dir, "echo.sock")
    peers = []
    server = Addresses()

    class Handler(DefaultTcpListenerHandler):
        def on_new_connection(self, peer_address):
            peers.append(peer_address)
            return server

    lid, addr = listen(rt, Handler(None), "unix:" + path)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert rt.local_address(lid) == path
    client = Addresses()
    rid = connect(rt, addr, client)
    assert isinstance(rid, reactio.ReactorID)
    rt.get_context(rid).send_or_que(frame(b"over a unix socket"))
    pump_until(rt, lambda: client.frames == [frame(b"over a unix socket")])
    assert server.frames == [frame(b"over a unix socket")]
    # the client did not bind: unnamed ("") on its side, the path on the server's
    assert client.addresses == ("", path, False) and client.nodelay_after is False
    assert server.addresses == (path, "", False) and server.nodelay_after is False
    assert peers == [""]
    assert rt.peer_address(rid) == path and rt.local_address(rid) == ""


def test_a_bound_client_is_seen_by_its_path(rt, unix_dir):
    server = EchoReactor()
    lid, addr = listen_factory(rt, lambda: server, addr=f"unix:{unix_dir}/srv.sock")
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.bind(os.path.join(unix_dir, "client.sock"))
    peer.connect(unix_sockaddr(addr))
    pump_until(rt, lambda: rt.count_streams() == 1)
    (rid,) = [r for r in (reactio.ReactorID(s, 1) for s in range(4)) if rt.get_context(r)]
    assert rt.peer_address(rid) == os.path.join(unix_dir, "client.sock")
    peer.close()


@pytest.mark.skipif(not LINUX, reason="the abstract namespace is Linux's")
def test_abstract_name_echo_and_no_file(rt, unix_dir):
    name = f"reactio-test-{os.getpid()}-{id(rt)}"
    before = set(os.listdir(unix_dir))
    server = Addresses()
    lid, addr = listen_factory(rt, lambda: server, addr="unix:@" + name)
    assert rt.local_address(lid) == "@" + name
    client = Addresses()
    rid = connect(rt, addr, client)
    rt.get_context(rid).send_or_que(frame(b"abstract"))
    pump_until(rt, lambda: client.frames == [frame(b"abstract")])
    assert client.addresses[1] == "@" + name and server.addresses[0] == "@" + name
    assert set(os.listdir(unix_dir)) == before
    rt.cmd_sender.send_close(lid)
    pump_until(rt, lambda: _gone(rt, lid))
    assert isinstance(connect(rt, addr, EchoReactor()), ConnectionRefusedError)


@pytest.mark.parametrize("how", ["send_close", "runtime close", "runtime shutdown"])
def test_listener_removes_its_socket_file_when_it_closes(unix_dir, how):
    path = os.path.join(unix_dir, "gone.sock")
    rt = reactio.ReactRuntime()
    try:
        lid, addr = listen_factory(rt, SinkReactor, addr="unix:" + path)
        peer = raw_client(addr)                     # an open stream does not keep the file
        pump_until(rt, lambda: rt.count_streams() == 1)
        assert os.path.exists(path)
        if how == "send_close":
            rt.cmd_sender.send_close(lid)
            pump_until(rt, lambda: _gone(rt, lid))
            assert rt.count_streams() == 1
        elif how == "runtime close":
            rt.close()
        else:
            assert os.path.exists(path)
            peer.close()                            # (shutdown awaits the peer's EOF)
            assert rt.shutdown(5.0) == 0
        assert not os.path.exists(path)
        peer.close()
    finally:
        rt.close()


def test_listener_never_removes_a_file_it_did_not_create(rt, unix_dir):
    path = os.path.join(unix_dir, "replaced.sock")
    lid, addr = listen_factory(rt, SinkReactor, addr="unix:" + path)
    os.unlink(path)                                 # someone removed it and put a file there
    with open(path, "w") as f:
        f.write("not ours")
    rt.cmd_sender.send_close(lid)
    pump_until(rt, lambda: _gone(rt, lid))
    with open(path) as f:
        assert f.read() == "not ours"


def test_a_stale_socket_file_is_replaced(rt, unix_dir, caplog):
    path = os.path.join(unix_dir, "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)                                 # what a killed server leaves behind
    dead.close()
    assert isinstance(connect(rt, "unix:" + path, EchoReactor()), ConnectionRefusedError)
    caplog.set_level(logging.INFO, logger="reactio")
    lid, addr = listen_factory(rt, EchoReactor, addr="unix:" + path)
    assert "stale" in caplog.text
    peer = raw_client(addr)
    peer.sendall(frame(b"alive"))
    assert recv_exact_nb(rt, peer, 15) == frame(b"alive")
    peer.close()


def test_a_live_listener_is_not_stolen_from(rt, unix_dir):
    path = os.path.join(unix_dir, "live.sock")
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)
    other.listen(4)
    try:
        err = try_listen(rt, "unix:" + path)
        assert isinstance(err, OSError) and err.errno == errno.EADDRINUSE, err
        assert "live" in str(err) and path in str(err)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)                             # still the other listener's
        other.accept()[0].close()
        c.close()
    finally:
        other.close()


@pytest.mark.parametrize("kind", ["regular file", "directory"])
def test_a_path_that_is_not_a_socket_is_refused_and_left_alone(rt, unix_dir, kind):
    path = os.path.join(unix_dir, "taken")
    if kind == "directory":
        os.mkdir(path)
    else:
        with open(path, "w") as f:
            f.write("data")
    err = try_listen(rt, "unix:" + path)
    assert isinstance(err, OSError) and err.errno == errno.EADDRINUSE, err
    assert "not a socket" in str(err)
    assert os.path.isdir(path) if kind == "directory" else open(path).read() == "data"


def test_path_length_limit_is_sun_path(rt, unix_dir):
    longest = os.path.join(unix_dir, "x" * (107 - len(unix_dir) - 1))
    assert len(os.fsencode(longest)) == 107
    lid, addr = listen_factory(rt, EchoReactor, addr="unix:" + longest)
    assert rt.local_address(lid) == longest
    peer = raw_client(addr)
    peer.sendall(frame(b"edge"))
    assert recv_exact_nb(rt, peer, 14) == frame(b"edge")
    peer.close()
    too_long = "unix:" + longest + "y"
    for result in (try_listen(rt, too_long), connect(rt, too_long, EchoReactor())):
        assert isinstance(result, ValueError) and "too long: 108 bytes" in str(result), result


@pytest.mark.parametrize("addr, text", [("unix:", "empty"), ("unix:@", "empty"),
                                        ("unix:a\0b", "NUL")])
def test_malformed_addresses_are_refused(rt, addr, text):
    for result in (try_listen(rt, addr), connect(rt, addr, EchoReactor())):
        assert isinstance(result, ValueError) and text in str(result), result


def test_missing_directory_and_nobody_listening(rt, unix_dir):
    missing = f"unix:{unix_dir}/no/such/dir.sock"
    err = try_listen(rt, missing)
    assert isinstance(err, FileNotFoundError) and "no such directory" in str(err), err
    assert missing in str(err)
    err = connect(rt, missing, EchoReactor())
    assert isinstance(err, FileNotFoundError) and missing in str(err), err
    err = connect(rt, f"unix:{unix_dir}/absent.sock", EchoReactor())
    assert isinstance(err, FileNotFoundError), err


def test_reuse_port_is_refused(rt, unix_dir):
    handler = DefaultTcpListenerHandler(lambda n, p: EchoReactor(), reuse_port=True)
    err = try_listen(rt, f"unix:{unix_dir}/rp.sock", handler)
    assert isinstance(err, ValueError) and "reuse_port" in str(err), err
    assert os.listdir(unix_dir) == []


def test_connect_to_a_full_backlog_fails_at_once(rt, unix_dir):
    """A Unix connect does not wait for room in the backlog: EAGAIN, nothing in progress."""
    path = os.path.join(unix_dir, "full.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(0)                                   # and never accepts
    results = []
    try:
        for _ in range(8):
            results.append(connect(rt, "unix:" + path, SinkReactor()))
            if isinstance(results[-1], BlockingIOError):
                break
        err = results[-1]
        assert isinstance(err, BlockingIOError) and "backlog is full" in str(err), results
        assert all(isinstance(r, reactio.ReactorID) for r in results[:-1])
    finally:
        srv.close()


@pytest.mark.skipif(not LINUX, reason="the abstract namespace is Linux's")
def test_a_second_listener_on_an_abstract_name_is_refused(rt):
    name = f"unix:@reactio-test-twice-{os.getpid()}"
    lid, addr = listen_factory(rt, EchoReactor, addr=name)
    err = try_listen(rt, name)
    assert isinstance(err, OSError) and err.errno == errno.EADDRINUSE, err


def test_a_listener_whose_on_start_listen_fails_removes_its_file(rt, unix_dir, expected_errors):
    path = os.path.join(unix_dir, "failed.sock")

    class Refuses(DefaultTcpListenerHandler):
        def on_start_listen(self, reactor_id, cmd_sender):
            raise RuntimeError("not today")

    err = try_listen(rt, "unix:" + path, Refuses(lambda n, p: EchoReactor()))
    assert isinstance(err, RuntimeError)
    assert not os.path.exists(path)
    assert expected_errors.matching("on_start_listen raised RuntimeError")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_runtime_closed_in_a_forked_child_leaves_the_parents_file(rt, unix_dir):
    path = os.path.join(unix_dir, "forked.sock")
    lid, addr = listen_factory(rt, EchoReactor, addr="unix:" + path)
    pid = os.fork()
    if pid == 0:                                    # the child: close its copy, nothing else
        try:
            rt.close()
        finally:
            os._exit(0 if os.path.exists(path) else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.path.exists(path)
    peer = raw_client(addr)                         # the parent still serves on it
    peer.sendall(frame(b"parent"))
    assert recv_exact_nb(rt, peer, 16) == frame(b"parent")
    peer.close()


def test_a_runtime_dropped_without_close_leaves_a_stale_file_the_next_listener_replaces(
        unix_dir):
    path = os.path.join(unix_dir, "dropped.sock")
    first = reactio.ReactRuntime()
    listen_factory(first, EchoReactor, addr="unix:" + path)
    del first                                       # no close(): __dealloc__ runs no Python
    gc.collect()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)    # left behind, and stale now
    with reactio.ReactRuntime() as rt:
        lid, addr = listen_factory(rt, EchoReactor, addr="unix:" + path)
        peer = raw_client(addr)
        peer.sendall(frame(b"again"))
        assert recv_exact_nb(rt, peer, 15) == frame(b"again")
        peer.close()
    assert not os.path.exists(path)


def test_the_socket_file_gets_the_umask_permissions(rt, unix_dir):
    old = os.umask(0o077)
    try:
        lid, addr = listen_factory(rt, EchoReactor, addr=f"unix:{unix_dir}/private.sock")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(os.path.join(unix_dir, "private.sock")).st_mode) == 0o700
