"""``python -m caffessl ...`` runs the ``caffessl`` command (torchrun and many users start programs this way)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
