"""Server-side algorithms: one module each, all built on :class:`DistillationStrategy`."""

from server.strategies.base import DistillationStrategy
from server.strategies.dsfl import DSFL
from server.strategies.fedmd import FedMD

STRATEGIES: dict[str, type[DistillationStrategy]] = {"fedmd": FedMD, "dsfl": DSFL}

__all__ = ["DSFL", "STRATEGIES", "DistillationStrategy", "FedMD"]
