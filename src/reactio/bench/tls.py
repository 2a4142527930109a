"""``pingpong --tls``: the certificate of the run and the SSL contexts of every leg.

The harness makes a throwaway self-signed certificate (``openssl req``, for 127.0.0.1) in the
run's temp dir and names that dir in the ``REACTIO_BENCH_TLS`` environment variable, which the
children inherit; every leg then serves and connects with ``ssl=`` contexts built here, so all
of them run the same TLS version, cipher and certificate. Without the variable the contexts are
None: plain TCP.
"""
from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Optional

ENV = "REACTIO_BENCH_TLS"


class TlsSetupError(RuntimeError):
    pass


def make_material(directory: Path) -> Path:
    """A self-signed EC certificate for 127.0.0.1 (and localhost) with its key, in
    ``directory``; returns it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsSetupError("--tls makes its certificate with the openssl command, which is "
                            "not installed (bench/install-tools.sh installs it)")
    cmd = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-days", "2", "-subj", "/CN=localhost",
           "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
           "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise TlsSetupError(f"openssl req failed: {proc.stderr.strip()}")
    return directory


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def server_context() -> Optional[ssl.SSLContext]:
    d = os.environ.get(ENV)
    if not d:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"))
    return ctx


def client_context() -> Optional[ssl.SSLContext]:
    """Verifies the server against the run's certificate (host name 127.0.0.1)."""
    d = os.environ.get(ENV)
    if not d:
        return None
    ctx = ssl.create_default_context(cafile=os.path.join(d, "cert.pem"))
    ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)   # a self-signed leaf
    return ctx
