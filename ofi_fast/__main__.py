"""``python -m ofi_fast``: the ``ofi-fast`` command."""

import sys

from ofi_fast.cli import main

sys.exit(main())
