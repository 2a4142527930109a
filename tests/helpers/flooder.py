"""A hostile peer for the fairness test (issue 10, defect 3):

    python flooder.py PORT SECONDS

Connects and writes small valid reactio frames (u16 length, i64 stamp, 20-byte body) as fast
as it can (at the lowest CPU priority), for at most SECONDS or until stdin is closed; a second
thread reads and discards the echoes so that the server never has a reason to drop the
connection.  At the end it half-closes and reads the remaining echoes up to the server's FIN,
so the connection ends without a reset.  Prints {"flooding": true} once the first megabyte is
out, then {"sent": bytes, "received": bytes, "peer_closed": bool} (peer_closed: the server
closed or reset the connection while the flood ran).
"""
import json
import os
import socket
import struct
import sys
import threading
import time


def main():
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    if hasattr(os, "nice"):
        # the flood needs little CPU to outpace a server that parses every frame; at the
        # lowest priority it does not also steal the server's (or the bystander's) core, so
        # the measurement is about the runtime's fairness, not about the scheduler
        os.nice(19)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    one = struct.pack("<Hq", 20, 0) + b"f" * 20
    burst = one * (65536 // len(one))
    stop = threading.Event()
    shut = threading.Event()
    received = [0]
    peer_closed = [False]

    def reader():
        r = s.dup()
        r.settimeout(10)
        while True:
            try:
                chunk = r.recv(1 << 20)
            except OSError:
                peer_closed[0] = True
                break
            if not chunk:
                if not shut.is_set():
                    peer_closed[0] = True
                break
            received[0] += len(chunk)
        r.close()

    def stdin_closed():
        sys.stdin.read()
        stop.set()

    reading = threading.Thread(target=reader, daemon=True)
    reading.start()
    threading.Thread(target=stdin_closed, daemon=True).start()
    sent = 0
    announced = False
    end = time.monotonic() + seconds
    try:
        while not stop.is_set() and time.monotonic() < end:
            s.sendall(burst)
            sent += len(burst)
            if not announced and sent >= 1 << 20:
                print(json.dumps({"flooding": True}), flush=True)
                announced = True
        shut.set()
        s.shutdown(socket.SHUT_WR)
    except OSError:
        peer_closed[0] = True
    reading.join(5)         # the echoes still owed; a starved server may owe megabytes
    s.close()
    print(json.dumps({"sent": sent, "received": received[0], "peer_closed": peer_closed[0]}),
          flush=True)


if __name__ == "__main__":
    main()
