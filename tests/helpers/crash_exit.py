"""die_on_crash() for the helper scripts that tests run in a subprocess (also under wine).

A script imports it after putting its own folder on sys.path: the embeddable Windows Python
that the wine suite uses leaves the script's folder off sys.path (its ._pth file)."""
import sys


def die_on_crash():
    """Windows: a crash ends this process with its exception code (0xC0000005 for an access
    violation) instead of starting a debugger that waits for ever (wine does)."""
    if sys.platform != "win32":
        return
    import ctypes
    from ctypes import wintypes
    k32 = ctypes.windll.kernel32
    k32.GetCurrentProcess.restype = wintypes.HANDLE
    k32.TerminateProcess.argtypes = [wintypes.HANDLE, wintypes.UINT]

    @ctypes.WINFUNCTYPE(ctypes.c_long, ctypes.c_void_p)
    def die(pointers):
        code = ctypes.cast(pointers, ctypes.POINTER(ctypes.POINTER(wintypes.DWORD)))[0][0]
        k32.TerminateProcess(k32.GetCurrentProcess(), code)
        return 1

    die_on_crash.keep = die
    k32.SetErrorMode(0x0001 | 0x0002)
    k32.SetUnhandledExceptionFilter(die)
