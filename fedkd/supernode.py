"""``fedkd-supernode``: Flower's ``flower-supernode`` with its idle polling interval settable.

A Flower 1.41 SuperNode asks the SuperLink for a message; when there is none it sleeps a
hard-coded 3 s before asking again, and it waits for its ClientApp's reply in steps of 0.5 s
(``flwr.supernode.start_client_internal``; no option or variable sets either), so a run's
first message waits up to 3 s at every node (measured on the deployment benchmark: the first
round 11.0 s with Flower's SuperNode, 8.3 s with this one; later rounds were not shorter, the
nodes asking again in time there). This command is Flower's own entry point, every option
passed through, with those waits capped at ``--poll-interval`` seconds (default
:data:`POLL_INTERVAL`); a node then asks the SuperLink a few times a second while idle (one
small request each)::

    fedkd-supernode --poll-interval 0.5 --superlink HOST:PORT --isolation process ...

``--poll-interval 3`` is Flower's own behaviour.
"""

import argparse
import sys
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

POLL_INTERVAL = 0.5  # seconds (Flower's: 3 when idle, 0.5 while its ClientApp works)
LOOP_MODULE = "flwr.supernode.start_client_internal"


class CappedSleep:
    """The ``time`` module as the SuperNode's loop sees it: ``sleep`` waits at most ``cap``."""

    def __init__(self, cap: float) -> None:
        if cap <= 0:
            raise ValueError(f"the poll interval must be positive, got {cap}")
        self.cap = cap

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def cap_polling(loop: ModuleType, interval: float) -> None:
    """Cap the sleeps of Flower's SuperNode loop (``loop``: :data:`LOOP_MODULE`) at
    ``interval`` seconds; raises if the module is not the one this was written against."""
    if getattr(loop, "time", None) is not time or not callable(
        getattr(loop, "start_client_internal", None)
    ):
        raise RuntimeError(
            f"{loop.__name__} no longer sleeps through its module-level `time`: this Flower "
            "version's polling cannot be set; run flower-supernode instead"
        )
    loop.time = CappedSleep(interval)  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fedkd-supernode",
        description="flower-supernode with its idle polling interval settable; every other "
        "option is flower-supernode's",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=POLL_INTERVAL,
        help="longest wait between asks for a message, seconds (Flower's: 3); default %(default)s",
    )
    args, flower_args = parser.parse_known_args(argv)
    if args.poll_interval <= 0:
        parser.error(f"--poll-interval must be positive, got {args.poll_interval}")
    import importlib

    from flwr.supernode.cli import flower_supernode

    cap_polling(importlib.import_module(LOOP_MODULE), args.poll_interval)
    sys.argv = ["flower-supernode", *flower_args]
    flower_supernode()


if __name__ == "__main__":
    main()
