"""`python -m shared.admin ...`: see shared/admin/cli.py."""

import sys

from shared.admin.cli import main

sys.exit(main())
