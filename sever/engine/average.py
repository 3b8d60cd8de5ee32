"""`sever average`: one checkpoint whose weights are the mean of several of a run's.

Averaging the best few checkpoints of a run (12th place: +0.3 to 0.5% for every model) is
a weight-space ensemble at the cost of one model. The weights averaged are the ones each
checkpoint is evaluated with (its EMA weights when the run kept them). BatchNorm running
statistics are then either recomputed on the run's training images with torch's
`swa_utils.update_bn` (the default: the averaged weights' own statistics), or averaged
like the weights.

The result is a weights-only checkpoint (no optimiser: it cannot be resumed) that records
which checkpoints went in; it loads wherever a checkpoint loads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from sever.config import Config, config_dict, config_from_dict
from sever.data.loaders import build_loaders, load_labels
from sever.data.splits import read_split
from sever.engine.checkpoint import (
    FORMAT_VERSION,
    evaluated_weights,
    load_checkpoint,
    save_checkpoint,
)
from sever.engine.resume import changed_keys
from sever.engine.steps import Sample
from sever.errors import CheckpointError, ConfigError, DataError
from sever.fileio import check_output_file
from sever.model.build import build_model

log = logging.getLogger(__name__)
BN_MODES = ("recompute", "average")


@dataclass
class AverageOptions:
    """What `sever average` was asked for."""

    run: Path
    epochs: list[int] = field(default_factory=list)
    top: int | None = None  # the run's best `top` kept epochs; all kept when neither is set
    bn: str = "recompute"
    out: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    bn_batches: int | None = None  # batches of training images for update_bn; None: an epoch


@dataclass
class AverageReport:
    """The checkpoint written and what went into it."""

    out: Path
    checkpoints: list[Path]
    epochs: list[int]
    bn: str
    metric: str
    values: list[float | None]

    def lines(self) -> list[str]:
        scores = ", ".join(
            f"epoch {e}" + (f" ({self.metric} {v:.4f})" if v is not None else "")
            for e, v in zip(self.epochs, self.values, strict=True)
        )
        bn = "recomputed on training images" if self.bn == "recompute" else "averaged"
        return [
            f"averaged {len(self.epochs)} checkpoints: {scores}",
            f"BatchNorm statistics {bn}",
            f"wrote {self.out}",
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "checkpoints": [str(p) for p in self.checkpoints],
            "epochs": self.epochs,
            "bn": self.bn,
            "metric": self.metric,
            "values": self.values,
        }


def average_run(options: AverageOptions) -> AverageReport:
    """Average the chosen checkpoints of `options.run` into one (see the module doc).

    Raises:
        CheckpointError: no such run or epoch, or checkpoints of different models.
        ConfigError: a bad option (--bn, --top).
    """
    if options.bn not in BN_MODES:
        raise ConfigError(f"--bn {options.bn}: expected one of {', '.join(BN_MODES)}")
    run = Path(options.run)
    last = run / "checkpoints" / "last.pth"
    if not (run / "config.yml").is_file() or not last.is_file():
        raise CheckpointError(
            f"{run}: not a run directory with checkpoints (no config.yml or checkpoints/"
            "last.pth); give -r saved/NAME/STAMP"
        )
    ranked = ranked_epochs(load_checkpoint(last))
    chosen = sorted(choose(run, ranked, options.epochs, options.top))
    out = options.out or run / "checkpoints" / f"average-{'-'.join(f'e{e}' for e, _ in chosen)}.pth"
    check_output_file(out, "--out")  # the default too, before the work (a read-only run)
    states = [load_checkpoint(path_of(run, e)) for e, _ in chosen]
    config = same_model(states, [path_of(run, e) for e, _ in chosen])
    weights = average_weights([evaluated_weights(s) for s in states], options.bn == "average")
    if options.bn == "recompute":
        weights = recompute_bn(config, run, weights, options.device, options.bn_batches)
    epochs = [e for e, _ in chosen]
    state = {
        "format": FORMAT_VERSION,
        "model": weights,
        "ema": None,
        "config": config_dict(config),
        "epoch": max(epochs),
        "metrics": {},
        "versions": states[0].get("versions", {}),
        "averaged": {
            "checkpoints": [path_of(run, e).name for e in epochs],
            "epochs": epochs,
            "bn": options.bn,
        },
    }
    save_checkpoint(state, out)
    metric = config.trainer.monitor_metric
    paths = [path_of(run, e) for e in epochs]
    return AverageReport(out, paths, epochs, options.bn, metric, [v for _, v in chosen])


def path_of(run: Path, epoch: int) -> Path:
    return run / "checkpoints" / f"checkpoint-epoch{epoch}.pth"


def ranked_epochs(last: Mapping[str, Any]) -> list[tuple[int, float]]:
    """The run's kept epochs by its monitored metric, best first, from last.pth's saver."""
    kept = (last.get("saver") or {}).get("kept") or []
    return [(int(epoch), float(value)) for value, epoch in kept]


def choose(
    run: Path, ranked: list[tuple[int, float]], epochs: list[int], top: int | None
) -> list[tuple[int, float | None]]:
    """(epoch, metric value or None) of the checkpoints to average, each file present.

    Raises:
        CheckpointError: an epoch's file is missing, or fewer than two are chosen.
    """
    if epochs and top is not None:
        raise ConfigError("give -e EPOCH ... or --top K, not both")
    if top is not None and top < 2:
        raise ConfigError(f"--top {top}: average at least 2 checkpoints")
    values = dict(ranked)
    if epochs:
        chosen: list[tuple[int, float | None]] = [(e, values.get(e)) for e in dict.fromkeys(epochs)]
    else:
        present = [(e, v) for e, v in ranked if path_of(run, e).is_file()]
        chosen = list(present[: top or len(present)])
    for epoch, _ in chosen:
        if not path_of(run, epoch).is_file():
            kept = sorted(
                int(p.stem.removeprefix("checkpoint-epoch"))
                for p in (run / "checkpoints").glob("checkpoint-epoch*.pth")
            )
            raise CheckpointError(
                f"{path_of(run, epoch)}: no checkpoint for epoch {epoch}; kept epochs: "
                f"{', '.join(map(str, kept)) or 'none'}"
            )
    if len(chosen) < 2:
        raise CheckpointError(
            f"{run}: {len(chosen)} checkpoint(s) to average; keep more (trainer.save_top_k, "
            "trainer.save_period) or name at least two with -e"
        )
    return chosen


def same_model(states: list[dict[str, Any]], paths: list[Path]) -> Config:
    """The config of the first checkpoint, once every other builds the same model.

    Raises:
        CheckpointError: a checkpoint of another task or model, named with what differs.
    """
    configs = [
        config_from_dict(s["config"], f"{p} (config)") for s, p in zip(states, paths, strict=True)
    ]
    first = configs[0]
    for config, path in zip(configs[1:], paths[1:], strict=True):
        differ = {
            k: v
            for k, v in changed_keys(first, config).items()
            if (k == "task" or k.startswith("model.")) and k != "model.encoder_weights"
        }
        if differ:
            key, (a, b) = next(iter(differ.items()))
            raise CheckpointError(
                f"{path}: {key} is {b!r}, {paths[0].name} has {a!r}; average checkpoints of "
                "one model"
            )
    return first


def average_weights(weights: list[dict[str, Tensor]], average_bn: bool) -> dict[str, Tensor]:
    """The element-wise mean of state dicts (float64 sums, cast back). Integer tensors
    (BatchNorm's batch counts) take the largest value; BatchNorm running statistics are
    averaged only with `average_bn` (otherwise the first's, to be recomputed)."""
    keys = list(weights[0])
    for state in weights[1:]:
        if list(state) != keys or any(state[k].shape != weights[0][k].shape for k in keys):
            raise CheckpointError("the checkpoints' weights differ in their keys or shapes")
    averaged = {}
    for key in keys:
        tensors = [w[key] for w in weights]
        if not tensors[0].is_floating_point():
            averaged[key] = torch.stack(tensors).amax(0)
        elif not average_bn and key.endswith(("running_mean", "running_var")):
            averaged[key] = tensors[0].clone()
        else:
            total = torch.stack([t.double() for t in tensors]).mean(0)
            averaged[key] = total.to(tensors[0].dtype)
    return averaged


def recompute_bn(
    config: Config,
    run: Path,
    weights: dict[str, Tensor],
    where: torch.device,
    batches: int | None,
) -> dict[str, Tensor]:
    """The weights with BatchNorm statistics recomputed by `update_bn` over the run's
    training images as it trained on them (augmentation and crops of epoch 1)."""
    model = build_model(config.model.model_copy(update={"encoder_weights": None}), config.task)
    model.load_state_dict(weights)
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return weights
    model.to(where)
    split = read_split(run / "split.csv")
    try:
        labels = load_labels(config)
    except DataError as exc:
        raise DataError(
            f"{exc}; BatchNorm statistics are recomputed on it (or: --bn average)"
        ) from None
    loaders = build_loaders(config, labels, split, where.type == "cuda")
    loaders.sampler.set_epoch(1)
    count = batches or len(loaders.train)
    log.info("recomputing BatchNorm statistics on %d training batches", count)
    update_bn(first_images(loaders.train, count, where), model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def first_images(loader: DataLoader[Sample], count: int, device: torch.device) -> Iterator[Tensor]:
    """The images of the loader's first `count` batches, on `device`."""
    for i, (images, _, _) in enumerate(loader):
        if i >= count:
            return
        yield images.to(device)
