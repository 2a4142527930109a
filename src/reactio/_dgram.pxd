# Thin mirror of reactio_udp.h: recvmmsg / sendmmsg batches for datagram endpoints (Linux;
# ENOSYS stubs on Windows) and the overlapped WSARecvFrom / WSASendTo of the IOCP backend
# (stubs on Linux).  Each side is called only by its own backend's file.
from reactio._epoll cimport sockaddr, sockaddr_storage, socklen_t, ssize_t, rio_sock_t
from reactio._iocp cimport SOCKET, WSABUF, DWORD, LPOVERLAPPED

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
        EMSGSIZE "RIO_EMSGSIZE"          # as Python's errno.EMSGSIZE (Windows: WSAEMSGSIZE)
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

    # ---- IOCP (Windows names; the MSDN pages are the documentation)
    enum:
        WSAEMSGSIZE                 # a datagram larger than the buffer (the rest is lost)
    # As WSARecv, plus the sender's address: *fromlen (in/out) and *from belong to the kernel
    # until the completion, as the buffer does.  One datagram per completion.
    int WSARecvFrom(SOCKET s, WSABUF *lpBuffers, DWORD dwBufferCount, DWORD *lpNumberOfBytesRecvd,
                    DWORD *lpFlags, sockaddr *lpFrom, int *lpFromlen, LPOVERLAPPED lpOverlapped,
                    void *lpCompletionRoutine)
    # lpTo NULL / iTolen 0: the connected peer.
    int WSASendTo(SOCKET s, WSABUF *lpBuffers, DWORD dwBufferCount, DWORD *lpNumberOfBytesSent,
                  DWORD dwFlags, const sockaddr *lpTo, int iTolen, LPOVERLAPPED lpOverlapped,
                  void *lpCompletionRoutine)
    int rio_udp_connreset(rio_sock_t s, int report)     # SIO_UDP_CONNRESET; 0 or SOCKET_ERROR
