"""How far can the global model get from the public set alone? (the distillation ceiling)

    python benchmarks/ceiling.py [--epochs 25] [--seeds 0 1] [--report-only]

The server never sees a private label: whatever it learns comes through targets on the 10 k
public images. This script trains the global CNN on those images with the best targets a
consensus could ever be:

* ``true-labels``: the public images' own hard labels (a perfect, confident consensus);
* ``oracle-teacher``: the soft predictions of the CNN trained centrally on all 50 k private
  images with labels (``algorithm=centralized``'s model: a perfect federation's ensemble);

each without and with random-shift augmentation, and reports the test accuracy after each epoch.
Same data split, model, optimiser and batch size as the full benchmark matrix. Writes
``benchmarks/results/ceiling/``: ``ceiling.json`` (per-epoch curves), ``table.md`` and
``ceiling.png``.
"""

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from fedkd.augment import Augment
from fedkd.config import compose
from fedkd.data import FMNIST_MEAN, FMNIST_STD
from fedkd.experiment import build_global_model, load_data
from fedkd.logs import configure_logging
from fedkd.training import (
    TrainConfig,
    derive_seed,
    evaluate,
    make_kd_loss,
    predict_logits,
    supervised_loss,
    train,
)

OUT = Path(__file__).resolve().parent / "results" / "ceiling"
# The statistics the published rows were measured with (before they came from the public set).
FMNIST_STATS = (f"normalize.mean=[{FMNIST_MEAN}]", f"normalize.std=[{FMNIST_STD}]")
log = logging.getLogger("fedkd.ceiling")
TEACHER_EPOCHS = 5  # the full matrix's centralized row


def curve(model, x, targets, loss_fn, cfg, test_x, test_y, epochs, augment, seed) -> list[float]:
    """Test accuracy after each of ``epochs`` epochs (one optimiser carried across them)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.model.lr)
    accs = []
    for epoch in range(epochs):
        train(
            model,
            x,
            targets,
            loss_fn,
            TrainConfig(
                1, cfg.model.batch_size, cfg.model.lr, derive_seed(seed, epoch), augment=augment
            ),
            optimizer,
        )
        accs.append(evaluate(model, test_x, test_y)[0])
    return accs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--report-only", action="store_true", help="redo table and plot only")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((OUT / "ceiling.json").read_text())["results"]
        write_table(results)
        plot(results)
        return
    configure_logging()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[float]]] = {}
    for seed in args.seeds:
        cfg = compose(["dataset=fmnist", "model=cnn", f"seed={seed}", *FMNIST_STATS])
        splits = load_data(cfg)
        test_x, test_y = torch.from_numpy(splits.test.x), torch.from_numpy(splits.test.y)
        public_x = torch.from_numpy(splits.public.x)

        start = time.monotonic()
        teacher = build_global_model(cfg, splits)
        train(
            teacher,
            torch.from_numpy(splits.private.x),
            torch.from_numpy(splits.private.y),
            supervised_loss,
            TrainConfig(
                TEACHER_EPOCHS, cfg.clients.batch_size, cfg.clients.lr, derive_seed(seed, 1)
            ),
        )
        teacher_acc = evaluate(teacher, test_x, test_y)[0]
        teacher_probs = torch.softmax(predict_logits(teacher, public_x), dim=1)
        teacher_public = float((teacher_probs.argmax(1).numpy() == splits.public.y).mean())
        log.info(
            "seed %d: teacher test acc %.4f, public acc %.4f (%.0fs)",
            seed,
            teacher_acc,
            teacher_public,
            time.monotonic() - start,
        )
        results.setdefault("teacher", {})[str(seed)] = [teacher_acc]
        variants = {
            "true-labels": (torch.from_numpy(splits.public.y), supervised_loss),
            "oracle-teacher": (teacher_probs, make_kd_loss(1.0)),
        }
        for name, (targets, loss_fn) in variants.items():
            for augment in (Augment(), Augment(shift=2)):
                label = name + ("+shift" if augment.active else "")
                start = time.monotonic()
                model = build_global_model(cfg, splits)
                accs = curve(
                    model,
                    public_x,
                    targets,
                    loss_fn,
                    cfg,
                    test_x,
                    test_y,
                    args.epochs,
                    augment,
                    derive_seed(seed, 3),
                )
                results.setdefault(label, {})[str(seed)] = accs
                log.info(
                    "seed %d %s: best %.4f final %.4f (%.0fs)",
                    seed,
                    label,
                    max(accs),
                    accs[-1],
                    time.monotonic() - start,
                )
    curves = {"epochs": args.epochs, "teacher_epochs": TEACHER_EPOCHS, "results": results}
    (OUT / "ceiling.json").write_text(json.dumps(curves, indent=2))
    write_table(results)
    plot(results)


def write_table(results: dict[str, dict[str, list[float]]]) -> None:
    lines = [
        "| targets on the 10 k public images | seeds | best test acc | final test acc |",
        "|---|---|---|---|",
    ]
    for label, by_seed in results.items():
        best = np.mean([max(a) for a in by_seed.values()])
        final = np.mean([a[-1] for a in by_seed.values()])
        name = label
        if label == "teacher":
            name = f"(the teacher itself: centralized CNN, {TEACHER_EPOCHS} epochs on 50 k)"
        lines.append(f"| {name} | {len(by_seed)} | {best:.4f} | {final:.4f} |")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(results: dict[str, dict[str, list[float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, by_seed in results.items():
        if label == "teacher":
            continue
        mean = np.mean(list(by_seed.values()), axis=0)
        ax.plot(range(1, len(mean) + 1), mean, label=label)
    ax.set_xlabel("epoch over the 10 k public images")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.8, 0.92)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "ceiling.png", dpi=120)


if __name__ == "__main__":
    main()
