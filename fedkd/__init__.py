"""fedkd: federated knowledge distillation on Flower.

Clients with heterogeneous architectures share soft predictions on a public proxy set; the
server aggregates them into a consensus and distils a global model from it.
"""

__version__ = "0.1.0"
