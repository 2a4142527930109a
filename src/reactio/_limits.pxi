# Validation of every numeric option at the API boundary: a bad value raises ValueError (or
# TypeError for a wrong type) in the call that passed it, before anything is registered, and no
# accepted value can overflow the arithmetic it later takes part in (buffer sizes add the
# receive reserve to max_msg_size; durations become int64 nanoseconds on the monotonic clock).

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

# The receive reserve is what one read may fill; more than 1 GiB per read buys nothing and
# would make every connection's first read allocate it.
cdef Py_ssize_t MAX_RECV_RESERVE = 1 << 30
# A delay of 2**62 ns is 146 years: longer ones are "never" where that is allowed.
cdef int64_t NEVER_NS = 1LL << 62


cdef Py_ssize_t _size_option(object value, str name, Py_ssize_t lowest, Py_ssize_t highest) except -1:
    """An integer option in lowest..highest."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lowest <= value <= highest:
        raise ValueError(f"{name} must be in {lowest}..{highest}, not {value}")
    return value


cdef class _StreamOptions:
    """The per-stream options of a connect or a listener, validated once."""

    def __repr__(self):
        return (f"_StreamOptions(recv_min={self.recv_min}, max_send_queue={self.max_send_queue},"
                f" max_msg_size={self.max_msg_size}, nodelay={self.nodelay})")


cdef _StreamOptions _stream_options(object recv_min, object max_send_queue,
                                    object max_msg_size, object nodelay):
    """Per-stream options of a connect or a listener; None (kept as -1 until the runtime
    runs the command: _resolve_defaults) takes the runtime's default.  Every accepted value
    keeps max_msg_size + recv_min (the largest buffer a stream may need) in a Py_ssize_t: a
    runtime's own max_msg_size leaves room for the largest recv_min."""
    cdef _StreamOptions o = _StreamOptions.__new__(_StreamOptions)
    o.recv_min = _size_option(recv_min, "recv_buffer_min_size", 1, MAX_RECV_RESERVE)
    o.max_send_queue = (-1 if max_send_queue is None else
                        _size_option(max_send_queue, "max_send_queue", 1, PY_SSIZE_T_MAX))
    o.max_msg_size = (-1 if max_msg_size is None else
                      _size_option(max_msg_size, "max_msg_size", 1, PY_SSIZE_T_MAX - o.recv_min))
    o.nodelay = bool(nodelay)
    return o


cdef int _resolve_defaults(ReactRuntime rt, _StreamOptions o) except -1:
    if o.max_send_queue < 0:
        o.max_send_queue = rt.max_send_queue
    if o.max_msg_size < 0:
        o.max_msg_size = rt.max_msg_size
    return 0


cdef int _check_runtime_limits(object max_send_queue, object max_msg_size, object high_water,
                               object low_water) except -1:
    _size_option(max_send_queue, "max_send_queue", 1, PY_SSIZE_T_MAX)
    # room for the largest receive reserve on top of the largest message
    _size_option(max_msg_size, "max_msg_size", 1, PY_SSIZE_T_MAX - MAX_RECV_RESERVE)
    _size_option(high_water, "high_water", 0, PY_SSIZE_T_MAX)
    _size_option(low_water, "low_water", 0, PY_SSIZE_T_MAX)
    if low_water > high_water:
        raise ValueError(f"watermarks need low_water ({low_water}) <= high_water ({high_water})")
    return 0


cdef double _seconds(object value, str name) except? -1:
    """A number of seconds: a real number >= 0 (inf allowed, NaN refused)."""
    cdef double s
    if isinstance(value, (bool, str, bytes, bytearray)):     # float() would parse a str
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}") from None
    if s != s:
        raise ValueError(f"{name} must be a number of seconds, not NaN")
    if s < 0:
        raise ValueError(f"{name} must not be negative, not {value!r}")
    return s


cdef int64_t _limit_ns(object value, str name) except? -1:
    """A time limit: 0 or inf (or anything over NEVER_NS) means none and gives 0."""
    cdef double s = _seconds(value, name)
    if s * 1e9 >= <double>NEVER_NS:
        return 0
    return <int64_t>(s * 1e9)


cdef int64_t _delay_ns(object value, str name) except? -1:
    """A finite delay >= 0 in nanoseconds."""
    cdef double s = _seconds(value, name)
    if s * 1e9 >= <double>NEVER_NS:
        raise ValueError(f"{name}: {value!r} s is not a usable delay (at most {NEVER_NS // 10**9} s)")
    return <int64_t>(s * 1e9)


cdef int64_t _due_ns(object value) except? -1:
    """A due time on the monotonic clock: an int in 0..2**63-1 (0 = immediately)."""
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"a due time is an int of monotonic nanoseconds, not "
                        f"{type(value).__name__}") from None
    if not 0 <= v <= INT64_MAX:
        raise ValueError(f"a due time must be in 0..2**63-1 monotonic nanoseconds, not {v}")
    return v
