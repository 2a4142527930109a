"""Test certificates made with the ``openssl`` command: the part of trustme's API that
tests/test_tls.py uses (``CA()``, ``issue_cert(*names)``, ``configure_cert``/``configure_trust``,
``cert_pem``/``private_key_and_cert_chain_pem.write_to_path``).

Only for where trustme cannot be installed: trustme needs cryptography, which needs cffi, and
cffi has no wheels for free-threaded CPython 3.13t (tools/freethreaded.sh).  Files live in a
temporary folder for the life of the process.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


class _Pem:
    def __init__(self, path: str) -> None:
        self.path = path

    def write_to_path(self, path: str) -> None:
        shutil.copyfile(self.path, path)


class LeafCert:
    def __init__(self, chain: str) -> None:
        self.private_key_and_cert_chain_pem = _Pem(chain)

    def configure_cert(self, ctx: ssl.SSLContext) -> None:
        ctx.load_cert_chain(self.private_key_and_cert_chain_pem.path)


class CA:
    """A self-signed CA (EC P-256) that issues server certificates for host names and IPs."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="reactio-certs-")
        self._n = 0
        self._key = os.path.join(self._dir, "ca.key")
        self.cert_pem = _Pem(os.path.join(self._dir, "ca.pem"))
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", self._key, "-out", self.cert_pem.path, "-days", "2",
                 "-subj", "/CN=reactio test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def configure_trust(self, ctx: ssl.SSLContext) -> None:
        ctx.load_verify_locations(cafile=self.cert_pem.path)

    def issue_cert(self, *names: str) -> LeafCert:
        self._n += 1
        base = os.path.join(self._dir, f"leaf{self._n}")
        sans = []
        for name in names:
            try:
                ipaddress.ip_address(name)
                sans.append(f"IP:{name}")
            except ValueError:
                sans.append(f"DNS:{name}")
        with open(base + ".ext", "w") as f:
            f.write(f"subjectAltName={','.join(sans)}\nbasicConstraints=critical,CA:FALSE\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", base + ".key", "-out", base + ".csr", "-subj", f"/CN={names[0]}")
        _openssl("x509", "-req", "-in", base + ".csr", "-CA", self.cert_pem.path,
                 "-CAkey", self._key, "-CAcreateserial", "-out", base + ".pem", "-days", "2",
                 "-extfile", base + ".ext")
        chain = base + ".chain.pem"
        with open(chain, "w") as out:
            for part in (base + ".key", base + ".pem", self.cert_pem.path):
                with open(part) as f:
                    out.write(f.read())
        return LeafCert(chain)
