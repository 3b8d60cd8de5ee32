"""`sever tune`: search per-class thresholds and minimum defect sizes on validation images.

The validation split is predicted once; probabilities are quantised to 1/255 and cached on
disk (compressed), so a second tune with the same models costs no inference. The counts
kept from them and the exact search over them are pure, in `sever.inference.search`; this
module feeds that search from the models (or the cache) and writes what it found.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import yaml
from numpy.typing import NDArray

from sever.data.dataset import SteelDataset
from sever.errors import ConfigError
from sever.fileio import (
    atomic_folder,
    atomic_path,
    check_output_file,
    check_output_folder,
    writable_or,
    writing,
)
from sever.inference.ensemble import Ensemble
from sever.inference.models import Member
from sever.inference.postprocess import TUNED_WITH, PostProcess, winners
from sever.inference.postprocess_file import tuned_with
from sever.inference.predict import check_members
from sever.inference.search import PairStats, Tuning, pair_stats, parts_of, quantize, tune_stats
from sever.inference.validation import group_by_split, run_of, validation_batches, validation_set
from sever.progress import Tracker


class _Batch(TypedDict):
    levels: NDArray[np.uint8]  # (N, C, H, W) quantised probabilities
    truth: NDArray[np.bool_]  # (N, C, H, W)
    winner: NDArray[np.uint8]  # (N, H, W) each pixel's most probable class


class Batch(_Batch, total=False):
    """One predicted batch as tune keeps it (and caches it): see `quantize`, `pair_stats`."""

    presence: NDArray[np.float32]  # (N, C), when a model gives presence


@dataclass(frozen=True)
class TuneReport:
    """What tune found (see `Tuning`), on how many images and folds, and where it wrote
    the post-processing."""

    tuning: Tuning
    images: int
    folds: int
    out: Path

    def to_dict(self) -> dict[str, Any]:
        t, pp = self.tuning, self.tuning.postprocess
        found: dict[str, Any] = {
            "before": t.before,
            "after": t.after,
            "threshold": list(pp.threshold),
            "min_pixels": list(pp.min_pixels),
            "gate": None if pp.gate is None else list(pp.gate),
            "scale_c": pp.scale_c,
            "held_out": t.held_out,
        }
        if t.intervals:
            found["intervals"] = {k: i.to_dict() for k, i in t.intervals.items()}
        if t.gain is not None:
            found["held_out_gain"] = t.gain.to_dict()["mean"]
        if t.rungs:
            found["search"] = t.adopted
            found["searches"] = [
                {
                    "name": r.name,
                    "held_out": r.held_out["dice_mean"],
                    "gain": None if r.gain is None else r.gain.to_dict()["mean"],
                    "adopted": r.adopted,
                }
                for r in t.rungs
            ]
        return found | {"images": self.images, "folds": self.folds, "out": str(self.out)}

    def lines(self) -> list[str]:
        """Before and after per class with the chosen values, the held-out estimates,
        then the file written."""
        t, pp = self.tuning, self.tuning.postprocess
        gate = pp.gate or (0.0,) * pp.classes
        lines = [f"{'':>10}{'before':>9}{'after':>9}  threshold  min_pixels  gate"]
        for key in ["dice_mean"] + [f"dice_{c}" for c in range(1, pp.classes + 1)]:
            extra = ""
            if key != "dice_mean":
                c = int(key.removeprefix("dice_")) - 1
                shown = f"{gate[c]:4.2f}" if gate[c] else f"{'-':>4}"  # 0: no gate
                extra = f"  {pp.threshold[c]:9.3f}  {pp.min_pixels[c]:10d}  {shown}"
            lines.append(f"{key:>10}{t.before[key]:9.4f}{t.after[key]:9.4f}{extra}")
        how = "the other folds" if self.folds > 1 else "the other half of the images"
        lines.append(
            f"held out (tuned on {how}, scored on each in turn): "
            f"dice_mean {t.held_out['dice_mean']:.4f}; 'after' is fitted to these images"
        )
        if t.intervals:
            before, after = t.intervals["before"], t.intervals["after"]
            lines.append(
                f"95% intervals over the images: before {before.text()}, after {after.text()}"
            )
        if t.gain is not None:
            g = t.gain.diff["mean"]
            lines.append(
                f"held-out gain over before: {g.value:+.4f} [{g.low:+.4f}, {g.high:+.4f}] "
                f"({t.gain.verdict('tuned', 'before')})"
            )
        adopted = None
        for rung in t.rungs:
            lines.append(rung.line(adopted))
            adopted = rung.name if rung.adopted else adopted
        return [*lines, f"wrote {self.out}"]


def tune_runs(
    ensemble: Ensemble,
    base: PostProcess | None = None,
    out: Path | None = None,
    data_dir: Path | None = None,
    how: str = "auto",
    cache: Path | None = None,
) -> TuneReport:
    """Tune `base`'s thresholds, minimum sizes, gates and scaling on the ensemble's
    validation images and write the result as YAML to `out` (default: the first model's
    run, postprocess-tuned.yml), with the TTA, averaging and models it was tuned with
    (`tuned_with`, which predict checks). Without `base`, tuning starts where predict
    would be: the ensemble's post-processing, else the one default
    (`Ensemble.applied_postprocess`).

    A run that cannot be written (a read-only mount) has its default `out` in the current
    folder (`postprocess-tuned-<experiment>-<run>.yml`) and its cache beside `out`
    (`cache_folder`), each said once in the log; `cache` chooses the cache folder.
    """
    base = ensemble.applied_postprocess if base is None else base
    run = run_of(ensemble.members[0])
    if out is None:
        folder = writable_or(run, Path.cwd(), "tune's output")
        name = "" if folder == run else f"-{run_name(run)}"
        out = folder / f"postprocess-tuned{name}.yml"
        check_output_file(out, "--out")
    check_members(ensemble.members, base)
    if any(base.min_component):
        raise ConfigError(
            "tune searches thresholds, min_pixels, gate and scale_c: remove min_component "
            "from the starting post-processing"
        )
    groups = group_by_split(ensemble.members)
    cache_dir = cache_folder(groups[0][1], out, cache)
    out.parent.mkdir(parents=True, exist_ok=True)  # before the work, not after it
    stats, sizes = predict_stats(ensemble, groups, cache_dir, base.one_class_per_pixel, data_dir)
    tuning = tune_stats(stats, parts_of(sizes), base, how)
    written = tuning.postprocess.to_dict() | {TUNED_WITH: tuned_with(ensemble)}
    with writing(out, "tuned post-processing"), atomic_path(out) as tmp:
        tmp.write_text(yaml.safe_dump(written, sort_keys=False))
    return TuneReport(tuning, int(stats.truth.shape[0]), len(groups), out)


def cache_folder(run: Path, out: Path | None, chosen: Path | None = None) -> Path:
    """Where predicted validation probabilities are cached: `chosen` (`--cache-dir`),
    else `RUN/cache`, else, when the run cannot be written (a read-only mount), `cache/`
    beside `out` (or in the current folder), said once in the log; checked before the work.

    Raises:
        OptionError: the folder chosen, or neither default, takes no file.
    """
    if chosen is not None:
        check_output_folder(chosen, "--cache-dir")
        return chosen
    beside = Path.cwd() if out is None else out.parent
    return writable_or(run, beside, "the cache of predicted probabilities") / "cache"


def run_name(run: Path) -> str:
    """`<experiment>-<run>`: a run named in a file name outside it."""
    return f"{run.parent.name}-{run.name}"


def predict_stats(
    ensemble: Ensemble,
    groups: list[tuple[list[Member], Path]],
    cache_dir: Path,
    one_class_per_pixel: bool,
    data_dir: Path | None = None,
) -> tuple[PairStats, list[int]]:
    """Stats over the validation images of every (members, run) group, and the number of
    images of each group.

    Members of one group share a validation split and are ensembled; different groups
    (k-fold runs) have disjoint splits and are concatenated: out-of-fold tuning.
    """
    # Every group's images are found before any is predicted.
    work = []
    for members, run in groups:
        group = replace(ensemble, members=members)
        folder = cache_dir / f"probs-{cache_key(group)}"
        done = (folder / "complete").is_file()
        work.append(
            (group, run, folder, None if done else validation_set(run, members[0], data_dir))
        )
    parts: list[PairStats] = []
    sizes: list[int] = []
    for group, run, folder, dataset in work:
        batches = cached(folder) if dataset is None else predicted(group, dataset, run.name, folder)
        stats = [
            pair_stats(b["levels"], b["truth"], one_class_per_pixel, b.get("presence"), b["winner"])
            for b in batches
        ]
        parts += stats
        sizes.append(sum(len(s.truth) for s in stats))
    return PairStats.concat(parts), sizes


def cache_key(ensemble: Ensemble) -> str:
    """Names the cached probabilities: the models (path, size, mtime) and how they combine."""
    paths = [m.path for m in ensemble.members]
    parts = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths]
    weights = [m.weight for m in ensemble.members]
    key: list[object] = [parts, ensemble.tta, ensemble.averaging, weights]
    views = [m.tta for m in ensemble.members]
    if any(views):  # per-model TTA (ensemble files); keys without it stay as they were
        key.append(views)
    sizes = [m.size for m in ensemble.members]
    if any(sizes):
        key.append(sizes)
    text = json.dumps(key)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def predicted(
    ensemble: Ensemble, dataset: SteelDataset, name: str, folder: Path
) -> Iterator[Batch]:
    """Predict a run's validation set batch by batch, caching each batch as it comes; the
    folder appears, whole, once every batch is in it (an incomplete one is replaced; a
    failed write, a full disk, leaves none, nor any temporary folder). Only the writes are
    `writing`'s: an error of the inference (an image that cannot be read) is not the cache's."""
    what = "cache of predicted probabilities"
    with (
        atomic_folder(folder, replace=True, what=what) as partial,
        Tracker(len(dataset), f"tune: predict {name}", "images") as progress,
    ):
        for index, (ids, probs, presence, truth) in enumerate(
            validation_batches(ensemble, dataset)
        ):
            assert probs is not None  # group_by_split: each group has a segmenter
            batch: Batch = {
                "levels": quantize(probs),
                "truth": truth.astype(bool),
                "winner": winners(probs),
            }
            if presence is not None:
                batch["presence"] = presence
            with writing(folder, what):
                save_batch(partial / f"batch-{index:05d}.npz", batch)
            progress.update(len(ids))
            yield batch
        with writing(folder, what):
            (partial / "complete").touch()


def save_batch(path: Path, batch: Batch) -> None:
    """Compressed: most pixels sit near probability 0, so levels shrink many times over."""
    truth = batch["truth"]
    # Any: arrays by name for `savez_compressed`'s **kwds (mypy would check a narrower
    # value type against its allow_pickle: bool as well).
    packed: dict[str, Any] = {
        **batch,
        "truth": np.packbits(truth, axis=-1),
        "width": truth.shape[-1],
    }
    with path.open("wb") as handle:
        np.savez_compressed(handle, **packed)


def cached(folder: Path) -> Iterator[Batch]:
    """The batches `predicted` saved, as dicts of levels, truth, winner (and presence)."""
    for path in sorted(folder.glob("batch-*.npz")):
        with np.load(path) as data:
            truth = np.unpackbits(data["truth"], axis=-1, count=int(data["width"]))
            batch: Batch = {
                "levels": data["levels"],
                "truth": truth.astype(bool),
                "winner": data["winner"],
            }
            if "presence" in data.files:
                batch["presence"] = data["presence"]
            yield batch
