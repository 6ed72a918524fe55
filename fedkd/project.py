"""A fedkd user project: a Flower app whose code is the user's, whose apps are fedkd's.

``fedkd-new DIR`` writes one::

    DIR/pyproject.toml         a Flower app: fedkd's ServerApp and ClientApp, your publisher
    DIR/conf/                  your config groups, overlaying fedkd's (Hydra search path)
        dataset/mydata.yaml      a data source of yours (an .npz file)
        experiment/example.yaml  an experiment: your data, your model, a few rounds
    DIR/<package>/nets.py      a model of yours, named by import path in the config
    DIR/README.md              how to run it

Run ``fedkd ...`` from ``DIR``: the launcher ships ``DIR`` as the Flower app bundle, so your
modules travel to the simulation's workers and to every SuperNode the Flower way, and need no
edit of fedkd. Where the working directory is not a Flower app, the launcher writes a bare one
(fedkd's apps, no user code) into the run's scratch directory.
"""

import argparse
import keyword
import re
import tomllib
from pathlib import Path
from typing import Final

PYPROJECT: Final = "pyproject.toml"
APP_MARKER: Final = "[tool.flwr.app]"

_PYPROJECT_TEMPLATE: Final = """\
# A fedkd project: a Flower app whose apps are fedkd's and whose modules are yours. Run `fedkd`
# from this directory; the whole directory is the app bundle (FAB, at most 10 MB: no data here).
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "0.1.0"
description = "A fedkd project"
license = "Apache-2.0"
dependencies = ["fedkd"]

[tool.hatch.build.targets.wheel]
packages = ["{package}"]

[tool.flwr.app]
publisher = "{publisher}"
fab-include = ["**/*.py", "conf/**/*.yaml", "pyproject.toml"]

[tool.flwr.app.components]
serverapp = "server.app:app"
clientapp = "clients.app:app"

[tool.flwr.app.config]
# `fedkd` sends the whole validated config here; a bare `flwr run` takes Hydra overrides:
# --run-config 'overrides="experiment=example"'
cfg-json = ""
overrides = ""
resume = false  # true: continue the run in cfg-json's output_dir from its checkpoint
"""

_NETS_TEMPLATE: Final = '''\
"""Models of this project: name them by import path, e.g. model.architecture={package}.nets.TinyNet.

fedkd builds every model as ``Class(input_shape=(C, H, W), num_classes=K, **kwargs)`` and expects
logits of shape (batch, K); keyword arguments come from a ``_target_`` node in the config.
"""

from torch import Tensor, nn


class TinyNet(nn.Module):
    """A two-layer perceptron: flatten -> hidden -> K."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, hidden: int = 64):
        super().__init__()
        c, h, w = input_shape
        self.layers = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
'''

_DATASET_TEMPLATE: Final = """\
# Your private data: an .npz with x (N, H, W) or (N, C, H, W) and y (N,). Public and test sets are
# drawn from it (seeded) unless you choose other sources: public=folder public.path=DIR ...
defaults:
  - /source@_here_: npz
  - _self_

path: data/mine.npz   # relative to where you run fedkd
num_public: 300
num_test: 200
"""

_EXPERIMENT_TEMPLATE: Final = """\
# @package _global_
# Your data, your model, four heterogeneous clients: `fedkd experiment=example`
defaults:
  - override /dataset: mydata
  - override /partition: iid

name: example
num_rounds: 3
clients:
  num_clients: 4
  architectures: [cnn, {package}.nets.TinyNet]
  batch_size: 32
  revisit_epochs: 5
model:
  architecture:
    _target_: {package}.nets.TinyNet
    hidden: 128
  distill_epochs: 10
  batch_size: 64
"""

_README_TEMPLATE: Final = """\
# {name}: a fedkd project

```bash
fedkd experiment=example                 # simulation, from this directory
fedkd experiment=example mode=deploy connection=<your Flower connection>
```

- `{package}/nets.py`: your models (`model.architecture={package}.nets.TinyNet`).
- `conf/`: your config groups; they extend fedkd's (`dataset=mydata`, `experiment=example`).
- `data/mine.npz`: put your data there (arrays `x`, `y`), or point `conf/dataset/mydata.yaml`
  elsewhere. Data never goes into the app bundle: every node reads its own.
"""


def is_app(directory: Path) -> bool:
    """Whether ``directory`` is a Flower app (its pyproject.toml has ``[tool.flwr.app]``)."""
    path = directory / PYPROJECT
    if not path.is_file():
        return False
    try:
        return "app" in tomllib.loads(path.read_text()).get("tool", {}).get("flwr", {})
    except tomllib.TOMLDecodeError:
        return False


def write_bare_app(directory: Path) -> Path:
    """A Flower app with fedkd's apps and no user code (for runs outside any project)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = _PYPROJECT_TEMPLATE.format(name="fedkd-run", package="fedkd_run", publisher="fedkd")
    # nothing but this file: a fab-include pattern matching no file is an error in Flower
    text = text.replace('packages = ["fedkd_run"]', "packages = []")
    (directory / PYPROJECT).write_text(re.sub(r"fab-include = .*\n", "", text))
    return directory


def new_project(directory: Path, package: str | None = None, publisher: str = "me") -> list[Path]:
    """Write a project skeleton into ``directory`` (which must not hold a pyproject.toml)."""
    name = directory.resolve().name
    package = package or re.sub(r"\W", "_", name.lower()).strip("_") or "myproject"
    if not package.isidentifier() or keyword.iskeyword(package):
        raise ValueError(f"package name {package!r} is not a Python identifier")
    if (directory / PYPROJECT).exists():
        raise FileExistsError(f"{directory / PYPROJECT} exists: not overwriting a project")
    files = {
        PYPROJECT: _PYPROJECT_TEMPLATE.format(name=name, package=package, publisher=publisher),
        f"{package}/__init__.py": f'"""The {name} project\'s own code."""\n',
        f"{package}/nets.py": _NETS_TEMPLATE.format(package=package),
        "conf/dataset/mydata.yaml": _DATASET_TEMPLATE,
        "conf/experiment/example.yaml": _EXPERIMENT_TEMPLATE.format(package=package),
        "README.md": _README_TEMPLATE.format(name=name, package=package),
    }
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    (directory / "data").mkdir(exist_ok=True)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="Create a fedkd project (a Flower app).")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--package", help="the project's Python package (default: from DIR)")
    parser.add_argument("--publisher", default="me", help="Flower app publisher")
    args = parser.parse_args()
    for path in new_project(args.directory, args.package, args.publisher):
        print(path)


if __name__ == "__main__":
    main()
