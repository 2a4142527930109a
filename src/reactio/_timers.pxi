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
        _cancel(self.rt, self.cmd)
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
    h.cmd = _new_command(CMD_TIMER, h, None, None, None)
    rt.n_timers += 1
    _schedule(rt, h.cmd, when)
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
        result = cmd.arg()
    except (KeyboardInterrupt, SystemExit) as exc:
        _complete_cmd(cmd, exc)
        raise
    except BaseException as exc:
        if cmd.completion is None:
            log.error("send_call: %r raised %s and no on_completion receives it", cmd.arg,
                      type(exc).__name__, exc_info=exc)
            return 0
        result = exc
    return _complete_cmd(cmd, result)


# ---------------------------------------------------------------------------- the heap
# (due_ns, seq, _Command): deferred commands, runtime timers and the runtime's own timeouts.
# A cancelled entry stays until it is popped or the heap is rebuilt (more than half cancelled).

cdef int _schedule(ReactRuntime rt, _Command cmd, int64_t due_ns) except -1:
    cmd.due_ns = due_ns
    rt.timer_seq += 1
    heapq.heappush(rt.timers, (due_ns, rt.timer_seq, cmd))
    return 0


cdef int _cancel(ReactRuntime rt, _Command cmd) except -1:
    if not cmd.cancelled:
        cmd.cancelled = True
        cmd.target = cmd.arg = cmd.completion = None  # the heap entry stays a while
        rt.n_cancelled_timers += 1
        if rt.n_cancelled_timers > 64 and rt.n_cancelled_timers * 2 > len(rt.timers):
            rt.timers = [t for t in rt.timers if not (<_Command>t[2]).cancelled]
            heapq.heapify(rt.timers)
            rt.n_cancelled_timers = 0
    return 0


cdef int _run_timers(ReactRuntime rt) except -1:
    cdef int64_t now = rio_monotonic_ns()
    cdef _Command cmd
    cdef list timers = rt.timers
    while timers and <int64_t>timers[0][0] <= now:
        cmd = <_Command>heapq.heappop(timers)[2]
        if cmd.cancelled:
            rt.n_cancelled_timers -= 1
            continue
        if cmd.kind < CMD_RESOLVED:
            rt.n_user_deferred -= 1
        _execute(rt, cmd)
        timers = rt.timers        # a cancel inside a command may have rebuilt it
    return 0
