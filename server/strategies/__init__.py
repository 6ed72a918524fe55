"""Server-side algorithms: one module each, all built on :class:`DistillationStrategy`."""

from server.strategies.base import DistillationStrategy
from server.strategies.dsfl import DSFL
from server.strategies.fedavg import FedAvgBaseline
from server.strategies.feddf import FedDF
from server.strategies.fedmd import FedMD

STRATEGIES: dict[str, type[DistillationStrategy] | type[FedAvgBaseline]] = {
    "fedmd": FedMD,
    "dsfl": DSFL,
    "feddf": FedDF,
    "fedavg": FedAvgBaseline,
}

__all__ = ["DSFL", "STRATEGIES", "DistillationStrategy", "FedAvgBaseline", "FedDF", "FedMD"]
