# Thin mirror of reactio_udp.h: recvmmsg / sendmmsg batches for datagram endpoints (Linux;
# ENOSYS stubs on Windows, where send_bind_udp refuses before any of these is called).
from reactio._epoll cimport sockaddr, sockaddr_storage, socklen_t, ssize_t, rio_sock_t

cdef extern from "reactio_udp.h" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len
    struct msghdr:
        socklen_t msg_namelen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    enum:
        MSG_TRUNC
        EMSGSIZE
        ECONNREFUSED
    # 0..n datagrams received (msg_len, msg_hdr.msg_flags, the address per record), -1 + errno
    int rio_recvmmsg(rio_sock_t s, mmsghdr *m, unsigned n)
    int rio_sendmmsg(rio_sock_t s, mmsghdr *m, unsigned n)
    ssize_t rio_recvfrom(rio_sock_t s, char *buf, size_t n, sockaddr_storage *sa,
                         socklen_t *salen, int *flags)
    ssize_t rio_sendto(rio_sock_t s, const char *buf, size_t n, const sockaddr *sa,
                       socklen_t salen)
    void rio_dgram_prepare(mmsghdr *m, iovec *iov, sockaddr_storage *sa, char *buf,
                           size_t slot, unsigned n)
    void rio_dgram_out(mmsghdr *m, iovec *iov, sockaddr_storage *sa, socklen_t salen,
                       char *data, size_t len)
    unsigned rio_sa_hash(const void *sa, socklen_t len)
