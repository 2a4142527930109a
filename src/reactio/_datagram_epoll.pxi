# Datagram I/O of the epoll backend.  Receive: recvmmsg() takes up to recv_batch datagrams into
# one buffer (one slot of max_datagram_size + 1 bytes each: a datagram that fills its slot was
# truncated; MSG_TRUNC says so too), then they are dispatched one by one.  Send: replies made
# while a batch of several datagrams is dispatched (ctx.corked) are copied into the out batch
# and leave in one sendmmsg() when the dispatch ends; any other send (the reply to a lone
# datagram, a send outside a dispatch) goes out at once with sendto().
# The out batch also holds what a full socket did not take (write interest until it drains);
# when it is full too the datagram is dropped and counted (send_dropped), as the network would.
# recv_batch=1 reads one datagram per recvmsg(), asyncio's way: the bench compares the two.


cdef int _dg_alloc_buffers(DatagramContext ctx) except -1:
    cdef Py_ssize_t n = ctx.nbatch
    ctx.rmsgs = calloc(n, sizeof(mmsghdr))
    ctx.riov = calloc(n, sizeof(iovec))
    ctx.raddrs = <sockaddr_storage *>calloc(n, sizeof(sockaddr_storage))
    ctx.cache_sa = <sockaddr_storage *>calloc(ADDR_CACHE, sizeof(sockaddr_storage))
    ctx.cache_len = <socklen_t *>calloc(ADDR_CACHE, sizeof(socklen_t))
    ctx.ooff = <Py_ssize_t *>calloc(OUT_MAX, sizeof(Py_ssize_t))
    ctx.olens = <Py_ssize_t *>calloc(OUT_MAX, sizeof(Py_ssize_t))
    ctx.osa = <sockaddr_storage *>calloc(OUT_MAX, sizeof(sockaddr_storage))
    ctx.osalen = <socklen_t *>calloc(OUT_MAX, sizeof(socklen_t))
    ctx.omsgs = calloc(OUT_MAX, sizeof(mmsghdr))
    ctx.oiov = calloc(OUT_MAX, sizeof(iovec))
    if (ctx.rmsgs == NULL or ctx.riov == NULL or ctx.raddrs == NULL or ctx.cache_sa == NULL
            or ctx.cache_len == NULL or ctx.ooff == NULL or ctx.olens == NULL
            or ctx.osa == NULL or ctx.osalen == NULL or ctx.omsgs == NULL or ctx.oiov == NULL):
        raise MemoryError()
    return 0


cdef void _dg_free_buffers(DatagramContext ctx) noexcept:
    free(ctx.rmsgs); free(ctx.riov); free(ctx.raddrs); free(ctx.cache_sa); free(ctx.cache_len)
    free(ctx.ooff); free(ctx.olens); free(ctx.osa); free(ctx.osalen); free(ctx.omsgs)
    free(ctx.oiov); free(ctx.obuf)
    ctx.rmsgs = ctx.riov = ctx.omsgs = ctx.oiov = NULL
    ctx.raddrs = ctx.cache_sa = ctx.osa = NULL
    ctx.cache_len = ctx.osalen = NULL
    ctx.ooff = ctx.olens = NULL
    ctx.obuf = NULL
    ctx.nout = ctx.ohead = 0
    ctx.olen = 0


cdef int _dg_set_want(DatagramContext ctx, int want) except -1:
    if want != ctx.want and ctx.fd >= 0:
        _epoll_ctl(ctx.rt, EPOLL_CTL_MOD, ctx.fd, _epoll_bits(want), _poll_key(ctx.reactor_id))
        ctx.want = want
    return 0


# ------------------------------------------------------------------------- sending

cdef int _dg_send(DatagramContext ctx, const char *data, Py_ssize_t n, const sockaddr *sa,
                  socklen_t salen) except -1:
    cdef ssize_t r
    cdef int err
    if ctx.corked or ctx.nout > ctx.ohead:
        return _dg_queue(ctx, data, n, sa, salen)
    while True:
        r = rio_sendto(ctx.fd, data, n, sa, salen)
        ctx.send_calls += 1
        if r >= 0:
            ctx.datagrams_sent += 1
            return 1
        err = rio_errno()
        if err == EINTR:
            continue
        if rio_would_block(err) or err == ENOBUFS:
            _dg_queue(ctx, data, n, sa, salen)
            _dg_set_want(ctx, WANT_READ | WANT_WRITE)
            return 1
        raise _net.os_error(err, "sendto")


cdef int _dg_queue(DatagramContext ctx, const char *data, Py_ssize_t n, const sockaddr *sa,
                   socklen_t salen) except -1:
    """Copy a datagram into the out batch (flushing it first when full); 0 = dropped."""
    cdef int k
    if ctx.nout == OUT_MAX or ctx.olen + n > OUT_BYTES:
        _dg_flush(ctx)
        if ctx.nout == OUT_MAX or ctx.olen + n > OUT_BYTES:
            ctx.send_dropped += 1
            return 0
    if ctx.obuf == NULL:
        ctx.obuf = <char *>malloc(OUT_BYTES)
        if ctx.obuf == NULL:
            raise MemoryError()
    k = ctx.nout
    memcpy(ctx.obuf + ctx.olen, data, n)
    ctx.ooff[k] = ctx.olen
    ctx.olens[k] = n
    if salen:
        memcpy(&ctx.osa[k], sa, salen)
    ctx.osalen[k] = salen
    ctx.olen += n
    ctx.nout += 1
    return 1


cdef int _dg_flush_once(DatagramContext ctx) except -1:
    """One sendmmsg of the queued datagrams.  Returns how many left; raises the OSError of a
    datagram the kernel refused (that one is dropped)."""
    cdef mmsghdr *m = <mmsghdr *>ctx.omsgs
    cdef iovec *iov = <iovec *>ctx.oiov
    cdef int i, k = 0, r, err
    for i in range(ctx.ohead, ctx.nout):
        rio_dgram_out(&m[k], &iov[k], &ctx.osa[i], ctx.osalen[i], ctx.obuf + ctx.ooff[i],
                      ctx.olens[i])
        k += 1
    if k == 0:
        return 0
    r = rio_sendmmsg(ctx.fd, m, k)
    ctx.send_calls += 1
    if r > 0:
        ctx.datagrams_sent += r
        ctx.ohead += r
    elif r < 0:
        err = rio_errno()
        if err == EINTR or rio_would_block(err) or err == ENOBUFS:
            return 0
        ctx.ohead += 1          # the kernel refused the first one: drop it, tell the reactor
        ctx.send_dropped += 1
        if ctx.ohead == ctx.nout:
            ctx.nout = ctx.ohead = 0
            ctx.olen = 0
        raise _net.os_error(err, "sendmmsg")
    if ctx.ohead == ctx.nout:
        ctx.nout = ctx.ohead = 0
        ctx.olen = 0
    return r


cdef int _dg_flush(DatagramContext ctx) except -1:
    """Send the out batch; what the socket does not take now waits for write readiness (the
    endpoint is held by the caller)."""
    cdef int guard = 0
    while ctx.nout > ctx.ohead and ctx.state == ST_OPEN and guard < OUT_MAX:
        guard += 1
        try:
            if _dg_flush_once(ctx) == 0 and ctx.nout > ctx.ohead:
                break           # the socket is full
        except OSError as exc:
            _dg_report(ctx, exc)
    if ctx.state == ST_OPEN:
        _dg_set_want(ctx, WANT_READ | WANT_WRITE if ctx.nout > ctx.ohead else WANT_READ)
    return 0


# ------------------------------------------------------------------------- receiving

cdef int _dg_event(ReactRuntime rt, DatagramContext ctx, uint32_t ev) except -1:
    """One epoll event of an endpoint (called by _epoll_poll)."""
    _dg_hold(ctx)
    try:
        if ev & EPOLLOUT and ctx.state == ST_OPEN:
            _dg_flush(ctx)
        if ev & (EPOLLIN | EPOLLERR) and ctx.state == ST_OPEN:
            _dg_readable(rt, ctx)
    except (KeyboardInterrupt, SystemExit):
        _dg_release(rt, ctx)
        raise
    except BaseException as exc:
        _dg_failed(rt, ctx, exc)
    _dg_release(rt, ctx)
    return 0


cdef int _dg_readable(ReactRuntime rt, DatagramContext ctx) except -1:
    """Receive and dispatch batches until the socket is drained or the endpoint had its turn
    (READ_BUDGET bytes or READ_SLICE_NS, as streams)."""
    cdef Py_ssize_t total = 0
    cdef int64_t deadline = 0
    cdef int n, err
    while ctx.state == ST_OPEN:
        n = _dg_recv(ctx)
        if n < 0:
            err = rio_errno()
            if err == EINTR:
                continue
            if not rio_would_block(err):
                _dg_report(ctx, _net.os_error(err, "recvmmsg"))
            return 0
        if n == 0:
            return 0
        ctx.corked = n > 1      # a lone datagram's reply goes out at once, from send_to
        try:
            total += _dg_dispatch(ctx, n)
        finally:
            ctx.corked = False
        if ctx.nout > ctx.ohead and ctx.state == ST_OPEN:
            _dg_flush(ctx)
        if n < ctx.nbatch or _turn_over(total, &deadline):
            return 0
    return 0


cdef int _dg_recv(DatagramContext ctx) except -2:
    """Fill the receive batch: the number of datagrams, or -1 with errno set."""
    cdef mmsghdr *m = <mmsghdr *>ctx.rmsgs
    cdef char *buf = ctx.reader.store.data
    cdef socklen_t salen
    cdef int flags = 0
    cdef ssize_t r
    cdef int n
    if ctx.nbatch == 1:
        r = rio_recvfrom(ctx.fd, buf, ctx.slot, ctx.raddrs, &salen, &flags)
        ctx.recv_calls += 1
        if r < 0:
            return -1
        rio_dgram_prepare(m, <iovec *>ctx.riov, ctx.raddrs, buf, ctx.slot, 1)
        m[0].msg_len = <unsigned>r
        m[0].msg_hdr.msg_flags = flags
        m[0].msg_hdr.msg_namelen = salen
        return 1
    rio_dgram_prepare(m, <iovec *>ctx.riov, ctx.raddrs, buf, ctx.slot, ctx.nbatch)
    n = rio_recvmmsg(ctx.fd, m, <unsigned>ctx.nbatch)    # (MSG_DONTWAIT: never blocks)
    ctx.recv_calls += 1
    return n


cdef Py_ssize_t _dg_dispatch(DatagramContext ctx, int n) except -1:
    """Hand n received datagrams to the reactor, one by one; returns their bytes."""
    cdef mmsghdr *m = <mmsghdr *>ctx.rmsgs
    cdef char *buf = ctx.reader.store.data
    cdef DatagramReactor reactor = ctx.reactor
    cdef Py_ssize_t size, total = 0
    cdef int i
    for i in range(n):
        if ctx.state != ST_OPEN:
            break               # closed by an earlier datagram: the rest are dropped
        size = m[i].msg_len
        total += size
        ctx.datagrams_received += 1
        if size >= ctx.slot or m[i].msg_hdr.msg_flags & MSG_TRUNC:
            ctx.truncated += 1
            _dg_report(ctx, MessageTooLargeError(
                f"a datagram from {_dg_addr(ctx, <sockaddr *>&ctx.raddrs[i], m[i].msg_hdr.msg_namelen)}"
                f" was larger than max_datagram_size={ctx.slot - 1}: dropped"))
            continue
        reactor.on_datagram_raw(buf + i * ctx.slot, size, <sockaddr *>&ctx.raddrs[i],
                                m[i].msg_hdr.msg_namelen, ctx)
    return total
