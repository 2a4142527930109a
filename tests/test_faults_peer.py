"""Light fault tests (issue 5), peer faults: a peer that resets mid-frame or while we drain,
a peer that half-closes with a great deal of replies still to read.  The heavy version is
tests/stress/test_stress_peer_faults.py."""
from __future__ import annotations

import socket
import threading

import pytest

import reactio

from support.reactors import EchoReactor, SinkReactor
from support.runtime import connect, listen_factory, pump_until
from support.sockets import raw_client, recv_exact_nb, reset
from support.wire import frame

pytestmark = pytest.mark.timeout(30)


def test_reset_mid_frame_on_an_outbound_connection(rt):
    """The peer of a connection *we* opened sends half a frame and resets: the error reaches
    that reactor's on_close (the connect completion had the ReactorID), nothing else."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    client = EchoReactor()
    rid = connect(rt, srv.getsockname()[1], client)
    assert isinstance(rid, reactio.ReactorID)
    conn, _ = srv.accept()
    conn.sendall(frame(b"y" * 300)[:123])
    pump_until(rt, lambda: rt.get_context(rid).reader.bytes_in_buffer() == 123)
    reset(conn)
    pump_until(rt, lambda: client.closed)
    assert client.closed == [(rid, client.closed[0][1])]
    assert isinstance(client.closed[0][1], ConnectionResetError)
    assert client.frames == [] and rt.count_reactors() == 0
    srv.close()


def test_reset_while_draining_fails_the_send_completion(rt):
    """Queued bytes, a send completion and a graceful close pending when the peer resets:
    the completion and on_close both get the reset error, exactly once."""
    sent = []

    class Server(SinkReactor):
        def on_connected(self, ctx, listener_id):
            ctx.send_or_que(b"\x00" * (8 << 20), sent.append)
            ctx.close()                                   # graceful: drain first

    server = Server()
    lid, port = listen_factory(rt, lambda: server)
    peer = raw_client(port)
    pump_until(rt, lambda: rt.count_streams() == 1)
    rt.process_events(0.01)
    assert sent == []
    reset(peer)
    pump_until(rt, lambda: hasattr(server, "err"))
    assert isinstance(server.err, (ConnectionResetError, BrokenPipeError)), server.err
    assert len(sent) == 1 and sent[0] is server.err


def test_half_close_dispatches_every_whole_frame_and_flushes_big_replies(rt):
    """The peer writes 100 frames of ~60 KB and half of another, then shutdown(SHUT_WR), and
    reads only afterwards: the 100 frames are dispatched, their 6 MB of replies (far more than
    the socket buffers) arrive complete and in order, then an orderly FIN; the partial frame
    is never dispatched."""
    server = EchoReactor()
    lid, port = listen_factory(rt, lambda: server)
    peer = raw_client(port)
    frames = [frame(bytes([i]) * 60_000, i) for i in range(100)]
    wire = b"".join(frames)
    # The writer has its own socket object (same connection): recv_exact_nb makes ``peer``
    # non-blocking, and a sendall() still running on that object would then fail with
    # BlockingIOError (seen on free-threaded 3.13t, where the two threads truly overlap).
    out = peer.dup()
    writer = threading.Thread(target=lambda: (out.sendall(wire + frames[0][:30_000]),
                                              out.shutdown(socket.SHUT_WR)))
    writer.start()
    echoed = recv_exact_nb(rt, peer, len(wire), timeout=20)
    writer.join()
    out.close()
    assert echoed == wire
    pump_until(rt, lambda: server.closed)
    assert server.closed[0][1] is None
    assert server.frames == frames
    peer.settimeout(5)
    assert peer.recv(1) == b""
    peer.close()

