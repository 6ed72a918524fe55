"""How far can the global model get from the public set alone? (the distillation ceiling)

    python benchmarks/ceiling.py [--epochs 25] [--seeds 0 1] [--report-only]

The server never sees a private label: whatever it learns comes through targets on the 10 k
public images. This script trains the global CNN on those images with the best targets a
consensus could ever be:

* ``true-labels``: the public images' own hard labels (a perfect, confident consensus);
* ``oracle-teacher``: the soft predictions of the CNN trained centrally on all 50 k private
  images with labels (``algorithm=centralized``'s model: a perfect federation's ensemble);

each without and with random-shift augmentation, and reports the test accuracy after each epoch.
Same data split, model, optimiser and batch size as the full benchmark matrix.

``--probe`` (issue 12's study of the honest upper bound, resumable: re-run to continue) adds
longer and stronger teaching of the same global CNN on the same 10 k public images, Adam with a
cosine schedule over all its epochs:

* ``cnn-teacher-40`` / ``cnn-teacher-150``: the oracle CNN's predictions, fixed, 40 / 150 epochs;
* ``cnn-teacher-views-150``: each epoch a fresh randomly shifted and mirrored view of every
  image, labelled by the teacher on that very view (consistent teaching, Beyer et al. 2022);
* ``cnn-teacher-views-mixup-150``: those views mixed pairwise (lambda ~ Beta(1, 1)), the mix
  labelled by the teacher;
* ``zoo-teacher-150``: fixed predictions of the ensemble (mean probabilities) of the clients' four
  architectures (cnn, mlp, wide_cnn, resnet), each trained centrally like the oracle CNN;
* ``zoo-no-mlp-teacher-150``: the same ensemble without the MLP;
* ``mnist-*``: a public set from another domain -- the 10 k MNIST digits (``make mnist``) in
  place of the public Fashion-MNIST images, the same teachers: ``mnist-cnn-teacher-40`` (fixed
  predictions), ``mnist-cnn-teacher-fedkd-views-40`` (each epoch fresh :class:`fedkd.views.Views`
  of every digit -- zoomed, shifted, mirrored, mixed -- labelled by the teacher on that view: what
  ``views.*`` gives a federation) and ``mnist-cnn-teacher-mild-views-40`` (the same without the
  zoom); ``mnist-local-clients-fedkd-views-40``: the teacher a federation whose clients never
  learn from each other could at best give -- the benchmark's 20 clients (Dirichlet alpha = 0.5,
  the heterogeneous zoo) each trained alone for 5 epochs on its own partition, merged per class
  by their class counts (``class_weighted``), all 20 on every view.

Writes ``benchmarks/results/ceiling/``: ``ceiling.json`` (per-epoch curves and the teachers' test
accuracy), ``table.md`` and ``ceiling.png``. The centrally trained teachers are cached (weights,
not results) under ``~/.cache/fedkd/ceiling`` so a resumed probe does not train them again.
"""

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from fedkd.aggregation import class_weighted_mean
from fedkd.augment import Augment
from fedkd.config import compose
from fedkd.data import FMNIST_MEAN, FMNIST_STD
from fedkd.experiment import build_client_model, build_global_model, client_private_data, load_data
from fedkd.logs import configure_logging
from fedkd.models.zoo import build_model
from fedkd.training import (
    TrainConfig,
    derive_seed,
    evaluate,
    make_kd_loss,
    predict_logits,
    supervised_loss,
    train,
)
from fedkd.views import Views

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


@dataclass(frozen=True)
class Probe:
    """One row of the probe: who teaches, for how long, on which views."""

    name: str
    teachers: tuple[str, ...]  # zoo architectures whose mean probabilities are the targets
    epochs: int
    views: bool = False  # a fresh shifted + mirrored view each epoch, labelled on that view
    mixup: bool = False  # those views mixed pairwise, the mix labelled by the teachers
    public: str = "fmnist"  # or "mnist": the 10 k MNIST digits as the public set
    fedkd_views: Views | None = None  # fresh views of every sample each epoch (fedkd.views)
    local_clients: bool = False  # teacher: the federation's clients trained alone, merged


ZOO = ("cnn", "mlp", "wide_cnn", "resnet")
PROBES = (
    Probe("cnn-teacher-40", ("cnn",), 40),
    Probe("cnn-teacher-150", ("cnn",), 150),
    Probe("cnn-teacher-views-150", ("cnn",), 150, views=True),
    Probe("cnn-teacher-views-mixup-150", ("cnn",), 150, views=True, mixup=True),
    Probe("zoo-teacher-150", ZOO, 150),
    Probe("zoo-no-mlp-teacher-150", ("cnn", "wide_cnn", "resnet"), 150),
    Probe("mnist-cnn-teacher-40", ("cnn",), 40, public="mnist"),
    Probe(
        "mnist-cnn-teacher-fedkd-views-40",
        ("cnn",),
        40,
        public="mnist",
        fedkd_views=Views(zoom=2.0, shift=2, flip=True, mixup=1.0),
    ),
    Probe(
        "mnist-cnn-teacher-mild-views-40",
        ("cnn",),
        40,
        public="mnist",
        fedkd_views=Views(shift=2, flip=True, mixup=1.0),
    ),
    Probe(
        "mnist-local-clients-fedkd-views-40",
        (),
        40,
        public="mnist",
        fedkd_views=Views(zoom=2.0, shift=2, flip=True, mixup=1.0),
        local_clients=True,
    ),
)
LOCAL_EPOCHS = 5
VIEWS = Augment(shift=2, flip=True)
CACHE = Path.home() / ".cache" / "fedkd" / "ceiling"


def central_teacher(cfg, splits, arch: str, seed: int) -> torch.nn.Module:
    """``arch`` trained centrally on the 50 k private images (the oracle's recipe), cached."""
    torch.manual_seed(derive_seed(seed, 11))
    model = build_model(arch, splits.input_shape, splits.num_classes)
    path = CACHE / f"{arch}_s{seed}_e{TEACHER_EPOCHS}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train(
        model,
        torch.from_numpy(splits.private.x),
        torch.from_numpy(splits.private.y),
        supervised_loss,
        TrainConfig(TEACHER_EPOCHS, cfg.clients.batch_size, cfg.clients.lr, derive_seed(seed, 1)),
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return model.eval()


@torch.no_grad()
def ensemble_probs(models: list[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.softmax(predict_logits(m, x), dim=1) for m in models]).mean(0)


def mnist_public(seed: int) -> np.ndarray:
    """The 10 k MNIST digits, normalised like the Fashion-MNIST rows (needs `make mnist`)."""
    cfg = compose(["dataset=fmnist", "model=cnn", "public=mnist", "dataset.num_private=50000",
                   f"seed={seed}", *FMNIST_STATS])  # fmt: skip
    return load_data(cfg).public.x


def local_clients_teacher(seed: int, test_x, test_y) -> Callable[[torch.Tensor], torch.Tensor]:
    """The class-weighted merge of the benchmark's 20 clients, each trained alone."""
    cfg = compose(["experiment=fmnist_public_mnist", "partition.alpha=0.5", f"seed={seed}",
                   *FMNIST_STATS])  # fmt: skip
    splits = load_data(cfg)
    models, counts = [], []
    for cid in range(cfg.clients.num_clients):
        data = client_private_data(cfg, cid, cfg.clients.num_clients)
        torch.manual_seed(derive_seed(seed, cid, 12))
        model = build_client_model(cfg, cid, splits)
        train(model, torch.from_numpy(data.x), torch.from_numpy(data.y), supervised_loss,
              TrainConfig(LOCAL_EPOCHS, cfg.clients.batch_size, cfg.clients.lr,
                          derive_seed(seed, cid, 13)))  # fmt: skip
        models.append(model.eval())
        counts.append(np.bincount(data.y, minlength=splits.num_classes))
    weights = np.array(counts, dtype=np.float64)

    @torch.no_grad()
    def teach(x: torch.Tensor) -> torch.Tensor:
        probs = np.stack([torch.softmax(predict_logits(m, x), dim=1).numpy() for m in models])
        return torch.from_numpy(class_weighted_mean(probs, weights)[0].astype(np.float32))

    hits = teach(test_x).argmax(1) == test_y
    log.info("seed %d: the 20 clients trained alone, merged: %.4f", seed, hits.float().mean())
    return teach


def probe_curve(probe: Probe, teachers, cfg, splits, seed: int) -> list[float]:
    """Test accuracy after each epoch of distilling a fresh global CNN as ``probe`` says."""
    public_np = mnist_public(seed) if probe.public == "mnist" else splits.public.x
    public_x = torch.from_numpy(public_np)
    test_x, test_y = torch.from_numpy(splits.test.x), torch.from_numpy(splits.test.y)
    student = build_global_model(cfg, splits)
    batch = cfg.model.batch_size
    steps = probe.epochs * -(-len(public_x) // batch)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.model.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    loss_fn = make_kd_loss(1.0)
    if probe.local_clients:
        teach = local_clients_teacher(seed, test_x, test_y)
    else:
        teach = partial(ensemble_probs, teachers)
    fixed = None if probe.views or probe.fedkd_views else teach(public_x)
    everything = np.arange(len(public_np))
    generator = torch.Generator().manual_seed(derive_seed(seed, 3))
    mix = np.random.default_rng(derive_seed(seed, 5))  # mixup's lambda ~ Beta(1, 1)
    accs = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, 4))  # dropout
        for epoch in range(probe.epochs):
            if probe.fedkd_views is not None:  # this epoch's views, labelled on themselves
                public_x = torch.from_numpy(probe.fedkd_views(public_np, everything, [seed, epoch]))
                fixed = teach(public_x)
            student.train()
            order = torch.randperm(len(public_x), generator=generator)
            for start in range(0, len(order), batch):
                idx = order[start : start + batch]
                if probe.views:
                    inputs = VIEWS(public_x[idx], generator)
                    if probe.mixup:
                        lam = float(mix.beta(1.0, 1.0))
                        partner = torch.randperm(len(idx), generator=generator)
                        inputs = lam * inputs + (1 - lam) * inputs[partner]
                    targets = teach(inputs)
                else:
                    assert fixed is not None
                    inputs, targets = public_x[idx], fixed[idx]
                terms = loss_fn(student(inputs), targets)
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                optimizer.step()
                schedule.step()
            accs.append(evaluate(student, test_x, test_y)[0])
    return accs


def run_probe(seeds: list[int], only: list[str] | None = None) -> None:
    """The probe's rows for ``seeds`` (those whose name contains one of ``only``, if given),
    resumed from ``ceiling.json`` (a row and seed at a time)."""
    saved = json.loads((OUT / "ceiling.json").read_text())
    results = saved["results"]
    for seed in seeds:
        pending = [
            p
            for p in PROBES
            if str(seed) not in results.get(p.name, {})
            and (not only or any(word in p.name for word in only))
        ]
        if not pending:
            continue
        cfg = compose(["dataset=fmnist", "model=cnn", f"seed={seed}", *FMNIST_STATS])
        splits = load_data(cfg)
        test_x, test_y = torch.from_numpy(splits.test.x), torch.from_numpy(splits.test.y)
        needed = sorted({a for p in pending for a in p.teachers}, key=ZOO.index)
        teachers = {}
        for arch in needed:
            start = time.monotonic()
            teachers[arch] = central_teacher(cfg, splits, arch, seed)
            acc = evaluate(teachers[arch], test_x, test_y)[0]
            results.setdefault(f"teacher:{arch}", {})[str(seed)] = [acc]
            log.info("seed %d: %s teacher %.4f (%.0fs)", seed, arch, acc, time.monotonic() - start)
        for probe in pending:
            models = [teachers[a] for a in probe.teachers]
            if len(models) > 1:  # (a single teacher's accuracy is recorded above)
                hits = ensemble_probs(models, test_x).argmax(1) == test_y
                ensemble = float(hits.float().mean())
                results.setdefault(f"teacher:{'+'.join(probe.teachers)}", {})[str(seed)] = [
                    ensemble
                ]
            start = time.monotonic()
            accs = probe_curve(probe, models, cfg, splits, seed)
            results.setdefault(probe.name, {})[str(seed)] = accs
            log.info("seed %d %s: best %.4f final %.4f (%.0fs)", seed, probe.name, max(accs),
                     accs[-1], time.monotonic() - start)  # fmt: skip
            (OUT / "ceiling.json").write_text(json.dumps(saved, indent=2))
    write_table(results)
    plot(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--probe", action="store_true", help="the probe's rows (resumable)")
    parser.add_argument("--only", nargs="*", help="probe rows whose name contains one of these")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--report-only", action="store_true", help="redo table and plot only")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((OUT / "ceiling.json").read_text())["results"]
        write_table(results)
        plot(results)
        return
    configure_logging()
    torch.set_num_threads(args.threads)
    if args.probe:
        run_probe(args.seeds, args.only)
        return
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
        elif label.startswith("teacher:"):
            archs = label.removeprefix("teacher:").replace("+", " + ")
            name = f"(teacher: {archs}, each trained centrally {TEACHER_EPOCHS} epochs on 50 k)"
        lines.append(f"| {name} | {len(by_seed)} | {best:.4f} | {final:.4f} |")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(results: dict[str, dict[str, list[float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, by_seed in results.items():
        if label.startswith("teacher"):
            continue
        mean = np.mean(list(by_seed.values()), axis=0)
        ax.plot(range(1, len(mean) + 1), mean, label=label)
    ax.set_xlabel("epoch over the 10 k public images")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.4, 0.92)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "ceiling.png", dpi=120)


if __name__ == "__main__":
    main()
