# Runtime timers: rt.call_later / rt.call_at on the runtime's thread, and the thread-safe
# cmd_sender.send_call.  They share the deferred commands' heap and clock (reactio.monotonic_ns),
# so they have the same guarantees: never early, in due order, ties in the order scheduled.
# A pending timer keeps process_events() / run() busy.


@cython.final
cdef class TimerHandle:
    """A callback scheduled with ``rt.call_later()`` or ``rt.call_at()``.  ``when`` is its due
    time in reactio.monotonic_ns() nanoseconds.  Use it on the runtime's thread."""
    cdef ReactRuntime rt
    cdef _Command cmd
    cdef readonly int64_t when
    cdef object callback, args
    cdef bint is_cancelled, done

    def __init__(self):
        raise TypeError("TimerHandle objects are made by ReactRuntime.call_later/call_at")

    def cancel(self):
        """Do not run the callback (if it has not run yet).  Idempotent."""
        if self.is_cancelled or self.done or self.rt is None:
            return
        self.is_cancelled = True
        self.callback = self.args = None
        self.rt.n_timers -= 1
        self.rt._cancel(self.cmd)
        self.cmd = None

    def cancelled(self):
        return self.is_cancelled

    def __repr__(self):
        state = "cancelled" if self.is_cancelled else "done" if self.done else "pending"
        return f"<TimerHandle when={self.when} {state} {self.callback!r}>"


cdef TimerHandle _schedule_call(ReactRuntime rt, int64_t when, object callback, tuple args):
    cdef TimerHandle h
    if not callable(callback):
        raise TypeError(f"the callback must be callable, not {type(callback).__name__}")
    h = TimerHandle.__new__(TimerHandle)
    h.rt = rt
    h.when = when
    h.callback = callback
    h.args = args
    h.cmd = _new_command(CMD_TIMER, h, None, None, None, None)
    rt.n_timers += 1
    rt._schedule(h.cmd, when)
    return h


cdef int _run_timer(ReactRuntime rt, TimerHandle h) except -1:
    """A timer is due: run its callback; an exception is logged, the loop goes on."""
    cb, args = h.callback, h.args
    h.done = True
    h.callback = h.args = None
    h.cmd = None
    rt.n_timers -= 1
    try:
        cb(*args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        log.error("timer callback %r raised %s", cb, type(exc).__name__, exc_info=exc)
    return 0


cdef int _run_call(ReactRuntime rt, _Command cmd) except -1:
    """cmd_sender.send_call(): run the callable; its return value or its exception goes to the
    completion."""
    try:
        result = cmd.a()
    except (KeyboardInterrupt, SystemExit) as exc:
        rt._complete(cmd.completion, exc)
        raise
    except BaseException as exc:
        if cmd.completion is None:
            log.error("send_call: %r raised %s and no on_completion receives it", cmd.a,
                      type(exc).__name__, exc_info=exc)
            return 0
        result = exc
    return rt._complete(cmd.completion, result)
