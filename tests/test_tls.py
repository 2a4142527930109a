"""TLS over streams (ssl= on send_connect and the listener handlers): reactio against itself,
against Python's blocking ssl sockets in a thread, and against ``openssl s_client``; certificates
are made at test time with trustme (or, where it cannot be installed, with the openssl command:
tests/support/certs.py)."""
from __future__ import annotations

import logging
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

import reactio
from reactio import DropMsgSize, ExpectMsgSize, ReactRuntime

from support.reactors import EchoReactor
from support.runtime import Completion, connect, listen_factory, pump_until, stream_ids
from support.sockets import raw_client, reset
from support.tls import BlockingTlsServer, ca, client_ctx, recv_all, server_ctx  # noqa: F401
from support.wire import frame

pytestmark = pytest.mark.timeout(60)


class BytesEcho(reactio.Reactor):
    """Echoes whatever arrives, unframed; keeps its close error."""

    def __init__(self):
        self.closed = []

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        ctx.send_or_que(buf)
        return DropMsgSize(len(buf))

    def on_close(self, reactor_id, cmd_sender):
        self.closed.append(self.close_error)


class Collector(EchoReactor):
    """Records frames without echoing; sends ``greeting`` frames from on_connected."""

    def __init__(self, *greeting):
        super().__init__()
        self.greeting = greeting
        self.info = None

    def on_connected(self, ctx, listener_id):
        super().on_connected(ctx, listener_id)
        so = ctx.ssl_object
        self.info = (so.version(), so.cipher(), so.getpeercert(), so.selected_alpn_protocol())
        for g in self.greeting:
            ctx.send_or_que(g)

    def on_frame(self, msg, ctx):
        self.frames.append(bytes(msg))


def test_echo_frames_and_ssl_object(ca, server_ctx):
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    cctx.set_alpn_protocols(["reactio-test"])
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(sctx)
    sctx.set_alpn_protocols(["reactio-test"])
    big = frame(b"x" * 60000)
    with ReactRuntime() as rt:
        _, port = listen_factory(rt, EchoReactor, ssl=sctx)
        client = Collector(frame(b"hello"), big, frame(b"bye"))
        rid = connect(rt, port, client, host="localhost", ssl=cctx)
        assert isinstance(rid, reactio.ReactorID), rid
        pump_until(rt, lambda: len(client.frames) == 3)
        assert client.frames == [frame(b"hello"), big, frame(b"bye")]
        version, cipher, cert, alpn = client.info
        assert version in ("TLSv1.2", "TLSv1.3") and cipher[0]
        assert ("DNS", "localhost") in cert["subjectAltName"]
        assert alpn == "reactio-test"
        assert rt.count_streams() == 2


def test_plain_stream_has_no_ssl_object():
    got = []

    class Probe(EchoReactor):
        def on_connected(self, ctx, listener_id):
            got.append(ctx.ssl_object)

    with ReactRuntime() as rt:
        _, port = listen_factory(rt, EchoReactor)
        connect(rt, port, Probe())
        pump_until(rt, lambda: got)
    assert got == [None]


def test_on_connected_runs_after_the_handshake(server_ctx, client_ctx):
    seen = []

    class Probe(EchoReactor):
        def on_connected(self, ctx, listener_id):
            seen.append((listener_id is None, ctx.ssl_object.version()))

    with ReactRuntime() as rt:
        lid, port = listen_factory(rt, Probe, ssl=server_ctx)
        connect(rt, port, Probe(), ssl=client_ctx)
        pump_until(rt, lambda: len(seen) == 2)
    assert sorted(seen) == [(False, "TLSv1.3"), (True, "TLSv1.3")]


def test_verification_is_on_by_default_and_fails_only_that_stream(server_ctx, client_ctx,
                                                                    caplog):
    with ReactRuntime() as rt:
        server = []
        _, port = listen_factory(rt, lambda: server.append(EchoReactor()) or server[-1],
                                 ssl=server_ctx)
        err = connect(rt, port, EchoReactor(), ssl=ssl.create_default_context())
        assert isinstance(err, ssl.SSLCertVerificationError), err
        err = connect(rt, port, EchoReactor(), ssl=client_ctx, server_hostname="other.example")
        assert isinstance(err, ssl.SSLCertVerificationError), err
        assert "other.example" in str(err)
        pump_until(rt, lambda: "TLSV1_ALERT" in caplog.text or "alert" in caplog.text)
        assert all(not r.closed for r in server)     # no on_close for a failed handshake
        # the listener and the runtime go on
        client = Collector(frame(b"ok"))
        assert isinstance(connect(rt, port, client, ssl=client_ctx), reactio.ReactorID)
        pump_until(rt, lambda: client.frames == [frame(b"ok")])


def test_bad_options_are_refused(server_ctx, client_ctx):
    with ReactRuntime() as rt:
        cs = rt.cmd_sender
        with pytest.raises(TypeError, match="SSLContext"):
            cs.send_connect("127.0.0.1:1", 4096, EchoReactor(), ssl=True)
        with pytest.raises(ValueError, match="client context"):
            cs.send_connect("127.0.0.1:1", 4096, EchoReactor(), ssl=server_ctx)
        with pytest.raises(ValueError, match="need ssl"):
            cs.send_connect("127.0.0.1:1", 4096, EchoReactor(), server_hostname="x")
        with pytest.raises(ValueError, match="more than 0"):
            cs.send_connect("127.0.0.1:1", 4096, EchoReactor(), ssl=client_ctx,
                            ssl_handshake_timeout=0)
        with pytest.raises(ValueError, match="server context"):
            cs.send_listen("127.0.0.1:0", reactio.DefaultTcpListenerHandler(
                lambda c, p: EchoReactor(), ssl=client_ctx))


def test_send_no_que_is_refused_on_tls(server_ctx, client_ctx):
    errors = []

    class Probe(EchoReactor):
        def on_connected(self, ctx, listener_id):
            try:
                ctx.send_no_que(b"x")
            except ValueError as exc:
                errors.append(exc)

    with ReactRuntime() as rt:
        _, port = listen_factory(rt, EchoReactor, ssl=server_ctx)
        connect(rt, port, Probe(), ssl=client_ctx)
        pump_until(rt, lambda: errors)
    assert "send_or_que" in str(errors[0])


# -- Python's blocking ssl sockets in a thread ------------------------------------------------

def test_large_writes_with_backpressure_to_a_slow_blocking_peer(server_ctx, client_ctx):
    """8 MiB sent at once to a peer that reads slowly: the sends queue (on_pause_writing),
    completions run in order once their records reached the kernel, every byte arrives."""
    total = 8 * 1024 * 1024

    def serve(conn):
        time.sleep(0.3)         # let the client's queue fill
        data = recv_all(conn, total)
        conn.sendall(b"done")
        return data

    server = BlockingTlsServer(server_ctx, serve)
    payload = bytes(range(256)) * (total // 256)
    done, events = [], []

    class Sender(reactio.Reactor):
        def on_connected(self, ctx, listener_id):
            for i in range(8):
                chunk = payload[i * (total // 8):(i + 1) * (total // 8)]
                ctx.send_or_que(chunk, lambda r, i=i: done.append(i))

        def on_pause_writing(self, ctx):
            events.append("pause")

        def on_resume_writing(self, ctx):
            events.append("resume")

        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            events.append(bytes(buf))
            return DropMsgSize(len(buf))

    with ReactRuntime() as rt:
        assert isinstance(connect(rt, server.port, Sender(), ssl=client_ctx), reactio.ReactorID)
        pump_until(rt, lambda: b"done" in events, timeout=30)
    assert server.join() == payload
    assert done == list(range(8))
    assert events[:2] == ["pause", "resume"]


def test_close_sends_close_notify(server_ctx, client_ctx):
    """ctx.close() queues close_notify behind the data: the peer reads every byte, then a clean
    TLS end (recv() gives b"" -- a bare EOF would raise SSLEOFError with
    suppress_ragged_eofs=False)."""
    server = BlockingTlsServer(server_ctx, lambda conn: (recv_all(conn, 1 << 20),
                                                         conn.recv(10)))

    class Closer(reactio.Reactor):
        def on_connected(self, ctx, listener_id):
            ctx.send_or_que(b"z" * (1 << 20))
            ctx.close()

        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            return DropMsgSize(len(buf))

    with ReactRuntime() as rt:
        connect(rt, server.port, Closer(), ssl=client_ctx)
        pump_until(rt, lambda: not server.thread.is_alive(), timeout=20)
        result = server.join()
    assert not isinstance(result, BaseException), result
    assert result == (b"z" * (1 << 20), b"")


def test_blocking_client_against_reactio_server(server_ctx, client_ctx):
    out = {}

    def client(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
                with client_ctx.wrap_socket(raw, server_hostname="localhost") as conn:
                    conn.sendall(b"ping" * 10000)
                    out["echo"] = recv_all(conn, 40000)
                    conn.unwrap()           # close_notify both ways
                    out["clean"] = True
        except BaseException as exc:
            out["error"] = exc

    server = []
    with ReactRuntime() as rt:
        _, port = listen_factory(rt, lambda: server.append(BytesEcho()) or server[-1],
                                 ssl=server_ctx)
        t = threading.Thread(target=client, args=(port,), daemon=True)
        t.start()
        pump_until(rt, lambda: not t.is_alive() and server and server[0].closed, timeout=20)
    assert out.get("echo") == b"ping" * 10000, out
    assert out.get("clean"), out
    assert server[0].closed == [None]


# -- hostile peers ----------------------------------------------------------------------------

def test_garbage_instead_of_client_hello_is_closed_with_a_clear_error(server_ctx, client_ctx,
                                                                        caplog):
    caplog.set_level(logging.WARNING, logger="reactio")
    with ReactRuntime() as rt:
        _, port = listen_factory(rt, BytesEcho, ssl=server_ctx)
        sock = raw_client(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        pump_until(rt, lambda: "TLS handshake" in caplog.text)
        assert "HTTP_REQUEST" in caplog.text or "WRONG_VERSION" in caplog.text, caplog.text
        sock.settimeout(5)
        try:
            rest = sock.recv(4096)      # an alert, then the end
            while rest:
                rest = sock.recv(4096)
        except ConnectionResetError:
            pass
        sock.close()
        client = Collector(frame(b"still here"))
        connect(rt, port, client, ssl=client_ctx)
        pump_until(rt, lambda: client.frames == [frame(b"still here")])


def test_peer_resets_mid_handshake(server_ctx, caplog):
    caplog.set_level(logging.WARNING, logger="reactio")
    made = []
    with ReactRuntime() as rt:
        _, port = listen_factory(rt, lambda: made.append(BytesEcho()) or made[-1],
                                 ssl=server_ctx)
        sock = raw_client(port)
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")   # a ClientHello's start
        pump_until(rt, lambda: made)
        rt.process_events(0.05)
        reset(sock)
        pump_until(rt, lambda: "TLS handshake" in caplog.text)
        assert rt.count_streams() == 0
        assert made[0].closed == []     # never opened: no on_close


def test_server_resets_during_client_handshake(client_ctx):
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    def resetter():
        conn, _ = lsock.accept()
        conn.recv(10)           # the ClientHello arrived
        reset(conn)

    t = threading.Thread(target=resetter, daemon=True)
    t.start()
    try:
        with ReactRuntime() as rt:
            err = connect(rt, port, EchoReactor(), ssl=client_ctx)
    finally:
        t.join(10)
        lsock.close()
    assert isinstance(err, (ConnectionResetError, ssl.SSLEOFError)), err


def test_handshake_timeout_and_close_during_handshake(client_ctx):
    lsock = socket.create_server(("127.0.0.1", 0))       # accepts (backlog), never answers
    port = lsock.getsockname()[1]
    try:
        with ReactRuntime() as rt:
            err = connect(rt, port, EchoReactor(), ssl=client_ctx, ssl_handshake_timeout=0.2)
            assert isinstance(err, TimeoutError) and "TLS handshake" in str(err), err
            done = Completion()
            reactor = EchoReactor()
            rt.cmd_sender.send_connect(("127.0.0.1", port), 4096, reactor,
                                       reactio.Deferred.IMMEDIATE, done, ssl=client_ctx)
            pump_until(rt, lambda: stream_ids(rt))
            rt.process_events(0.05)
            rt.cmd_sender.send_close(stream_ids(rt)[0])
            pump_until(rt, lambda: done.done)
            assert isinstance(done.result, reactio.ReactorClosedError), done.result
            assert reactor.closed == []
            late = Completion()
            rt.cmd_sender.send_connect(("127.0.0.1", port), 4096, EchoReactor(),
                                       reactio.Deferred.IMMEDIATE, late, ssl=client_ctx)
            pump_until(rt, lambda: stream_ids(rt))
        assert isinstance(late.result, reactio.RuntimeClosedError), late.result
    finally:
        lsock.close()


def test_shutdown_during_handshakes(server_ctx, client_ctx, caplog):
    """rt.shutdown() ends a connect in its handshake (the completion gets the error once) and
    an accepted stream in its handshake (logged), and returns at once: 0 streams left."""
    caplog.set_level(logging.WARNING, logger="reactio")
    mute = socket.create_server(("127.0.0.1", 0))       # accepts (backlog), never answers
    made = []
    try:
        rt = ReactRuntime()
        _, port = listen_factory(rt, lambda: made.append(BytesEcho()) or made[-1],
                                 ssl=server_ctx)
        silent = raw_client(port)               # connects to our TLS listener, says nothing
        done = Completion()
        rt.cmd_sender.send_connect(("127.0.0.1", mute.getsockname()[1]), 4096, EchoReactor(),
                                   reactio.Deferred.IMMEDIATE, done, ssl=client_ctx)
        pump_until(rt, lambda: made and len(stream_ids(rt)) == 2)
        assert rt.shutdown(timeout=5) == 0
        assert isinstance(done.result, reactio.ReactorClosedError), done.result
        assert made[0].closed == []
        assert "TLS handshake" in caplog.text
        silent.close()
    finally:
        mute.close()


def tls_pair_over(sock, ctx, server_hostname="localhost"):
    """A TLS client driven by hand over a blocking socket (SSLObject + MemoryBIOs): the test
    decides which records reach the wire."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=server_hostname)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(out.read())
            inc.write(sock.recv(65536))
    sock.sendall(out.read())
    return obj, out


@pytest.mark.parametrize("cut", [False, True], ids=["record-boundary", "truncated"])
def test_peer_eof_without_close_notify(server_ctx, client_ctx, cut):
    """The peer's bare EOF (no close_notify): at a record boundary a plain EOF (on_close
    without an error, as asyncio takes it); in the middle of a record the stream closes with
    ssl.SSLEOFError, "truncated"."""
    server = []
    with ReactRuntime() as rt:
        _, port = listen_factory(rt, lambda: server.append(BytesEcho()) or server[-1],
                                 ssl=server_ctx)
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        result = {}
        t = threading.Thread(target=lambda: result.update(obj=tls_pair_over(sock, client_ctx)),
                             daemon=True)
        t.start()
        pump_until(rt, lambda: not t.is_alive() and rt.count_streams() == 1)
        obj, out = result["obj"]
        obj.write(b"a" * 1000)
        record = out.read()
        sock.sendall(record[:len(record) // 2] if cut else record)
        sock.shutdown(socket.SHUT_WR)
        pump_until(rt, lambda: server[0].closed)
        sock.close()
    err = server[0].closed[0]
    if cut:
        assert isinstance(err, ssl.SSLEOFError) and "truncated" in str(err), err
    else:
        assert err is None


# -- openssl s_client -----------------------------------------------------------------------

needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None,
    reason="no openssl command on PATH (Windows, wine; on Linux bench/install-tools.sh installs it)")


class SClient:
    """``openssl s_client`` in command mode (its stdin lines are sent; "K" asks for a key
    update, "R" renegotiates), its output collected by a thread."""

    def __init__(self, port, ca, tmp_path, *extra):
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        self.proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(ca_file),
             "-servername", "localhost", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for chunk in iter(lambda: self.proc.stdout.read1(4096), b""):
            self.out.extend(chunk)

    def lines(self):
        return bytes(self.out).decode(errors="replace").splitlines()

    def send(self, line):
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def finish(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(10)
        self.reader.join(10)


@needs_openssl
def test_openssl_s_client_key_update(ca, server_ctx, tmp_path):
    """TLS 1.3 key update asked by the peer (s_client's "K": update_requested): reactio
    answers with its own and the stream goes on."""
    with ReactRuntime() as rt:
        _, port = listen_factory(rt, BytesEcho, ssl=server_ctx)
        peer = SClient(port, ca, tmp_path)
        try:
            peer.send(b"hello")
            pump_until(rt, lambda: "hello" in peer.lines(), timeout=20)
            peer.send(b"K")
            pump_until(rt, lambda: "KEYUPDATE" in peer.lines(), timeout=20)
            peer.send(b"after the key update")
            pump_until(rt, lambda: "after the key update" in peer.lines(), timeout=20)
        finally:
            peer.finish()


@needs_openssl
def test_openssl_s_client_renegotiation_is_refused(ca, server_ctx, tmp_path):
    server = []
    with ReactRuntime() as rt:
        _, port = listen_factory(rt, lambda: server.append(BytesEcho()) or server[-1],
                                 ssl=server_ctx)
        peer = SClient(port, ca, tmp_path, "-tls1_2")
        try:
            peer.send(b"hello")
            pump_until(rt, lambda: "hello" in peer.lines(), timeout=20)
            peer.send(b"R")
            pump_until(rt, lambda: server[0].closed, timeout=20)
        finally:
            peer.finish()
    assert "RENEGOTIATING" in peer.lines()
    err = server[0].closed[0]
    assert isinstance(err, ssl.SSLError), err


@needs_openssl
def test_openssl_s_server_peer(ca, client_ctx, tmp_path):
    """reactio as the client of ``openssl s_server -rev`` (which sends each line reversed)."""
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    proc = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}",
                             "-cert", str(tmp_path / "server.pem"), "-rev", "-naccept", "1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    lines = []

    class LineClient(reactio.Reactor):
        def on_connected(self, ctx, listener_id):
            ctx.send_or_que(b"reactio over tls\n")

        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            i = bytes(buf).find(b"\n")
            if i < 0:
                return ExpectMsgSize(0)
            lines.append(bytes(buf[:i]))
            return DropMsgSize(i + 1)

    try:
        with ReactRuntime() as rt:
            deadline = time.monotonic() + 10
            while True:         # s_server needs a moment to listen
                rid = connect(rt, port, LineClient(), ssl=client_ctx)
                if isinstance(rid, reactio.ReactorID) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert isinstance(rid, reactio.ReactorID), rid
            pump_until(rt, lambda: b"slt revo oitcaer" in lines, timeout=20)
    finally:
        proc.kill()
        proc.wait(10)


def test_u16_frames_echo_python_and_many_small_records(server_ctx, client_ctx):
    """Many small messages, each its own record, some split over reads: framing is exactly
    that of a plain stream."""
    msgs = [frame(struct.pack("<I", i) * (i % 50)) for i in range(2000)]
    with ReactRuntime() as rt:
        _, port = listen_factory(rt, EchoReactor, ssl=server_ctx, recv_buffer_min_size=64)
        client = Collector(*msgs)
        connect(rt, port, client, ssl=client_ctx)
        pump_until(rt, lambda: len(client.frames) == len(msgs), timeout=30)
    assert client.frames == msgs
