"""``fedkd-export-partitions OUT_DIR [overrides...]``: write each client's private share to disk.

For trying deployment with real per-node directories: client ``i`` gets
``OUT_DIR/client-<i>/private.npz`` (float32 ``x`` in the sources' raw scale, int64 ``y``),
to be served by a SuperNode started with ``--node-config "data-dir=OUT_DIR/client-<i>"``.
The split follows the same config (dataset, partition, clients.num_clients, seed) as a run.
"""

import argparse
import logging
from pathlib import Path

import numpy as np

from fedkd.config import compose
from fedkd.data.node import NODE_NPZ
from fedkd.experiment import client_private_data, load_data

log = logging.getLogger("fedkd.export")


def export_partitions(out_dir: Path, overrides: list[str]) -> list[Path]:
    cfg = compose(overrides)
    splits = load_data(cfg)
    mean = np.asarray(splits.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(splits.std, np.float32).reshape(1, -1, 1, 1)
    paths = []
    for client_id in range(cfg.clients.num_clients):
        data = client_private_data(cfg, client_id, cfg.clients.num_clients)
        path = out_dir / f"client-{client_id}" / NODE_NPZ
        path.parent.mkdir(parents=True, exist_ok=True)
        # back to the raw scale: each node normalises with the run's shared statistics
        np.savez(path, x=data.x * std + mean, y=data.y)
        paths.append(path)
        log.info("client %d: %d samples -> %s", client_id, len(data), path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. experiment=digits_quick"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    export_partitions(args.out_dir, args.overrides)


if __name__ == "__main__":
    main()
