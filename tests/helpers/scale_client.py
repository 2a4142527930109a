"""Client side of the 10,000-connection scale test, run as a subprocess (the server runtime in
the test process needs its own file descriptors).  Plain non-blocking sockets + epoll: an
independent reference, not reactio.

    python scale_client.py HOST PORT COUNT SEED

Opens COUNT connections (at most 256 connects in flight), sends each one frame
(u16 LE body length, i64 LE stamp, body) whose body is ``scale_body(i, SEED)``, reads the echo
and compares every byte.  Prints one JSON line with the outcome while *every connection is
still open*, then waits for a line on stdin and closes them all.
"""
import errno
import json
import os
import random
import resource
import select
import socket
import sys
import time


def scale_body(i: int, seed: int) -> bytes:
    length = 4 + (i * 7919 + seed) % 1500
    return i.to_bytes(4, "little") + random.Random(seed * 1_000_003 + i).randbytes(length - 4)


def frame(body: bytes, stamp: int = 0) -> bytes:
    return len(body).to_bytes(2, "little") + stamp.to_bytes(8, "little", signed=True) + body


def main():
    host, port, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ep = select.epoll()
    socks = {}          # fd -> [sock, index, expected bytes, received bytearray, state]
    nxt = connecting = done_ok = 0
    bad, errors = [], []
    t0 = time.monotonic()
    deadline = t0 + float(os.environ.get("SCALE_CLIENT_TIMEOUT", "240"))
    while done_ok + len(bad) + len(errors) < count:
        if time.monotonic() > deadline:
            errors.append(f"timeout: {done_ok} echoed of {count}")
            break
        while nxt < count and connecting < 256:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                errors.append(f"connect {nxt}: {os.strerror(err)}")
                s.close()
                nxt += 1
                continue
            socks[s.fileno()] = [s, nxt, frame(scale_body(nxt, seed), nxt), bytearray(), 0]
            ep.register(s.fileno(), select.EPOLLOUT)
            nxt += 1
            connecting += 1
        for fd, ev in ep.poll(0.05):
            entry = socks[fd]
            s, i, wire, got, state = entry
            if state == 0:                       # connect finished
                connecting -= 1
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    errors.append(f"connect {i}: {os.strerror(err)}")
                    ep.unregister(fd)
                    continue
                s.send(wire)                     # < 1.6 KiB: fits the empty socket buffer
                entry[4] = 1
                ep.modify(fd, select.EPOLLIN)
                continue
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                errors.append(f"recv {i}: {exc}")
                ep.unregister(fd)
                continue
            if not chunk:
                errors.append(f"conn {i}: closed by the server after {len(got)} bytes")
                ep.unregister(fd)
                continue
            got += chunk
            if len(got) >= len(wire):
                ep.unregister(fd)                # keep it open: the connections stay concurrent
                if bytes(got) == wire:
                    done_ok += 1
                else:
                    bad.append(i)
    open_now = sum(1 for e in socks.values() if e[0].fileno() >= 0)
    print(json.dumps({"echoed_ok": done_ok, "bad": bad[:20], "n_bad": len(bad),
                      "errors": errors[:20], "n_errors": len(errors), "open": open_now,
                      "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
                      "seconds": round(time.monotonic() - t0, 3)}), flush=True)
    sys.stdin.readline()
    for e in socks.values():
        e[0].close()
    print(json.dumps({"closed": len(socks)}), flush=True)


if __name__ == "__main__":
    main()
