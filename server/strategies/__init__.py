"""Server-side algorithms: one module each, all built on :class:`DistillationStrategy`."""

from server.strategies.base import DistillationStrategy
from server.strategies.dsfl import DSFL
from server.strategies.feddf import FedDF
from server.strategies.fedmd import FedMD

STRATEGIES: dict[str, type[DistillationStrategy]] = {"fedmd": FedMD, "dsfl": DSFL, "feddf": FedDF}

__all__ = ["DSFL", "STRATEGIES", "DistillationStrategy", "FedDF", "FedMD"]
