"""Echo server for the fairness test (issue 10, defect 3), in its own process so that the
flood and the measured client never share its interpreter lock:

    python fair_echo_server.py

One ReactRuntime, one listener on 127.0.0.1:0 serving reactio frames with the examples'
EchoReactor.  Prints {"port": P}, runs until stdin is closed, then prints
{"closed_with_error": [...]} (streams that closed with an error, for the record) and exits 0.
"""
import json
import sys
import threading

from reactio import DefaultTcpListenerHandler, ReactRuntime
from reactio.examples.pingpong import EchoReactor

errors = []


class Echo(EchoReactor):
    def on_close(self, reactor_id, cmd_sender):
        if self.close_error is not None:
            errors.append(repr(self.close_error))


def main():
    rt = ReactRuntime()
    done = []
    rt.cmd_sender.send_listen("127.0.0.1:0", DefaultTcpListenerHandler(lambda c, p: Echo()),
                              None, done.append)
    while not done:
        rt.process_events(0.01)
    print(json.dumps({"port": rt.local_address(done[0])[1]}), flush=True)

    def wait_stdin():
        sys.stdin.read()
        rt.stop()

    threading.Thread(target=wait_stdin, daemon=True).start()
    rt.run_forever(0.1)
    rt.close()
    print(json.dumps({"closed_with_error": errors}), flush=True)


if __name__ == "__main__":
    main()
