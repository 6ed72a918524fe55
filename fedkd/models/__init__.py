"""The model zoo for heterogeneous clients and the server model (see :mod:`fedkd.models.zoo`)."""

from fedkd.models.zoo import ARCHITECTURES, build_model, count_parameters

__all__ = ["ARCHITECTURES", "build_model", "count_parameters"]
