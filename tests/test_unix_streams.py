"""Unix-domain streams under load and abuse: a large transfer both ways with backpressure,
hundreds of connections at once, hostile peers (connect-and-vanish, a reset with unread
input, descriptors passed in SCM_RIGHTS), permission denied; and the IOCP backend's refusal
of "unix:" addresses (checked under wine)."""
import array
import errno
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

import reactio
from reactio import DefaultTcpListenerHandler, Deferred, DropMsgSize, Reactor

from support.env import BACKEND, LINUX
from support.fds import open_fds
from support.reactors import EchoReactor
from support.runtime import Completion, connect, listen_factory, pump_until
from support.sockets import raw_client, recv_exact_nb, reset
from support.subproc import child_env
from support.wire import frame

pytestmark = pytest.mark.timeout(60)
epoll_only = pytest.mark.skipif(BACKEND != "epoll", reason="Unix sockets run on the epoll "
                                "backend; IOCP refuses them (test_iocp_refuses_unix_addresses)")

PERIOD = 251                # a prime: a misplaced chunk cannot line up with the pattern
PATTERN = bytes(range(PERIOD)) * 1100


class RawEcho(Reactor):
    """Echoes every byte as it comes."""

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        ctx.send_or_que(buf)
        return DropMsgSize(len(buf))


class Producer(Reactor):
    """Sends ``total`` bytes of the pattern in 256 KiB chunks, only while not paused, and
    checks every byte that comes back."""

    def __init__(self, total):
        self.total, self.sent, self.received = total, 0, 0
        self.paused, self.pauses, self.resumes = False, 0, 0
        self.mismatch = None

    def on_connected(self, ctx, listener_id):
        self.produce(ctx)

    def produce(self, ctx):
        while not self.paused and self.sent < self.total:
            n = min(256 * 1024, self.total - self.sent)
            off = self.sent % PERIOD
            self.sent += n
            ctx.send_or_que(PATTERN[off:off + n])   # may pause us in the call

    def on_pause_writing(self, ctx):
        self.paused = True
        self.pauses += 1

    def on_resume_writing(self, ctx):
        self.paused = False
        self.resumes += 1
        self.produce(ctx)

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        off = self.received % PERIOD
        if self.mismatch is None and buf != PATTERN[off:off + len(buf)]:
            self.mismatch = self.received
        self.received += len(buf)
        return DropMsgSize(len(buf))


@epoll_only
@pytest.mark.timeout(120)
def test_large_transfer_both_ways_with_backpressure(rt, unix_dir):
    total = 64 * 1024 * 1024
    lid, addr = listen_factory(rt, RawEcho, 65536, addr=f"unix:{unix_dir}/big.sock")
    producer = Producer(total)
    assert isinstance(connect(rt, addr, producer, 65536), reactio.ReactorID)
    pump_until(rt, lambda: producer.received == total, timeout=100)
    assert producer.mismatch is None
    assert producer.pauses >= 1 and producer.resumes == producer.pauses


@epoll_only
@pytest.mark.timeout(120)
def test_hundreds_of_connections_at_once(rt, unix_dir):
    lid, addr = listen_factory(rt, EchoReactor, addr=f"unix:{unix_dir}/many.sock")
    peers = [raw_client(addr) for _ in range(300)]              # within the backlog (1024)
    clients = [EchoReactor() for _ in range(200)]
    done = [Completion() for _ in clients]
    for c, d in zip(clients, done):
        rt.cmd_sender.send_connect(addr, 4096, c, Deferred.IMMEDIATE, d)
    pump_until(rt, lambda: all(d.done for d in done) and rt.count_streams() == 700)
    assert all(isinstance(d.result, reactio.ReactorID) for d in done)
    for i, p in enumerate(peers):
        p.sendall(frame(b"%d" % i))
    for i, p in enumerate(peers):
        msg = frame(b"%d" % i)
        assert recv_exact_nb(rt, p, len(msg)) == msg
        p.close()
    for d in done:
        rt.cmd_sender.send_close(d.result)
    pump_until(rt, lambda: rt.count_streams() == 0)


class KeepsCtx(EchoReactor):
    def on_connected(self, ctx, listener_id):
        self.ctx = ctx


@epoll_only
def test_peers_that_vanish_or_reset_cost_only_themselves(rt, unix_dir):
    server = []
    lid, addr = listen_factory(rt, lambda: server.append(KeepsCtx()) or server[-1],
                               addr=f"unix:{unix_dir}/hostile.sock")
    for _ in range(100):                            # connect and vanish at once
        raw_client(addr).close()
    pump_until(rt, lambda: len(server) == 100 and rt.count_streams() == 0)
    peer = raw_client(addr)
    peer.sendall(frame(b"z" * 100)[:50])            # half a frame ...
    pump_until(rt, lambda: len(server) == 101 and rt.count_streams() == 1)
    server[-1].ctx.send_or_que(b"unread by the peer")
    rt.process_events(0.01)
    reset(peer)                 # ... closed with unread input: ECONNRESET, Unix's reset
    pump_until(rt, lambda: server[-1].closed)
    assert isinstance(server[-1].closed[0][1], ConnectionResetError), server[-1].closed
    assert server[-1].frames == []
    good = raw_client(addr)
    good.sendall(frame(b"still serving"))
    assert recv_exact_nb(rt, good, 23) == frame(b"still serving")
    good.close()


@epoll_only
@pytest.mark.skipif(not LINUX, reason="counts descriptors in /proc/self/fd")
def test_descriptors_passed_in_scm_rights_are_not_kept(rt, unix_dir):
    """The runtime reads with recv(), no ancillary buffer: the kernel discards descriptors a
    peer passes along, and the bytes arrive as usual."""
    server = EchoReactor()
    lid, addr = listen_factory(rt, lambda: server, addr=f"unix:{unix_dir}/fds.sock")
    peer = raw_client(addr)
    pump_until(rt, lambda: rt.count_streams() == 1)
    before = open_fds()
    r, w = os.pipe()
    try:
        for i in range(50):
            peer.sendmsg([frame(b"%d" % i)],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))])
            msg = frame(b"%d" % i)
            assert recv_exact_nb(rt, peer, len(msg)) == msg
    finally:
        os.close(r)
        os.close(w)
    assert open_fds() == before
    assert len(server.frames) == 50
    peer.close()


PERMISSION_CHILD = textwrap.dedent("""
    import sys
    import reactio
    from reactio import DefaultTcpListenerHandler, ReactRuntime, Reactor
    rt = ReactRuntime()
    out = []
    h = DefaultTcpListenerHandler(lambda n, p: None)
    rt.cmd_sender.send_listen(sys.argv[1], h, None, out.append)
    rt.cmd_sender.send_connect(sys.argv[2], 4096, Reactor(), None, out.append)
    while len(out) < 2:
        rt.process_events(0.01)
    print("\\n".join(f"{type(r).__name__}: {r}" for r in out))
""")


@epoll_only
@pytest.mark.skipif(not LINUX, reason="setpriv and the owner's mode bits are Linux's here")
def test_permission_denied_reaches_the_completion(rt, unix_dir):
    os.chmod(unix_dir, 0o755)
    readonly = os.path.join(unix_dir, "ro")
    os.mkdir(readonly, 0o555)
    lid, addr = listen_factory(rt, EchoReactor, addr=f"unix:{unix_dir}/private.sock")
    os.chmod(os.path.join(unix_dir, "private.sock"), 0o000)
    cmd = [sys.executable, "-c", PERMISSION_CHILD, f"unix:{readonly}/x.sock", addr]
    if os.geteuid() == 0:           # root passes mode bits: drop that privilege for the child
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and no setpriv to drop CAP_DAC_OVERRIDE")
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=child_env())
    assert proc.returncode == 0, proc.stderr
    lines = sorted(proc.stdout.splitlines())
    assert len(lines) == 2 and all(x.startswith("PermissionError:") for x in lines), lines
    assert any("listen on 'unix:" in x for x in lines) and any("connect to" in x for x in lines)


@pytest.mark.skipif(BACKEND != "iocp", reason="the epoll backend supports Unix sockets")
def test_iocp_refuses_unix_addresses(rt):
    """Windows has AF_UNIX since 10 1803, but wine (where IOCP is tested) has none
    (WSAEAFNOSUPPORT): the IOCP backend refuses "unix:" addresses, with the reason."""
    for addr in ("unix:C:/reactio-test.sock", "unix:relative.sock"):
        for result in (connect(rt, addr, EchoReactor()), _listen_result(rt, addr)):
            assert isinstance(result, OSError) and result.errno == errno.EAFNOSUPPORT, result
            assert "not supported on the iocp backend" in str(result) and addr in str(result)
    assert rt.count_streams() == 0 and not os.path.exists("relative.sock")


def _listen_result(rt, addr):
    done = Completion()
    rt.cmd_sender.send_listen(addr, DefaultTcpListenerHandler(lambda n, p: EchoReactor()),
                              Deferred.IMMEDIATE, done)
    pump_until(rt, lambda: done.done)
    return done.result
