"""Checkpoints: what a stopped run needs to continue exactly where it was.

Two kinds, both written atomically (to a temporary file, then renamed), so a crash mid-write
leaves the previous one intact:

* :class:`ServerCheckpoint` -- the server's whole state after a round: the global model (and
  its moving average), the running consensus, what the clients digest next, the combine rule's
  memory, the roster's quarantine, torch's and numpy's random state. ``<run>/checkpoint/
  server.pt``, replaced every round and removed when the run completes.
* :class:`StudentState` -- one client's state after a round it trained in: its student's
  weights, its privacy accountant's history, an attacker's memory. A :class:`StudentStore`
  keeps them on the node's own disk under ``<root>/<run token>/client-<id>/round-<r>.pt``.

A client keeps its newest states: a server resumed from round ``r`` re-runs round ``r + 1``,
and the client then needs the state it had *before* that round, which is the newest state from
an earlier round (:meth:`StudentStore.load`). The run token (a random id the server draws when
the run starts, kept across resumes) keeps one run's states apart from another's.
"""

import io
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

CHECKPOINT_DIR: Final = "checkpoint"  # inside the run folder
SERVER_FILE: Final = "server.pt"
SIMULATION_STUDENTS: Final = "students"  # simulated clients' states, under CHECKPOINT_DIR
KEEP_STATES: Final = 3  # a crash between a round and its checkpoint re-runs two rounds


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file and a rename (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def new_run_token() -> str:
    """A random id for a fresh run (its checkpoints and students are filed under it)."""
    return secrets.token_hex(6)


# --------------------------------------------------------------------------- the server side


@dataclass
class ServerCheckpoint:
    """The server's state after round ``round`` (see the module docstring).

    ``strategy`` is what the strategy returns from ``state_dict()``: tensors, arrays and plain
    values, plus the combine rule object (a history-based rule carries its memory)."""

    round: int
    run_token: str
    wall_seconds: float  # the run's wall time up to this round
    resumed_after: list[int]  # earlier resumes
    strategy: dict[str, Any]
    torch_rng: torch.Tensor = field(default_factory=torch.get_rng_state)
    numpy_rng: dict[str, Any] = field(default_factory=lambda: np.random.get_state(legacy=False))

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / CHECKPOINT_DIR / SERVER_FILE
        atomic_save(vars(self), path)
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> "ServerCheckpoint":
        path = Path(run_dir) / CHECKPOINT_DIR / SERVER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        # fedkd's own file, and it holds the combine rule object: not weights_only
        return cls(**torch.load(path, weights_only=False))

    def restore_rng(self) -> None:
        torch.set_rng_state(self.torch_rng)
        np.random.set_state(self.numpy_rng)


STOP_MARKER: Final = ".stopping"  # written by the launcher before it stops a run's processes


class RunStopped(RuntimeError):
    """The launcher is stopping the run: the ServerApp ends without recording the round in
    flight (the launcher writes the interrupted summary)."""


def stop_requested(run_dir: str | Path) -> bool:
    """Whether the launcher is stopping this run: the round in flight (whose clients may be
    killed before it ends) must not be recorded, so a resume repeats it whole."""
    return (Path(run_dir) / STOP_MARKER).exists()


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_DIR / SERVER_FILE).is_file()


def remove_checkpoint(run_dir: str | Path) -> None:
    """Drop ``<run>/checkpoint`` (a completed run keeps metrics, not states)."""
    shutil.rmtree(Path(run_dir) / CHECKPOINT_DIR, ignore_errors=True)


# --------------------------------------------------------------------------- the client side


@dataclass
class StudentState:
    """One client's state after round ``round`` (0: never trained)."""

    round: int
    weights: dict[str, torch.Tensor]
    dp_history: list[tuple[float, float, int]] = field(default_factory=list)  # accountant's
    memory: dict[str, np.ndarray] = field(default_factory=dict)  # an attacker's (replay)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(
            {
                "round": self.round,
                "weights": self.weights,
                "dp_history": [list(h) for h in self.dp_history],
                "memory": {k: torch.from_numpy(np.asarray(v)) for k, v in self.memory.items()},
            },
            buffer,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "StudentState":
        data = torch.load(io.BytesIO(blob), weights_only=True)
        return cls(
            round=int(data["round"]),
            weights=data["weights"],
            dp_history=[(float(s), float(q), int(n)) for s, q, n in data["dp_history"]],
            memory={k: v.numpy() for k, v in data["memory"].items()},
        )


class StudentStore:
    """Clients' states on disk: ``<root>/<run token>/client-<id>/round-<r>.pt``."""

    def __init__(self, root: str | Path, run_token: str) -> None:
        if not run_token.isalnum():
            raise ValueError(f"bad run token {run_token!r}")
        self.dir = Path(root) / run_token

    def _client_dir(self, client_id: int) -> Path:
        return self.dir / f"client-{client_id}"

    def _rounds(self, client_id: int) -> list[int]:
        folder = self._client_dir(client_id)
        if not folder.is_dir():
            return []
        names = (p.stem.removeprefix("round-") for p in folder.glob("round-*.pt"))
        return sorted(int(n) for n in names if n.isdigit())

    def load(self, client_id: int, before_round: int) -> StudentState | None:
        """The newest state from a round before ``before_round``, or None (a fresh student)."""
        earlier = [r for r in self._rounds(client_id) if r < before_round]
        if not earlier:
            return None
        path = self._client_dir(client_id) / f"round-{earlier[-1]}.pt"
        return StudentState.from_bytes(path.read_bytes())

    def save(self, client_id: int, state: StudentState) -> None:
        """Write ``state`` (atomically) and drop all but the newest :data:`KEEP_STATES`."""
        folder = self._client_dir(client_id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".round-{state.round}.tmp"
        tmp.write_bytes(state.to_bytes())
        os.replace(tmp, folder / f"round-{state.round}.pt")
        for old in self._rounds(client_id)[:-KEEP_STATES]:
            (folder / f"round-{old}.pt").unlink(missing_ok=True)
