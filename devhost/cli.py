"""What every devhost command line shares."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    """One line per record on stderr, the logger named: the launchers read readiness from it."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
