"""TLS test material: certificates made at test time with trustme, or with the openssl command
where trustme cannot be installed (support/certs.py; module-scoped fixtures: import them into a
test module), and a blocking Python ssl server on a thread as the peer."""
from __future__ import annotations

import shutil
import socket
import ssl
import threading

import pytest

try:
    import trustme
except ImportError:
    # (free-threaded 3.13t: trustme's cryptography needs cffi, which has no wheels there)
    if shutil.which("openssl") is None:
        pytest.skip("trustme (the test extra) or the openssl command makes the certificates",
                    allow_module_level=True)
    from support import certs as trustme  # type: ignore[no-redef]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_ctx(ca):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


class BlockingTlsServer:
    """A one-connection TLS server on a thread: runs ``serve(conn)``; keeps what it returned
    or raised.  ``rcvbuf``: the accepted socket's SO_RCVBUF (set on the listening socket, so
    the window is small from the handshake on), to make a peer that does not read fill up
    soon."""

    def __init__(self, ctx, serve, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(ctx, serve), daemon=True)
        self.thread.start()

    def _run(self, ctx, serve):
        try:
            raw, _ = self.sock.accept()
            raw.settimeout(20)
            with ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False) as conn:
                self.result = serve(conn)
        except BaseException as exc:
            self.result = exc
        finally:
            self.sock.close()

    def join(self):
        self.thread.join(20)
        assert not self.thread.is_alive()
        return self.result


def recv_all(conn, n):
    """Up to n bytes from conn: fewer only at its end."""
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(min(65536, n - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def recv_to_end(conn):
    """Everything conn receives up to a clean TLS end (the peer's close_notify: recv() gives
    b""); a bare EOF raises ssl.SSLEOFError when conn was wrapped with
    suppress_ragged_eofs=False (as BlockingTlsServer does)."""
    data = bytearray()
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk
