"""One logging format for every service."""

from __future__ import annotations

import logging
import os


def configure_logging(service: str) -> logging.Logger:
    level = os.environ.get("NIGHTSHIFT_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )
    return logging.getLogger(f"nightshift.{service}")
