"""Exceptions reactio reports, on completions, on ``Reactor.close_error`` and in the log.

Operating-system failures keep their built-in types (``ConnectionRefusedError``,
``TimeoutError``, ``OSError`` with ``errno.EADDRINUSE``, ``socket.gaierror`` ...); the classes
here are for the rules reactio itself enforces.
"""


class ReactioError(Exception):
    """Base class of the errors raised by reactio's own rules."""


class RuntimeClosedError(ReactioError, RuntimeError):
    """The runtime was closed: the command or completion can no longer run."""


class ReactorNotFoundError(ReactioError, LookupError):
    """No live reactor has this ReactorID (it was closed, or the id is stale)."""


class ReactorClosedError(ReactioError, ConnectionError):
    """The connection is closed or closing: nothing more can be sent on it."""


class MessageResultError(ReactioError, ValueError):
    """on_inbound_message returned a MessageResult that breaks the framing rules."""


class MessageTooLargeError(ReactioError):
    """A message needs more than ``max_msg_size`` bytes of receive buffer."""


class SendQueueOverflowError(ReactioError, BufferError):
    """Queued bytes would exceed ``max_send_queue``: the peer does not read fast enough."""


class CommandNotHandledError(ReactioError, NotImplementedError):
    """A user command reached a reactor that does not override ``on_command``."""


class DuplicateReactorNameError(ReactioError, ValueError):
    """ThreadedReactorMgr.add_reactor_uid: the name is already registered (the existing entry
    is kept)."""
