"""``python -m reactio``: version and build information.

    python -m reactio --version     prints reactio.__version__, e.g. ``0.1.0``
    python -m reactio --info        version, backend, Python, platform, where it is installed
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import List, Optional


def _info() -> str:
    import reactio
    from reactio import _core

    backend = "IOCP" if sys.platform == "win32" else "epoll"
    lines = [
        f"reactio {reactio.__version__}",
        f"backend    {backend} (reactio._core: {os.path.basename(_core.__file__ or '?')})",
        f"python     {platform.python_implementation()} {platform.python_version()}",
        f"platform   {platform.platform()}",
        f"location   {os.path.dirname(os.path.abspath(reactio.__file__))}",
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    import reactio

    parser = argparse.ArgumentParser(
        prog="python -m reactio",
        description="reactio: low-latency Reactor-pattern TCP networking. Examples: "
                    "python -m reactio.examples.pingpong; benchmarks: python -m reactio.bench.")
    parser.add_argument("--version", action="version", version=reactio.__version__)
    parser.add_argument("--info", action="store_true",
                        help="print version, backend, Python and install location")
    args = parser.parse_args(argv)
    if args.info:
        print(_info())
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
