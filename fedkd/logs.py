"""Logging for fedkd's own loggers (``fedkd.*``), leaving Flower's and libraries' alone."""

import logging

FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Send ``fedkd.*`` records to stderr once, without touching the root logger (which would
    also turn on every library's INFO chatter)."""
    logger = logging.getLogger("fedkd")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    logger.propagate = False
