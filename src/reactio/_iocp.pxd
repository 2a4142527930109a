# Thin mirror of the Win32 / Winsock 2 / mswsock calls used by reactio's IOCP backend.
#
# Only what an IOCP reactor needs is declared here; every name is the real Windows name, so
# the MSDN page for it is the documentation. Fields of structs are the subset we touch.
#
# What reactio_sys.h has to provide on _WIN32 (Python.h comes first in the generated C):
#   #include <winsock2.h>, <ws2tcpip.h>, <mswsock.h>, <windows.h>, in this order (winsock2.h
#   must precede windows.h, or windows.h drags in the old winsock.h), with
#   _WIN32_WINNT >= 0x0600 (Vista) for GetQueuedCompletionStatusEx, CancelIoEx,
#   SetFileCompletionNotificationModes, FILE_SKIP_*, inet_pton. Python's PC/pyconfig.h
#   already sets 0x0602. Nothing else: the WSAID_* GUIDs below need no helper objects.
# On other platforms it must make the names the core actually uses compile (stubs), because one
# generated _core.c serves every platform; names declared here but never used cost nothing.
#
# Contracts (each repeated at the declaration it concerns):
#  * An OVERLAPPED is the kernel's from the call that starts an operation until its completion
#    packet is dequeued: never free, move or reuse it before that, even after CancelIoEx or
#    closesocket (those only make the packet arrive sooner, with ERROR_OPERATION_ABORTED).
#    It must be zeroed before each operation.
#  * A started operation either fails at once (SOCKET_ERROR / FALSE and an error other than
#    WSA_IO_PENDING / ERROR_IO_PENDING: no packet will come) or a packet comes, except that with
#    FILE_SKIP_COMPLETION_PORT_ON_SUCCESS an immediate success queues no packet either.
#  * Buffers (WSABUF.buf, AcceptEx's output buffer) belong to the kernel as long as their
#    OVERLAPPED does.

cdef extern from "reactio_sys.h" nogil:
    # ---- basic types (LLP64: DWORD/ULONG are 32-bit; HANDLE, SOCKET, *_PTR are 64-bit)
    ctypedef int BOOL
    ctypedef unsigned char UCHAR
    ctypedef unsigned short WORD
    ctypedef unsigned long DWORD
    ctypedef unsigned long ULONG
    ctypedef size_t ULONG_PTR
    ctypedef void* HANDLE
    ctypedef size_t SOCKET                     # UINT_PTR: test == INVALID_SOCKET, never < 0
    const HANDLE INVALID_HANDLE_VALUE
    const SOCKET INVALID_SOCKET
    const DWORD INFINITE                       # timeout for GetQueuedCompletionStatus(Ex)
    enum:
        TRUE
        FALSE

    # ---- errors. GetLastError() after Win32 calls and GQCS; WSAGetLastError() after Winsock
    # calls. The status of a dequeued failed operation: WSAGetOverlappedResult() -> WSA code.
    DWORD GetLastError()
    int WSAGetLastError()
    enum:
        SOCKET_ERROR                           # -1, the failure return of Winsock calls
        ERROR_IO_PENDING                       # 997: started, a packet will come
        WSA_IO_PENDING                         # == ERROR_IO_PENDING, spelled for WSA* calls
        ERROR_OPERATION_ABORTED                # 995: cancelled (CancelIoEx, closesocket)
        WSA_OPERATION_ABORTED                  # == ERROR_OPERATION_ABORTED
        WAIT_TIMEOUT                           # 258: GQCS(Ex) timed out, nothing dequeued
        ERROR_ABANDONED_WAIT_0                 # 735: the port was closed while waiting
        ERROR_NETNAME_DELETED                  # 64: GQCS's view of a reset connection
        ERROR_CONNECTION_REFUSED               # 1225: GQCS's view of a refused ConnectEx
        ERROR_CONNECTION_ABORTED               # 1236
        WSAECONNREFUSED                        # 10061
        WSAECONNRESET                          # 10054
        WSAECONNABORTED                        # 10053
        WSAENETRESET
        WSAETIMEDOUT
        WSAENOTCONN
        WSAESHUTDOWN
        WSAENOTSOCK
        WSAEINVAL
        WSAEADDRINUSE
        WSAEADDRNOTAVAIL
        WSAENOBUFS
        WSAEWOULDBLOCK

    # ---- OVERLAPPED: one per outstanding operation, embedded in the reactor's op record so
    # that the record is found again from the dequeued pointer. Lifetime: see the top.
    # Internal holds the NTSTATUS of a completed operation, InternalHigh its byte count.
    ctypedef struct OVERLAPPED:
        ULONG_PTR Internal
        ULONG_PTR InternalHigh
        HANDLE hEvent                          # unused by us; keep NULL
    ctypedef OVERLAPPED* LPOVERLAPPED

    # One dequeued packet. lpOverlapped is NULL for our own PostQueuedCompletionStatus wake-ups.
    ctypedef struct OVERLAPPED_ENTRY:
        ULONG_PTR lpCompletionKey
        LPOVERLAPPED lpOverlapped
        ULONG_PTR Internal                     # NTSTATUS; use WSAGetOverlappedResult instead
        DWORD dwNumberOfBytesTransferred

    # ---- the completion port (ioapiset.h)
    # CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1) makes a port; (<HANDLE>sock,
    # port, key, 0) associates a socket, for its whole life (no way to detach).
    HANDLE CreateIoCompletionPort(HANDLE FileHandle, HANDLE ExistingCompletionPort,
                                  ULONG_PTR CompletionKey, DWORD NumberOfConcurrentThreads)
    # Returns FALSE with GetLastError() == WAIT_TIMEOUT when nothing came. TRUE says nothing
    # about the operations: each entry carries its own status.
    BOOL GetQueuedCompletionStatusEx(HANDLE CompletionPort, OVERLAPPED_ENTRY* lpCompletionPortEntries,
                                     ULONG ulCount, ULONG* ulNumEntriesRemoved,
                                     DWORD dwMilliseconds, BOOL fAlertable)
    # One packet. FALSE with *lpOverlapped != NULL: a failed operation was dequeued
    # (GetLastError() is its error); FALSE with NULL: nothing dequeued (timeout, closed port).
    BOOL GetQueuedCompletionStatus(HANDLE CompletionPort, DWORD* lpNumberOfBytesTransferred,
                                   ULONG_PTR* lpCompletionKey, LPOVERLAPPED* lpOverlapped,
                                   DWORD dwMilliseconds)
    # Queues a packet of our own (command wake-ups): lpOverlapped may be NULL; the three values
    # come back unchanged in the OVERLAPPED_ENTRY.
    BOOL PostQueuedCompletionStatus(HANDLE CompletionPort, DWORD dwNumberOfBytesTransferred,
                                    ULONG_PTR dwCompletionKey, LPOVERLAPPED lpOverlapped)
    # Requests cancellation (NULL: every operation of the handle). Asynchronous: the packet
    # still comes (ERROR_OPERATION_ABORTED, or success if it won the race); free nothing yet.
    # FALSE with ERROR_NOT_FOUND means nothing was pending.
    BOOL CancelIoEx(HANDLE hFile, LPOVERLAPPED lpOverlapped)
    enum:
        ERROR_NOT_FOUND                        # 1168
    BOOL CloseHandle(HANDLE hObject)           # for the port itself; sockets use closesocket
    # With FILE_SKIP_COMPLETION_PORT_ON_SUCCESS an operation that completes at once queues no
    # packet: the caller handles the result inline and may reuse the OVERLAPPED immediately.
    BOOL SetFileCompletionNotificationModes(HANDLE FileHandle, UCHAR Flags)
    enum:
        FILE_SKIP_COMPLETION_PORT_ON_SUCCESS
        FILE_SKIP_SET_EVENT_ON_HANDLE

    # ---- Winsock start-up
    ctypedef struct WSADATA:
        WORD wVersion
        WORD wHighVersion
    WORD MAKEWORD(int low, int high)
    int WSAStartup(WORD wVersionRequested, WSADATA* lpWSAData)   # MAKEWORD(2, 2); 0 on success
    int WSACleanup()

    # ---- addresses (the subset read and written by the backend)
    enum:
        AF_UNSPEC
        AF_INET
        AF_INET6
        SOCK_STREAM
        IPPROTO_TCP
        SOL_SOCKET
        TCP_NODELAY
        SOMAXCONN
        SD_RECEIVE
        SD_SEND
        SD_BOTH
    struct sockaddr:
        unsigned short sa_family
    struct in_addr:
        unsigned long s_addr                   # a macro for S_un.S_addr; network order
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port                # network order: htons/ntohs
        in_addr sin_addr
    struct in6_addr:
        unsigned char s6_addr[16]
    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        unsigned long sin6_flowinfo
        in6_addr sin6_addr
        unsigned long sin6_scope_id
    struct sockaddr_storage:                   # large enough for any family
        unsigned short ss_family
    unsigned short htons(unsigned short hostshort)
    unsigned short ntohs(unsigned short netshort)
    int inet_pton(int Family, const char* pszAddrString, void* pAddrBuf)  # 1 ok, 0 bad text

    # ---- sockets
    # Sockets used with the port must be created overlapped (Python's socket module does so).
    SOCKET WSASocketW(int af, int type, int protocol, void* lpProtocolInfo, unsigned int g,
                      DWORD dwFlags)
    enum:
        WSA_FLAG_OVERLAPPED
        WSA_FLAG_NO_HANDLE_INHERIT
    # Closing a socket cancels its pending operations; their packets still come (lifetime!).
    int closesocket(SOCKET s)
    int bind(SOCKET s, const sockaddr* name, int namelen)    # ConnectEx needs a bound socket
    int listen(SOCKET s, int backlog)
    int shutdown(SOCKET s, int how)                          # SD_SEND: half-close, peer sees EOF
    int getsockname(SOCKET s, sockaddr* name, int* namelen)
    int getpeername(SOCKET s, sockaddr* name, int* namelen)
    int setsockopt(SOCKET s, int level, int optname, const char* optval, int optlen)

    # ---- overlapped send and receive. The completion routine argument is always NULL here.
    ctypedef struct WSABUF:
        ULONG len
        char* buf
    # Returns 0 (done at once; with FILE_SKIP_COMPLETION_PORT_ON_SUCCESS no packet follows) or
    # SOCKET_ERROR: WSA_IO_PENDING means a packet will come, anything else that none will.
    # A completed receive of 0 bytes is EOF. A zero-byte WSARecv is a readiness probe.
    # *lpFlags is in/out: pass a variable set to 0.
    int WSARecv(SOCKET s, WSABUF* lpBuffers, DWORD dwBufferCount,
                DWORD* lpNumberOfBytesRecvd, DWORD* lpFlags,
                LPOVERLAPPED lpOverlapped, void* lpCompletionRoutine)
    int WSASend(SOCKET s, WSABUF* lpBuffers, DWORD dwBufferCount,
                DWORD* lpNumberOfBytesSent, DWORD dwFlags,
                LPOVERLAPPED lpOverlapped, void* lpCompletionRoutine)
    # The final status of a dequeued operation as a WSA error (FALSE + WSAGetLastError()).
    # fWait must be FALSE: the packet was already dequeued.
    BOOL WSAGetOverlappedResult(SOCKET s, LPOVERLAPPED lpOverlapped, DWORD* lpcbTransfer,
                                BOOL fWait, DWORD* lpdwFlags)

    # ---- AcceptEx / ConnectEx / GetAcceptExSockaddrs: not exported, fetched per provider with
    # WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &WSAID_x, sizeof(GUID), &fn, sizeof(fn),
    # &bytes, NULL, NULL) on a socket of the family that will use them.
    int WSAIoctl(SOCKET s, DWORD dwIoControlCode, void* lpvInBuffer, DWORD cbInBuffer,
                 void* lpvOutBuffer, DWORD cbOutBuffer, DWORD* lpcbBytesReturned,
                 LPOVERLAPPED lpOverlapped, void* lpCompletionRoutine)
    const DWORD SIO_GET_EXTENSION_FUNCTION_POINTER
    ctypedef struct GUID:
        pass
    # The SDK defines these as brace initialisers; the C compound literal makes them lvalues
    # whose address can be passed to WSAIoctl (C99; MSVC's C compiler accepts it too).
    GUID WSAID_ACCEPTEX "((GUID)WSAID_ACCEPTEX)"
    GUID WSAID_CONNECTEX "((GUID)WSAID_CONNECTEX)"
    GUID WSAID_GETACCEPTEXSOCKADDRS "((GUID)WSAID_GETACCEPTEXSOCKADDRS)"

    # sAcceptSocket: a fresh unbound overlapped socket. Each address length must be at least
    # sizeof(the sockaddr) + 16; dwReceiveDataLength 0 completes on connection, not on data.
    # After completion: setsockopt(sAcceptSocket, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT,
    # <char*>&sListenSocket, sizeof(SOCKET)), or getpeername/shutdown fail on it.
    ctypedef BOOL (*LPFN_ACCEPTEX)(SOCKET sListenSocket, SOCKET sAcceptSocket,
                                   void* lpOutputBuffer, DWORD dwReceiveDataLength,
                                   DWORD dwLocalAddressLength, DWORD dwRemoteAddressLength,
                                   DWORD* lpdwBytesReceived, LPOVERLAPPED lpOverlapped) noexcept nogil
    # s must be bound (to the wildcard address, port 0) and associated with the port first.
    # After completion: setsockopt(s, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0).
    # A refused connection completes with ERROR_CONNECTION_REFUSED (WSAECONNREFUSED).
    ctypedef BOOL (*LPFN_CONNECTEX)(SOCKET s, const sockaddr* name, int namelen,
                                    void* lpSendBuffer, DWORD dwSendDataLength,
                                    DWORD* lpdwBytesSent, LPOVERLAPPED lpOverlapped) noexcept nogil
    # Parses AcceptEx's output buffer (same three lengths); the pointers point into it.
    ctypedef void (*LPFN_GETACCEPTEXSOCKADDRS)(void* lpOutputBuffer, DWORD dwReceiveDataLength,
                                               DWORD dwLocalAddressLength,
                                               DWORD dwRemoteAddressLength,
                                               sockaddr** LocalSockaddr, int* LocalSockaddrLength,
                                               sockaddr** RemoteSockaddr,
                                               int* RemoteSockaddrLength) noexcept nogil
    enum:
        SO_UPDATE_ACCEPT_CONTEXT
        SO_UPDATE_CONNECT_CONTEXT


# reactio_sys.h's own IOCP helpers (both platforms compile them; used by _iocp_loop.pxi)
cdef extern from "reactio_sys.h" nogil:
    # One outstanding operation; ov must stay the first member (a dequeued LPOVERLAPPED is the
    # op).  Defined in reactio_sys.h for both platforms.
    ctypedef struct rio_op:
        OVERLAPPED ov
        int kind
        int pending
        void *owner                 # PyObject*, a strong reference while pending
        size_t sock                 # AcceptEx: the accepting socket
        Py_ssize_t requested        # WSARecv: bytes asked for
        int arming, rearm           # WSASend: inside _iocp_arm_send / a nested arm was asked
        char addrs[128]             # AcceptEx output: local + remote address, 16 bytes slack each
    enum:
        RIO_ACCEPT_ADDR_LEN         # sizeof(struct sockaddr_in6) + 16
    # AcceptEx / ConnectEx / GetAcceptExSockaddrs through function pointers fetched once.
    int rio_AcceptEx(SOCKET listener, SOCKET accepted, rio_op *op, DWORD *got)
    int rio_ConnectEx(SOCKET s, const sockaddr *addr, int addrlen, rio_op *op)
    int rio_accepted_peer(SOCKET listener, SOCKET accepted, rio_op *op,
                          sockaddr_storage *peer)
    int rio_set_nonblocking(SOCKET s)
    int rio_bind_any(SOCKET s, int family)
    int rio_sockaddr_from(int family, const char *host, unsigned short port,
                          unsigned long flowinfo, unsigned long scope_id,
                          sockaddr_storage *out)
