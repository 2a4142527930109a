"""Entry point of ``python -m reactio.bench``."""
import sys

from .cli import main

sys.exit(main())
