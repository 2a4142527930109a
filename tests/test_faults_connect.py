"""Light fault tests (issue 5), connect faults: refused connects by the hundred, connect
timeouts (in a network namespace of our own), a refused connect's slot, close() while connects
are in progress."""
from __future__ import annotations

import gc
import json

import pytest

import reactio
from reactio import ReactRuntime

from support.env import HAS_IPV6
from support.fds import runtime_descriptors
from support.reactors import EchoReactor
from support.runtime import Completion, listen_factory, pump_until, stream_ids
from support.sockets import closed_port, held_closed_ports, raw_client, recv_exact_nb
from support.subproc import run_helper_in_netns
from support.wire import frame

pytestmark = pytest.mark.timeout(30)


def test_connect_to_closed_ports_many_at_once(rt):
    """100 connects to closed ports (IPv4, and IPv6 when there is a ::1) while a stream echoes:
    each completion runs once with ConnectionRefusedError; no descriptor is left."""
    server = EchoReactor()
    lid, port = listen_factory(rt, lambda: server)
    peer = raw_client(port)
    pump_until(rt, lambda: rt.count_streams() == 1)
    base = runtime_descriptors()
    hosts = ["127.0.0.1"] + (["::1"] if HAS_IPV6 else [])
    results = {}
    with held_closed_ports(50, ipv6=HAS_IPV6) as ports:
        for host in hosts:
            for p in ports:
                rt.cmd_sender.send_connect(
                    (host, p), 1024, EchoReactor(), None,
                    lambda r, k=(host, p): results.setdefault(k, []).append(r))
        peer.sendall(frame(b"meanwhile"))
        assert recv_exact_nb(rt, peer, 19) == frame(b"meanwhile")
        # (patient: under wine on a loaded machine the 100 refusals once took over 5 s)
        pump_until(rt, lambda: len(results) == len(hosts) * len(ports), timeout=20)
    rt.process_events(0.01)
    assert all(len(v) == 1 and isinstance(v[0], ConnectionRefusedError)
               for v in results.values()), results
    assert runtime_descriptors() == base and rt.count_reactors() == 2
    peer.close()


def test_connect_timeout_in_a_private_network_namespace():
    """A non-routable address in a network namespace of our own (unshare --net
    --map-root-user; 192.0.2.0/24 routed into lo, where SYNs to a non-local address are
    dropped): 20 connects with timeouts each end with TimeoutError, once, no earlier than their
    timeout; an echo connection in the same runtime keeps running; close() fails a connect
    without a timeout with RuntimeClosedError; no descriptor is left."""
    proc = run_helper_in_netns("netns_connect.py",
                               "{ip} link set lo up && {ip} route add 192.0.2.0/24 dev lo")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    results = out["results"]
    assert len(results) == 20
    for i, rs in results.items():
        assert len(rs) == 1, rs
        name, text, elapsed = rs[0]
        assert name == "TimeoutError", rs
        assert 0.3 + 0.01 * int(i) - 0.001 <= elapsed < 5, rs
    assert out["rounds_during_timeouts"] > 20          # the loop was never blocked
    assert out["hanging"] == ["RuntimeClosedError"]
    assert out["fds_leaked"] == 0


def test_refused_connect_frees_its_slot_once(rt):
    """Regression: a refused connect freed its slot twice (in _connect_ready and again in
    _connect_failed), so the next two reactors got the same ReactorID, and ~100 refused
    connects overflowed the free-slot array (glibc: "corrupted size vs. prev_size")."""
    done = Completion()
    rt.cmd_sender.send_connect(("127.0.0.1", closed_port()), 1024, EchoReactor(), None, done)
    pump_until(rt, lambda: done.done)
    assert isinstance(done.result, ConnectionRefusedError)
    servers = []
    lid, port = listen_factory(rt, lambda: servers.append(EchoReactor()) or servers[-1])
    peers = [raw_client(port) for _ in range(3)]
    pump_until(rt, lambda: rt.count_streams() == 3)
    ids = stream_ids(rt)
    assert len(set(ids)) == len(ids) == 3, ids
    assert lid not in ids
    for i, p in enumerate(peers):                 # and each id still reaches its own stream
        p.sendall(frame(bytes([i])))
    for i, p in enumerate(peers):
        assert recv_exact_nb(rt, p, 11) == frame(bytes([i]))
        p.close()


def test_close_with_many_connects_in_progress():
    """close() while 200 connects are in progress: each completion fails once with
    RuntimeClosedError, every socket is closed (the slots were freed twice before, which
    overflowed the free-slot array)."""
    gc.collect()
    base = runtime_descriptors()
    rt = ReactRuntime()
    lid, port = listen_factory(rt, EchoReactor, backlog=512)
    results = {}
    for i in range(200):
        rt.cmd_sender.send_connect(("127.0.0.1", port), 1024, EchoReactor(), None,
                                   lambda r, i=i: results.setdefault(i, []).append(r))
    rt.process_events(0)            # the connects start; their outcome is not read yet
    rt.close()
    assert len(results) == 200
    assert all(len(v) == 1 for v in results.values())
    assert all(isinstance(v[0], (reactio.RuntimeClosedError, reactio.ReactorID))
               for v in results.values())
    del rt
    gc.collect()
    assert runtime_descriptors() == base

