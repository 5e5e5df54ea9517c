"""``python -m lama_fast.cli``: the ``lama-fast`` command."""

import sys

from . import main

sys.exit(main())
