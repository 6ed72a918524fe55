"""fedkd: federated knowledge distillation on Flower.

Clients with heterogeneous architectures share soft predictions on a public proxy set; the
server aggregates them into a consensus and distils a global model from it.
"""

import logging
from typing import Any

__version__ = "0.1.0"

# Flower's LinkState loads SQLAlchemy's migrations (alembic), which log each plugin at INFO
logging.getLogger("alembic").setLevel(logging.WARNING)
__all__ = ["resume", "run"]


def __getattr__(name: str) -> Any:
    # `fedkd.run` (the Python API) without paying for its imports on `import fedkd.<module>`.
    if name in ("run", "resume"):
        from fedkd import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedkd' has no attribute {name!r}")
