# The datagram batches both backends share: the buffers of an endpoint, the out batch (a
# datagram the socket did not take at once is copied there; when the batch is full even after
# a flush, the datagram is dropped and counted in send_dropped, as the network would), and the
# dispatch of received datagrams (a datagram that filled its slot, or came flagged MSG_TRUNC,
# was truncated: dropped, counted, reported to on_error).  The backend's file fills the
# receive records (epoll: recvmmsg, IOCP: one WSARecvFrom) and sends the out batch.


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


cdef int _dg_queue(DatagramContext ctx, const char *data, Py_ssize_t n, const sockaddr *sa,
                   socklen_t salen) except -1:
    """Copy a datagram into the out batch (flushing it first when full); 0 = dropped."""
    cdef int k
    if ctx.nout == OUT_MAX or ctx.olen + n > OUT_BYTES:
        _be_dg_flush(ctx)
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
