"""A hostile peer for the fairness test (issue 10, defect 3):

    python flooder.py PORT SECONDS

Connects and writes small valid reactio frames (u16 length, i64 stamp, 20-byte body) as fast
as it can, for at most SECONDS or until stdin is closed; a second thread reads and discards
the echoes so that the server never has a reason to drop the connection.  Prints
{"flooding": true} once the first megabyte is out, then at the end {"sent": bytes,
"received": bytes, "peer_closed": bool}.
"""
import json
import socket
import struct
import sys
import threading
import time


def main():
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    one = struct.pack("<Hq", 20, 0) + b"f" * 20
    burst = one * (65536 // len(one))
    stop = threading.Event()
    received = [0]
    peer_closed = [False]

    def reader():
        s2 = s.dup()
        s2.settimeout(0.2)
        while not stop.is_set():
            try:
                chunk = s2.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                peer_closed[0] = True
                return
            if not chunk:
                peer_closed[0] = True
                return
            received[0] += len(chunk)

    def stdin_closed():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=reader, daemon=True).start()
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
    except OSError:
        peer_closed[0] = True
    stop.set()
    print(json.dumps({"sent": sent, "received": received[0], "peer_closed": peer_closed[0]}),
          flush=True)


if __name__ == "__main__":
    main()
