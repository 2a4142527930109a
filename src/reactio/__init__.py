"""reactio: low-latency, event-driven, non-blocking Reactor-pattern TCP networking.

A ``Reactor`` subclass per connection frames and handles one TCP stream; a ``ReactRuntime``
runs the event loop (epoll on Linux, IOCP on Windows) with its hot path in Cython.
"""
from reactio._core import (
    BACKEND,
    AutoSendBuffer,
    CmdSender,
    DatagramContext,
    DatagramReactor,
    Deferred,
    DispatchContext,
    DropMsgSize,
    ExpectMsgSize,
    MessageResult,
    MsgReader,
    MsgSender,
    ReactorID,
    ReactRuntime,
    Reactor,
    SendOrQueResult,
    TimerHandle,
    monotonic_ns,
)
from reactio.errors import (
    CommandNotHandledError,
    MessageResultError,
    MessageTooLargeError,
    ReactioError,
    ReactorClosedError,
    ReactorNotFoundError,
    RuntimeClosedError,
    SendQueueOverflowError,
)
from reactio.listener import DefaultTcpListenerHandler, TcpListenerHandler
from reactio.simpleio import SimpleIoListener, SimpleIoReactor, SimpleIoRuntime, SimpleIoService
from reactio.threaded import DuplicateReactorNameError, ReactorUID, ThreadedReactorMgr
from reactio.utils import Timer, set_log_level

__version__ = "0.1.0"

__all__ = [
    "BACKEND", "AutoSendBuffer", "CmdSender", "DatagramContext", "DatagramReactor", "Deferred", "DispatchContext", "DropMsgSize", "ExpectMsgSize",
    "MessageResult", "MsgReader", "MsgSender", "ReactorID", "ReactRuntime", "Reactor",
    "SendOrQueResult", "TimerHandle", "monotonic_ns",
    "CommandNotHandledError", "MessageResultError", "MessageTooLargeError", "ReactioError",
    "ReactorClosedError", "ReactorNotFoundError", "RuntimeClosedError", "SendQueueOverflowError",
    "DefaultTcpListenerHandler", "TcpListenerHandler", "Timer", "set_log_level", "__version__",
    "SimpleIoListener", "SimpleIoReactor", "SimpleIoRuntime", "SimpleIoService",
    "DuplicateReactorNameError", "ReactorUID", "ThreadedReactorMgr",
]
