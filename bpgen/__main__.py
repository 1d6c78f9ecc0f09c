"""``python -m bpgen``: the same as the ``bpgen`` command."""
import sys

from .cli import main

sys.exit(main())
