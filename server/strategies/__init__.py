"""Server-side algorithms: one module each, all built on :class:`DistillationStrategy` (FedAvg on
Flower's own strategy). The config names them by import path (``fedkd.algorithms``)."""

from server.strategies.base import DistillationStrategy
from server.strategies.dsfl import DSFL
from server.strategies.fedavg import FedAvgBaseline
from server.strategies.feddf import FedDF
from server.strategies.fedmd import FedMD

__all__ = ["DSFL", "DistillationStrategy", "FedAvgBaseline", "FedDF", "FedMD"]
