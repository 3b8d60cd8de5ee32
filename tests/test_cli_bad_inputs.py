# ruff: noqa: E501
# (the catalogue is a table: one mistake a line, however long)
"""A catalogue of user mistakes, one per case, across every command and every input.

Each mistake must give exactly one line on stderr that names the file, row, key or option
at fault (a specific substring is asserted), the documented exit status (1, or 2 for config
and usage errors), no traceback, and leave every file and folder as it was: the world
below, the tiny dataset and the working directory are snapshotted before and after.

Most cases run in-process; a few run `python -m sever` in a subprocess, where Python's own
warnings (which pytest would otherwise swallow) reach stderr as they would for a user.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sever.config import config_dict, load_config
from sever.engine.trainer import train
from sever.model.build import build_model
from tests.kaggle.stub import without_credentials
from tests.support import cli_output, write_tiny

pytestmark = pytest.mark.slow

# The run and the crafted checkpoints use a small encoder: quick to save and to load.
SMALL = ["model.encoder=mobilenet_v2", "model.dropout=0"]


@dataclass(frozen=True)
class World:
    """Everything the cases point at; nothing in it may change."""

    root: Path
    data: Path
    run: Path
    tiny: Path

    def names(self, tmp: Path) -> dict[str, str]:
        """The placeholders of the cases' arguments and expected substrings."""
        return {
            "w": str(self.root),
            "data": str(self.data),
            "run": str(self.run),
            "tiny": str(self.tiny),
            "ck": str(self.root / "ckpt"),
            "y": str(self.root / "yml"),
            "img": str(self.root / "img"),
            "csv": str(self.root / "csv"),
            "tmp": str(tmp),
            "test": str(self.data / "test_images"),
        }


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def save_checkpoint(path: Path, config, **changes) -> None:
    """A checkpoint as the trainer writes it (model and config), with `changes` applied."""
    state = {
        "format": 1,
        "epoch": 1,
        "model": build_model(config.model, config.task).state_dict(),
        "config": config_dict(config),
    }
    state.update(changes)
    torch.save(state, path)


def image(path: Path, height: int, width: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))


@pytest.fixture(scope="module")
def world(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A tiny trained run (one step), crafted checkpoints and broken inputs of every kind."""
    root = tmp_path_factory.mktemp("world")
    tiny = write_tiny(root, tiny_data)
    overrides = [
        *SMALL,
        "trainer.epochs=1",
        "trainer.steps_per_epoch=1",
        "trainer.save_top_k=1",
        "trainer.tensorboard=false",
        "trainer.log_images=0",
    ]
    run = train(load_config(tiny, overrides))
    config = load_config(tiny, SMALL)

    ck = root / "ckpt"
    ck.mkdir()
    best = torch.load(run / "checkpoints" / "model_best.pth", weights_only=True)
    save_checkpoint(ck / "classifier.pth", load_config(tiny, [*SMALL, "task=classify"]))
    save_checkpoint(ck / "fpn.pth", load_config(tiny, [*SMALL, "model.arch=FPN"]))
    save_checkpoint(ck / "classes3.pth", load_config(tiny, [*SMALL, "model.classes=3"]))
    save_checkpoint(ck / "future.pth", config, format=99)
    norm = {**best, "config": {**best["config"], "data": {**best["config"]["data"]}}}
    norm["config"]["data"]["normalize"] = {"mean": 0.5, "std": 0.1}
    torch.save(norm, ck / "normalize.pth")
    misfit = {**best, "config": {**best["config"], "model": {**best["config"]["model"]}}}
    misfit["config"]["model"]["arch"] = "FPN"
    torch.save(misfit, ck / "misfit.pth")
    torch.save({**best, "config": {**best["config"], "trainer": {"epoch": 3}}}, ck / "badcfg.pth")
    torch.save(best["model"], ck / "state-dict.pth")
    torch.save({"model": {}, "config": {}, "args": argparse.Namespace(lr=1)}, ck / "namespace.pth")
    with open(ck / "plain.pkl", "wb") as f:
        pickle.dump({"a": argparse.Namespace(lr=1)}, f, protocol=4)
    (ck / "empty.pth").touch()
    write(ck / "text.pth", "not a checkpoint\n")
    whole = (run / "checkpoints" / "model_best.pth").read_bytes()
    (ck / "truncated.pth").write_bytes(whole[: len(whole) // 2])
    other = build_model(load_config(tiny, ["model.encoder=resnet18"]).model).encoder
    torch.save(other.state_dict(), ck / "resnet18-encoder.pth")
    only_last = root / "only-last" / "checkpoints"
    only_last.mkdir(parents=True)
    shutil.copy(run / "checkpoints" / "last.pth", only_last / "last.pth")
    (root / "kfold" / "fold0" / "checkpoints").mkdir(parents=True)
    (root / "kfold" / "fold1" / "checkpoints").mkdir(parents=True)
    # a copy of the run (files, not links) whose last.pth broke off halfway
    damaged = shutil.copytree(run, root / "damaged-run")
    last = damaged / "checkpoints" / "last.pth"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    empty_run = root / "empty-run"
    (empty_run / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "config.yml", empty_run / "config.yml")

    img = root / "img"
    (img / "empty").mkdir(parents=True)
    write(img / "broken" / "x.jpg", "not a jpeg\n")
    image(img / "odd" / "a.jpg", 64, 250)
    image(img / "oddstrip" / "a.jpg", 100, 250)
    manifest = '{"classes": 4, "postprocess": {}, "runtime": "%s", "input": {"divisible_by": 32, "trained_size": [64, 256]}}'
    write(img / "exported" / "broken.pt2", "not a model\n")
    write(img / "exported" / "broken.json", manifest % "torch.export")
    write(img / "exported" / "other.pt2", "not a model\n")
    write(img / "exported" / "other.json", manifest % "tensorrt")
    train_images = sorted((tiny_data / "train_images").iterdir())
    (img / "copied").mkdir()
    for path in train_images[:3]:
        shutil.copy(path, img / "copied" / path.name)
    # test_images/ beside a sample_submission.csv listing one image more, or a bad header
    tests = sorted((tiny_data / "test_images").iterdir())
    listed = "".join(f"{p.name}_{c},\n" for p in tests[:3] for c in (1, 2, 3, 4))
    write(img / "tmpl" / "sample_submission.csv", "ImageId_ClassId,EncodedPixels\n" + listed)
    write(img / "badtmpl" / "sample_submission.csv", "Image,Pixels\na.jpg,\n")
    for folder in ("tmpl", "badtmpl"):
        (img / folder / "test_images").mkdir()
        for path in tests[:2]:
            shutil.copy(path, img / folder / "test_images" / path.name)

    y = root / "yml"
    for name, text in YAML.items():
        write(y / name, text.format(run=run, ck=ck, data=tiny_data, y=y))
    (y / "folder.yml").mkdir()
    (y / "binary.yml").write_bytes(whole[:2000])

    c = root / "csv"
    for name, text in CSVS.items():
        write(c / name, text.format(test=tests[0].name, train=train_images[0].name))
    (c / "zip.csv").write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(200, 256)) * 4)
    bad_data = root / "datasets"
    shutil.copytree(tiny_data, bad_data / "no-images", ignore=shutil.ignore_patterns("*.jpg"))
    wide = bad_data / "wide-missing"
    shutil.copytree(tiny_data, wide)
    rows = [
        f"{p.name}_{cl}," for p in sorted((wide / "train_images").iterdir()) for cl in (1, 2, 3, 4)
    ]
    write(wide / "train.csv", "ImageId_ClassId,EncodedPixels\n" + "\n".join(rows[:-2]) + "\n")
    shutil.copytree(tiny_data / "train_images", bad_data / "images-only" / "train_images")
    # datasets whose last training image is truncated, of another size, or no image at all
    last = train_images[-1].name
    for name, spoil in {
        "truncated": lambda p: p.write_bytes(p.read_bytes()[:-300]),
        "wrong-size": lambda p: image(p, 64, 320),
        "not-an-image": lambda p: p.write_text("not an image"),
    }.items():
        shutil.copytree(tiny_data, bad_data / name)
        spoil(bad_data / name / "train_images" / last)
    return World(root, tiny_data, run, tiny)


YAML = {
    "bad.yml": "name: tiny\ntrainer:\n  epochs: [\n",
    "list.yml": "- name: tiny\n",
    "noname.yml": "seed: 1\n",
    "dup.yml": "name: tiny\nseed: 1\nseed: 2\n",
    "dup-section.yml": "name: tiny\ntrainer:\n  epochs: 2\ndata:\n  workers: 0\ntrainer:\n  amp: off\n",
    "bad-lr.yml": "optimizer:\n  encoder:\n    lr: fast\n",
    "base-missing.yml": "extends: nowhere/base.yml\nname: tiny\n",
    "cycle-a.yml": "extends: cycle-b.yml\nname: tiny\n",
    "cycle-b.yml": "extends: cycle-a.yml\n",
    "extends-list.yml": "extends: [a.yml]\nname: tiny\n",
    # ensemble files
    "ens-bad.yml": "models:\n  - run: {run}\n tta: hflip\n",
    "ens-empty.yml": "models: []\n",
    "ens-no-models.yml": "tta: hflip\n",
    "ens-both.yml": "models:\n  - run: {run}\n    checkpoint: {run}/checkpoints/last.pth\n",
    "ens-typo.yml": "models:\n  - run: {run}\n    weigth: 2\n",
    "ens-tta.yml": "models:\n  - run: {run}\ntta: sideways\n",
    "ens-averaging.yml": "models:\n  - run: {run}\naveraging: median\n",
    "ens-negative.yml": "models:\n  - run: {run}\n    weight: -1\naveraging: weighted\n",
    "ens-run-missing.yml": "models:\n  - run: {run}\n  - run: nowhere/run\n",
    "ens-ckpt-missing.yml": "models:\n  - checkpoint: {ck}/nothing.pth\n",
    "ens-epoch.yml": "models:\n  - run: {run}\n    epoch: 7\n",
    "ens-weights.yml": "models:\n  - run: {run}\n    weight: 2\n  - run: {run}\n    last: true\n",
    "ens-weighted.yml": (
        "models:\n  - run: {run}\n    weight: 2\n  - run: {run}\n    last: true\naveraging: weighted\n"
    ),
    "ens-zero.yml": "models:\n  - run: {run}\n    weight: 0\naveraging: weighted\n",
    "ens-classifier-weight.yml": (
        "models:\n  - run: {run}\n  - checkpoint: {ck}/classifier.pth\n    weight: 0.5\n"
        "averaging: weighted\n"
    ),
    "ens-dup.yml": "models:\n  - run: {run}\nmodels:\n  - run: {run}\n",
    "ens-pp-missing.yml": "models:\n  - run: {run}\npostprocess: nowhere/pp.yml\n",
    "ens-entry.yml": "models:\n  - {run}\n",
    "ens-pp-number.yml": "models:\n  - run: {run}\npostprocess: 5\n",
    "ens-pp-inline.yml": "models:\n  - run: {run}\npostprocess:\n  threshold: 2\n",
    "ens-ok.yml": "models:\n  - run: {run}\n",
    # post-processing files
    "pp-bad.yml": "threshold: [0.5, 0.5\n",
    "pp-typo.yml": "treshold: 0.4\n",
    "pp-short.yml": "threshold: [0.5, 0.5]\n",
    "pp-range.yml": "threshold: 1.5\n",
    "pp-negative.yml": "min_pixels: -100\n",
    "pp-scale.yml": "scale_c: 0.5\n",
    "pp-list.yml": "- 0.5\n- 0.5\n",
    "pp-gate.yml": "gate: 0.5\n",
    # logging configurations
    "logging-bad.yml": "version: 1\nhandlers: [\n",
    "logging-class.yml": "version: 1\nhandlers:\n  h:\n    class: nowhere.Handler\n",
}

CSVS = {
    "sub.csv": "ImageId,ClassId,EncodedPixels\n{test},1,1 4\n",
    "header.csv": "Image,Class,Pixels\n{test},1,1 4\n",
    "rle.csv": "ImageId,ClassId,EncodedPixels\n{test},1,1 4 9\n",
    "unknown.csv": "ImageId,ClassId,EncodedPixels\nnowhere.jpg,1,1 4\n",
    "dup.csv": "ImageId,ClassId,EncodedPixels\n{test},1,1 4\n{test},1,9 4\n",
    "class5.csv": "ImageId,ClassId,EncodedPixels\n{test},5,1 4\n",
    "wide-sub.csv": "ImageId_ClassId,EncodedPixels\n{test}_1,1 4\n{test}_2,\n",
    "truth-wide.csv": "".join(
        ["ImageId_ClassId,EncodedPixels\n"] + [f"{{test}}_{c},\n" for c in (1, 2, 3, 4)]
    ),
    "truth-long.csv": "ImageId,ClassId,EncodedPixels\n{test},1,1 4\n",
    "truth-empty.csv": "ImageId_ClassId,EncodedPixels\n",
    "empty.csv": "",
}


@dataclass(frozen=True)
class Case:
    """One mistake: `sever ARGS` (placeholders as in World.names) and what it must give."""

    id: str
    code: int
    needle: str
    args: tuple[str, ...]


def in_cwd(name: str, text: str) -> Callable[[Path, World], None]:
    return lambda tmp, w: write(tmp / name, text).touch()


def copy_yaml(name: str, target: str) -> Callable[[Path, World], None]:
    return lambda tmp, w: shutil.copy(w.root / "yml" / name, tmp / target)


def kaggle_json(text: str) -> Callable[[Path, World], None]:
    return lambda tmp, w: write(tmp / "kaggle-config" / "kaggle.json", text).touch()


def vanished_cwd(tmp: Path, world: World) -> None:
    gone = tmp / "gone"
    gone.mkdir()
    os.chdir(gone)
    gone.rmdir()


# Shorthands expanded in the table's arguments.
SHORT = {
    "PREDICT": "predict -r {run} --images {test} --out {tmp}/sub.csv",
    "PSEUDO": "pseudo-label -r {run} --out {tmp}/pseudo.csv",
    "ENSEMBLE": "predict --images {test} --out {tmp}/sub.csv -c",
    "PP": "predict -r {run} --images {test} --out {tmp}/sub.csv --postprocess",
    "CONFIG": "config -c {tiny} -o",
    "FROM": "predict --images {test} --out {tmp}/s.csv -r",
}

# id | exit status | a substring of the one stderr line | the arguments (shlex; SHORT first)
TABLE = """
usage-unknown-command | 2 | No such command 'trian' | trian
usage-unknown-option | 2 | No such option '--foo' | PREDICT --foo
usage-missing-option | 2 | Missing option '--out' | predict -r {run} --images {test}
usage-bad-choice | 2 | 'sideways' is not one of | PREDICT --tta sideways
usage-not-a-number | 2 | '--batch-size' | PREDICT --batch-size many
usage-negative-workers | 2 | '--workers' | PREDICT --workers -1
usage-missing-argument | 2 | Missing argument 'TRUTH' | score {csv}/sub.csv
usage-extra-argument | 2 | unexpected extra argument (extra) | check-data {data} extra
usage-train-without-config | 2 | give -c EXPERIMENT.yml, or --resume RUN | train
usage-gpus-zero | 2 | '--gpus' | train -c {tiny} --gpus 0
usage-bench-steps-zero | 2 | '--steps' | bench -c {tiny} --steps 0
usage-synth-height | 2 | '--height': 16 is not in the range x>=32 | synth {tmp}/new --height 16
usage-synth-n-train | 2 | '--n-train' | synth {tmp}/new --n-train 0
usage-format-choice | 2 | '--format' | PREDICT --format csv
usage-hi-not-a-number | 2 | '--hi' | PSEUDO --images {test} --hi high
usage-tune-without-run | 2 | give -r RUN | tune
usage-dataset-with-model-target | 2 | --dataset goes with --target dataset | upload -r {run} --dataset me/x --target model --dry-run
usage-resume-with-folds | 2 | --folds starts new runs | train --resume {run} --folds all
cwd-deleted | 1 | the current directory no longer exists | config -c {tiny}
logging-yml-not-yaml | 2 | logging.yml: line 3: not valid YAML | config -c {tiny}
logging-yml-bad-handler | 2 | logging.yml: not a logging configuration (Unable to configure handler 'h') | config -c {tiny}
logging-yml-a-list | 2 | logging.yml: not a logging configuration (expected a mapping | config -c {tiny}
sever-logging-missing | 2 | SEVER_LOGGING=nowhere.yml: no such file | config -c {tiny}
sever-logging-a-folder | 2 | SEVER_LOGGING={tmp}: is a folder | config -c {tiny}
config-missing | 2 | nowhere.yml: config file not found | config -c nowhere.yml
config-is-a-folder | 2 | folder.yml: is a folder; expected a config file | config -c {y}/folder.yml
config-not-text | 2 | binary.yml: not a text file | config -c {y}/binary.yml
config-not-yaml | 2 | bad.yml: line 4: not valid YAML | config -c {y}/bad.yml
config-a-list | 2 | list.yml: expected a mapping of keys at the top level | config -c {y}/list.yml
config-duplicate-key | 2 | dup.yml: line 3: duplicate key 'seed' (first on line 2) | config -c {y}/dup.yml
config-duplicate-section | 2 | dup-section.yml: line 6: duplicate key 'trainer' (first on line 2) | config -c {y}/dup-section.yml
config-second-file-blamed | 2 | bad-lr.yml: optimizer.encoder.lr: expected a number, got 'fast' | config -c {tiny} -c {y}/bad-lr.yml
config-extends-missing | 2 | nowhere/base.yml: config file not found | config -c {y}/base-missing.yml
config-extends-cycle | 2 | cycle-a.yml: extends itself | config -c {y}/cycle-a.yml
config-extends-a-list | 2 | extends-list.yml: extends: expected a file name | config -c {y}/extends-list.yml
config-train-creates-nothing | 2 | bad-lr.yml: optimizer.encoder.lr | train -c {tiny} -c {y}/bad-lr.yml
key-name-missing | 2 | noname.yml: name: missing required key | config -c {y}/noname.yml
key-unknown | 2 | -o trainer.epoch=3: unknown key 'trainer.epoch' (did you mean 'trainer.epochs'?) | CONFIG trainer.epoch=3
key-unknown-section | 2 | unknown key 'optimiser' (did you mean 'optimizer'?) | CONFIG optimiser.type=sgd
key-not-a-number | 2 | optimizer.encoder.lr: expected a number, got 'fast' | CONFIG optimizer.encoder.lr=fast
key-not-an-integer | 2 | trainer.epochs: expected an integer, got 2.5 | CONFIG trainer.epochs=2.5
key-not-a-bool | 2 | data.check: expected true or false, got 'maybe' | CONFIG data.check=maybe
key-section-as-value | 2 | -o trainer=5: trainer: expected a mapping of keys | CONFIG trainer=5
key-name-null | 2 | -o name=null: name: expected a string, got None | CONFIG name=null
key-name-with-slash | 2 | -o name=a/b: name: | CONFIG name=a/b
key-crop-not-32 | 2 | -o data.crop=[250,128]: data.crop: 250 is not a multiple of 32 (nearest valid: 224 or 256) | CONFIG data.crop=[250,128]
key-crop-larger-than-image | 2 | -o data.crop=[128,128]: data.crop [128, 128] is larger than data.image_size | CONFIG data.crop=[128,128]
key-image-size-three | 2 | data.image_size: expected a list of 2 values | CONFIG data.image_size=[64,256,3]
key-fold-without-folds | 2 | -o data.fold=1: data.fold is set but data.folds is not | CONFIG data.fold=1
key-fold-out-of-range | 2 | -o data.fold=5: data.fold 5 is out of range for 5 folds | CONFIG data.folds=5 -o data.fold=5
key-one-fold | 2 | -o data.folds=1: data.folds: | CONFIG data.folds=1
key-val-fraction | 2 | data.val_fraction: | CONFIG data.val_fraction=1.5
key-defect-crop | 2 | -o data.defect_crop=1.5: data.defect_crop: expected a value less than or equal to 1, got 1.5 | CONFIG data.defect_crop=1.5
key-augment-unknown | 2 | data.augment: unknown augmentation recipe 'heavy' | CONFIG data.augment=heavy
key-sampler-unknown | 2 | data.sampler: unknown sampler 'balanced' | CONFIG data.sampler=balanced
key-normalize-std-zero | 2 | data.normalize.std: | CONFIG data.normalize.std=0
key-pseudo-csv-missing | 2 | data.pseudo.csv: file not found: nowhere.csv | CONFIG "data.pseudo={{csv: nowhere.csv, images: .}}"
key-pseudo-images-missing | 2 | data.pseudo.images: folder not found: nowhere | CONFIG "data.pseudo={{csv: {csv}/sub.csv, images: nowhere}}"
key-arch-unknown | 2 | model.arch: unknown architecture 'unet' (did you mean 'Unet'?) | CONFIG model.arch=unet
key-encoder-unknown | 2 | model.encoder: unknown encoder 'resnet-18' | CONFIG model.encoder=resnet-18
key-arch-param-unknown | 2 | -o model.arch_params.decoder_chanels=8: model.arch_params: unknown Unet argument 'decoder_chanels' (did you mean 'decoder_channels'?) | CONFIG model.arch_params.decoder_chanels=8
key-arch-param-type | 2 | model.arch_params: decoder_attention_type: expected | CONFIG model.arch_params.decoder_attention_type=1
key-arch-param-sever-owned | 2 | model.arch_params: 'classes' is set by sever (model.classes); remove it | CONFIG model.arch_params.classes=2
key-arch-param-cannot-run | 2 | model.arch_params: Unet with {{'decoder_channels': [64, 32, 16, 8, 8], 'decoder_attention_type': 'scse'}} builds a model that cannot run | train -c {tiny} -o "model.arch_params={{decoder_channels: [64, 32, 16, 8, 8], decoder_attention_type: scse}}"
key-weights-file-missing | 2 | model.encoder_weights: expected 'imagenet', null or an existing weights file | CONFIG model.encoder_weights=nowhere.pth
key-input-channel | 2 | model.input_channel: expected one of | CONFIG model.input_channel=rgb
key-dropout-one | 2 | model.dropout: | CONFIG model.dropout=1
key-pos-weight-length | 2 | model.class_head.pos_weight: expected a list of 4 values | CONFIG model.class_head.pos_weight=[1,2]
key-loss-all-zero | 2 | loss: expected at least one loss term with a weight above 0 | CONFIG loss.bce=0 -o loss.dice=0
key-loss-negative | 2 | loss.dice: | CONFIG loss.dice=-1
key-optimizer-unknown | 2 | unknown optimizer 'radm' (did you mean 'radam'?) | CONFIG optimizer.type=radm
key-lr-zero | 2 | optimizer.decoder.lr: | CONFIG optimizer.decoder.lr=0
key-scheduler-unknown | 2 | scheduler.type: unknown scheduler 'cosine' | CONFIG scheduler.type=cosine
key-rolloff-zero | 2 | -o scheduler.rolloff_epochs=0: scheduler.rolloff_epochs: expected a value greater than 0, got 0 | CONFIG scheduler.type=flat-logistic -o scheduler.rolloff_epochs=0
key-rolloff-misspelt | 2 | unknown key 'scheduler.rollof_epochs' (did you mean 'scheduler.rolloff_epochs'?) | CONFIG scheduler.rollof_epochs=100
key-device | 2 | trainer.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu' | CONFIG trainer.device=gpu
key-amp | 2 | trainer.amp: expected one of | CONFIG trainer.amp=fp8
key-monitor | 2 | trainer.monitor: expected 'max METRIC' or 'min METRIC' | CONFIG trainer.monitor=dice
key-monitor-dice-of-classifier | 2 | a classifier (task: classify) has no val_dice_mean | CONFIG task=classify -o "trainer.monitor=max val_dice_mean"
key-monitor-presence-without-head | 2 | val_f1_mean needs class presence | CONFIG "trainer.monitor=max val_f1_mean"
key-task | 2 | task: expected one of | CONFIG task=detect
key-min-pixels-three | 2 | trainer.min_pixels: | CONFIG trainer.min_pixels=[1,2,3]
override-without-equals | 2 | -o trainer.epochs: expected KEY.PATH=VALUE | CONFIG trainer.epochs
override-bad-key | 2 | -o 1trainer=3: expected KEY.PATH=VALUE | CONFIG 1trainer=3
ensemble-missing | 2 | nowhere.yml: ensemble file not found | ENSEMBLE nowhere.yml
ensemble-not-yaml | 2 | ens-bad.yml: line 3: not valid YAML | ENSEMBLE {y}/ens-bad.yml
ensemble-no-models | 2 | ens-empty.yml: models: | ENSEMBLE {y}/ens-empty.yml
ensemble-models-missing | 2 | ens-no-models.yml: models: missing required key | ENSEMBLE {y}/ens-no-models.yml
ensemble-run-and-checkpoint | 2 | ens-both.yml: models.0: each model needs exactly one of 'run' or 'checkpoint' | ENSEMBLE {y}/ens-both.yml
ensemble-unknown-key | 2 | ens-typo.yml: unknown key 'models.0.weigth' | ENSEMBLE {y}/ens-typo.yml
ensemble-tta | 2 | ens-tta.yml: tta: expected one of | ENSEMBLE {y}/ens-tta.yml
ensemble-averaging | 2 | ens-averaging.yml: averaging: expected one of | ENSEMBLE {y}/ens-averaging.yml
ensemble-negative-weight | 2 | ens-negative.yml: models.0.weight: | ENSEMBLE {y}/ens-negative.yml
ensemble-run-missing | 1 | ens-run-missing.yml: models.1: run: nowhere/run: no such run directory | ENSEMBLE {y}/ens-run-missing.yml
ensemble-checkpoint-missing | 1 | ens-ckpt-missing.yml: models.0: checkpoint: | ENSEMBLE {y}/ens-ckpt-missing.yml
ensemble-epoch-not-kept | 1 | ens-epoch.yml: models.0: | ENSEMBLE {y}/ens-epoch.yml
ensemble-weights-ignored | 2 | ens-weights.yml: averaging: mean ignores the models' weights (2, 1) | ENSEMBLE {y}/ens-weights.yml
ensemble-weights-ignored-by-option | 2 | ens-weighted.yml: --averaging rms ignores the models' weights | ENSEMBLE {y}/ens-weighted.yml --averaging rms
ensemble-zero-weights | 2 | ens-zero.yml: every segmentation model has weight 0 | ENSEMBLE {y}/ens-zero.yml
ensemble-classifier-weight | 2 | classifier.pth is a classifier: its weight 0.5 would be ignored | ENSEMBLE {y}/ens-classifier-weight.yml
ensemble-and-runs | 2 | give either -c ENSEMBLE.yml or -r RUN, not both | ENSEMBLE {y}/ens-weighted.yml -r {run}
ensemble-is-an-experiment | 2 | tiny.yml: this is an experiment config | ENSEMBLE {tiny}
ensemble-duplicate-key | 2 | ens-dup.yml: line 3: duplicate key 'models' | ENSEMBLE {y}/ens-dup.yml
ensemble-postprocess-missing | 2 | nowhere/pp.yml: post-processing file not found | ENSEMBLE {y}/ens-pp-missing.yml
ensemble-entry-not-a-mapping | 2 | ens-entry.yml: models.0: expected a mapping of keys | ENSEMBLE {y}/ens-entry.yml
ensemble-postprocess-a-number | 2 | ens-pp-number.yml: postprocess: expected a post-processing file or its mapping, got 5 | ENSEMBLE {y}/ens-pp-number.yml
ensemble-postprocess-inline | 2 | ens-pp-inline.yml: postprocess: PostProcess.threshold | ENSEMBLE {y}/ens-pp-inline.yml
postprocess-missing | 2 | nowhere.yml: post-processing file not found | PP nowhere.yml
postprocess-a-folder | 2 | folder.yml: is a folder; expected a post-processing file | PP {y}/folder.yml
postprocess-not-yaml | 2 | pp-bad.yml: line 2: not valid YAML | PP {y}/pp-bad.yml
postprocess-unknown-key | 2 | pp-typo.yml: PostProcess: unknown key 'treshold' | PP {y}/pp-typo.yml
postprocess-two-thresholds | 2 | pp-short.yml: PostProcess.threshold: expected 4 values | PP {y}/pp-short.yml
postprocess-threshold-range | 2 | pp-range.yml: PostProcess.threshold | PP {y}/pp-range.yml
postprocess-negative-size | 2 | pp-negative.yml: PostProcess.min_pixels | PP {y}/pp-negative.yml
postprocess-scale-below-one | 2 | pp-scale.yml: PostProcess.scale_c: expected null or a number >= 1 | PP {y}/pp-scale.yml
postprocess-a-list | 2 | pp-list.yml: PostProcess: expected a mapping, got list | PP {y}/pp-list.yml
postprocess-gate-without-presence | 1 | gates or scales by class presence, but no model gives it | PP {y}/pp-gate.yml
run-missing | 1 | nowhere: no such run directory or checkpoint | FROM nowhere
run-a-data-folder | 1 | not a run directory (no checkpoints/) | FROM {data}
run-kfold-parent | 1 | kfold: a k-fold parent, not a run; give its folds | FROM {w}/kfold
run-experiment-folder | 1 | holds runs, not a run; give one of them | FROM {w}/saved/tiny
run-epoch-not-kept | 1 | no checkpoint for epoch 7; kept epochs: 1 | PREDICT -e 7
run-without-best | 1 | only-last/checkpoints/model_best.pth: no best checkpoint (the run never validated?); use --last | FROM {w}/only-last
checkpoint-text | 1 | text.pth: not a readable checkpoint (not a PyTorch file) | FROM {ck}/text.pth
checkpoint-empty | 1 | empty.pth: not a readable checkpoint (the file is empty) | FROM {ck}/empty.pth
checkpoint-truncated | 1 | truncated.pth: not a readable checkpoint (the file is damaged or truncated | FROM {ck}/truncated.pth
checkpoint-pickled-object | 1 | namespace.pth: not a readable checkpoint (it holds a pickled argparse.Namespace | FROM {ck}/namespace.pth
checkpoint-plain-pickle | 1 | plain.pkl: not a readable checkpoint (not a PyTorch file) | FROM {ck}/plain.pkl
checkpoint-bare-state-dict | 1 | state-dict.pth: not a sever checkpoint (no 'model' and 'config') | FROM {ck}/state-dict.pth
checkpoint-newer-format | 1 | future.pth: checkpoint format 99 is newer than this sever understands | FROM {ck}/future.pth
checkpoint-bad-config | 2 | badcfg.pth (config): unknown key 'trainer.epoch' | FROM {ck}/badcfg.pth
checkpoint-weights-misfit | 1 | misfit.pth: weights do not fit the config saved with them | FROM {ck}/misfit.pth
checkpoints-other-normalisation | 1 | normalize.pth: data.normalize differs | PREDICT -r {ck}/normalize.pth
checkpoints-other-classes | 1 | classes3.pth: model.classes 3 differs | PREDICT -r {ck}/classes3.pth
checkpoints-only-classifiers | 1 | every model given is a classifier | FROM {ck}/classifier.pth
device-unknown | 2 | --device foo: expected auto, cpu, cuda, cuda:N or mps | PREDICT --device foo
images-missing | 1 | nowhere: image folder not found | predict -r {run} --images nowhere --out {tmp}/s.csv
images-a-file | 1 | sub.csv: is a file; expected a folder of images | predict -r {run} --images {csv}/sub.csv --out {tmp}/s.csv
images-none | 1 | empty: no images (.jpg, .jpeg, .png) in this folder | predict -r {run} --images {img}/empty --out {tmp}/s.csv
images-unreadable | 1 | broken/x.jpg: not a readable image | predict -r {run} --images {img}/broken --out {tmp}/s.csv
images-size-not-32 | 1 | odd/a.jpg: 64x250 is not a multiple of 32, which FPN needs; pad the images to 64x256 | predict -r {ck}/fpn.pth --images {img}/odd --out {tmp}/s.csv
strip-side-not-32 | 1 | oddstrip/a.jpg: 100x250 is tiled by 64x256, but its side of 250 is shorter than the tile and not a multiple of 32 | predict -r {ck}/fpn.pth --images {img}/oddstrip --out {tmp}/s.csv
tile-not-32 | 2 | --tile 50x100: 50 is not a multiple of 32, which the models need | predict -r {ck}/fpn.pth --images {test} --out {tmp}/s.csv --tile 50x100
tile-not-a-size | 2 | --tile 256: expected HEIGHTxWIDTH in pixels | PREDICT --tile 256
overlap-as-large-as-the-tile | 2 | --overlap 128: expected 0 to 127 pixels for tiles of 64x128 | PREDICT --tile 64x128 --overlap 128
strip-with-save-probs | 2 | is larger than a tile (64x128); saved probabilities are for images of one size | PREDICT --tile 64x128 --save-probs {tmp}/probs
export-on-a-gpu | 2 | --device cuda: sever export runs on the CPU | export -r {run} --device cuda --out {tmp}/m.onnx
exported-with-device | 2 | --exported: the model runs where its runtime puts it | predict --exported {img}/exported/broken.pt2 --device cpu --images {test} --out {tmp}/s.csv
exported-does-not-load | 1 | broken.pt2: does not load as torch.export | predict --exported {img}/exported/broken.pt2 --images {test} --out {tmp}/s.csv
exported-unknown-runtime | 1 | other.json: not a sever export manifest (runtime 'tensorrt', expected one of onnxruntime, torch.export, aoti) | predict --exported {img}/exported/other.pt2 --images {test} --out {tmp}/s.csv
export-unknown-format | 2 | --out {tmp}/m.bin: expected a .onnx or a .pt2 file name | export -r {run} --out {tmp}/m.bin
export-aot-onnx | 2 | --out {tmp}/m.onnx: --aot compiles a .pt2; give a .pt2 file name | export -r {run} --aot --out {tmp}/m.onnx
from-probs-with-tile | 2 | --from-probs: drop --overlays, --save-probs, --tile and --overlap | predict --from-probs nowhere --tile 64x128 --out {tmp}/s.csv
images-template-mismatch | 1 | tmpl/sample_submission.csv: image | predict -r {run} --images {img}/tmpl/test_images --out {tmp}/s.csv
images-template-header | 1 | badtmpl/sample_submission.csv: header Image,Pixels is neither | predict -r {run} --images {img}/badtmpl/test_images --out {tmp}/s.csv
out-a-folder | 2 | --out {tmp}: is a folder; give a file name inside it | predict -r {run} --images {test} --out {tmp}
out-under-a-file | 2 | sub.csv/s.csv: {csv}/sub.csv is a file, not a folder | predict -r {run} --images {test} --out {csv}/sub.csv/s.csv
overlays-a-file | 2 | --overlays {csv}/sub.csv: is a file, not a folder | PREDICT --overlays {csv}/sub.csv
pseudo-training-folder | 2 | --images {data}/train_images: the training images of | PSEUDO --images {data}/train_images
pseudo-labelled-copies | 2 | 3 of its 3 images are labelled training images in | PSEUDO --images {img}/copied
pseudo-hi-below-lo | 2 | --hi 0.1 is below --lo 0.2 | PSEUDO --images {test} --hi 0.1 --lo 0.2
pseudo-hi-above-one | 2 | --hi 2.0: expected a probability in [0, 1] | PSEUDO --images {test} --hi 2
pseudo-out-a-folder | 2 | --out {tmp}: is a folder | pseudo-label -r {run} --images {test} --out {tmp}
pseudo-sibling-a-folder | 2 | pseudo-images.txt is a folder | PSEUDO --images {test}
score-submission-missing | 1 | nowhere.csv: file not found | score nowhere.csv {csv}/truth-wide.csv
score-submission-a-folder | 1 | {csv}: is a folder; expected a CSV file | score {csv} {csv}/truth-wide.csv
score-not-a-csv | 1 | zip.csv: not a readable CSV | score {csv}/zip.csv {csv}/truth-wide.csv
score-empty-file | 1 | empty.csv: not a readable CSV | score {csv}/empty.csv {csv}/truth-wide.csv
score-header | 1 | header.csv: header Image,Class,Pixels is neither the wide format | score {csv}/header.csv {csv}/truth-wide.csv
score-bad-rle | 1 | rle.csv: line 2: ImageId | score {csv}/rle.csv {csv}/truth-wide.csv
score-unknown-image | 1 | unknown.csv: line 2: ImageId nowhere.jpg: not an image of | score {csv}/unknown.csv {csv}/truth-wide.csv
score-duplicate-pair | 1 | dup.csv: line 3: ImageId | score {csv}/dup.csv {csv}/truth-wide.csv
score-class-five | 1 | class5.csv: line 2: ImageId | score {csv}/class5.csv {csv}/truth-wide.csv
score-wide-incomplete | 1 | wide-sub.csv: ImageId | score {csv}/wide-sub.csv {csv}/truth-wide.csv
score-long-truth-without-images | 1 | truth-long.csv: the long format lists only defects | score {csv}/sub.csv {csv}/truth-long.csv
score-images-of-another-set | 1 | --images {data}/train_images: image | score {csv}/sub.csv {csv}/truth-long.csv --images {data}/train_images
score-truth-without-images | 1 | truth-empty.csv: no images to score | score {csv}/sub.csv {csv}/truth-empty.csv
check-missing | 1 | nowhere: data folder not found | check-data nowhere
check-a-file | 1 | sub.csv: is a file, not a folder | check-data {csv}/sub.csv
check-the-image-folder | 1 | train_images: not a dataset (no train.csv or train_images/) | check-data {data}/train_images
check-no-images | 1 | no-images/train_images: no images | check-data {w}/datasets/no-images
check-wide-rows-missing | 1 | no row for ClassId 3, 4 (the wide format has four rows per image) | check-data {w}/datasets/wide-missing
check-no-train-csv | 1 | images-only/train.csv: file not found | check-data {w}/datasets/images-only
synth-not-empty | 1 | already exists and is not empty; choose another folder | synth {data}
synth-a-file | 2 | OUT_DIR {csv}/sub.csv: is a file, not a folder | synth {csv}/sub.csv
synth-under-a-file | 2 | OUT_DIR {csv}/sub.csv/data: {csv}/sub.csv is a file, not a folder | synth {csv}/sub.csv/data
bench-default-out-a-folder | 2 | --out bench-tiny.json: is a folder | bench -c {tiny} --steps 2
bench-out-a-folder | 2 | --out {tmp}: is a folder | bench -c {tiny} --out {tmp} --steps 1
bench-weights-not-torch | 1 | sub.csv: cannot read weights (not a PyTorch file) | bench -c {tiny} -o model.encoder_weights={csv}/sub.csv
bench-weights-other-encoder | 1 | resnet18-encoder.pth: does not fit encoder mobilenet_v2 | bench -c {tiny} -o model.encoder=mobilenet_v2 -o model.encoder_weights={ck}/resnet18-encoder.pth
bench-imagenet-offline | 1 | encoder resnet18: cannot download its imagenet weights | bench -c {tiny} -o model.encoder_weights=imagenet
tune-run-missing | 1 | nowhere: no such run directory or checkpoint | tune -r nowhere
tune-out-a-folder | 2 | --out {tmp}: is a folder | tune -r {run} --out {tmp}
upload-run-missing | 1 | nowhere: no such run directory or checkpoint | upload -r nowhere --dry-run
upload-not-a-run | 1 | not a run directory (no config.yml) | upload -r {data} --dry-run
upload-no-checkpoints | 1 | empty-run: this run has no checkpoints | upload -r {w}/empty-run --dry-run
upload-epoch-not-kept | 1 | no checkpoint for epoch 9; kept epochs: 1 | upload -r {run} -e 9 --dry-run
upload-handle-form | 1 | --dataset sever: expected OWNER/SLUG | upload -r {run} --dataset sever --dry-run
upload-handle-slug | 1 | 'Bad_Slug' is not a Kaggle slug | upload -r {run} --dataset me/Bad_Slug --dry-run
upload-staging-default-a-file | 2 | --staging-dir upload/tiny/ | upload -r {run} --dry-run
upload-staging-under-a-file | 2 | --staging-dir {csv}/sub.csv/ | upload -r {run} --staging-dir {csv}/sub.csv --dry-run
upload-staging-on-proc | 2 | --staging-dir /proc/up/tiny/ | upload -r {run} --staging-dir /proc/up --dry-run
upload-no-credentials | 1 | no Kaggle credentials: set KAGGLE_API_TOKEN | upload -r {run}
upload-kaggle-json-not-json | 1 | kaggle.json: not valid JSON (at line 1 column | upload -r {run}
upload-kaggle-json-without-key | 1 | kaggle.json: no 'key' in it | upload -r {run}
download-into-a-file | 2 | DATA_DIR {csv}/sub.csv: is a file, not a folder | download {csv}/sub.csv
download-no-credentials | 1 | no Kaggle credentials | download {tmp}/data
download-kaggle-json-a-list | 1 | kaggle.json: expected {{"username": ..., "key": ...}}, found a list | download {tmp}/data
train-resume-and-config | 1 | --resume continues a run with its own config.yml: drop -c | train --resume {run} -c {tiny}
train-folds-without-data-folds | 2 | --folds | train -c {tiny} --folds all
train-folds-spec | 2 | --folds 0-5 | train -c {tiny} -o data.folds=2 --folds 0-5
train-data-dir-missing | 1 | {tmp}/nowhere: data folder not found (data.dir) | train -c {tiny} -o data.dir={tmp}/nowhere
train-image-truncated | 1 | truncated JPEG (no end-of-image marker); fix or remove the image | train -c {tiny} -o data.dir={w}/datasets/truncated
train-image-wrong-size | 1 | size 64x320, but data.image_size is 64x256 | train -c {tiny} -o data.dir={w}/datasets/wrong-size
train-image-not-an-image | 1 | not-an-image/train_images/ | train -c {tiny} -o data.dir={w}/datasets/not-an-image
train-no-validation-image | 2 | data.val_fraction 0.01 leaves no validation image; raise it | train -c {tiny} -o data.val_fraction=0.01
train-batch-larger-than-data | 1 | trainer.batch_size 64 is larger than the | train -c {tiny} -o trainer.batch_size=64
train-save-dir-under-a-file | 2 | trainer.save_dir: {csv}/sub.csv is a file, not a folder | train -c {tiny} -o trainer.save_dir={csv}/sub.csv/runs
train-save-dir-on-proc | 2 | trainer.save_dir: cannot write in /proc (no such file or directory) | train -c {tiny} -o trainer.save_dir=/proc/saved
train-device-without-cuda | 2 | trainer.device: cuda was asked for but CUDA is not available | train -c {tiny} -o trainer.device=cuda
train-device-garbage | 2 | trainer.device: expected auto, cpu, cuda, cuda:N or mps | train -c {tiny} -o trainer.device=gpu0
train-weights-not-torch | 1 | text.pth: cannot read weights | train -c {tiny} -o model.encoder_weights={ck}/text.pth
train-monitor-not-computed | 2 | val_precision_mean | train -c {tiny} -o model.class_head.enabled=true -o "trainer.monitor=max val_precision_mean"
train-monitor-without-heads | 2 | trainer.monitor: val_f1_mean needs class presence | train -c {tiny} -o "trainer.monitor=max val_f1_mean"
train-resume-missing | 1 | {tmp}/nowhere: no such run directory or checkpoint (--resume) | train --resume {tmp}/nowhere
train-resume-not-a-run | 1 | {data}: not a run directory (no config.yml) | train --resume {data}
train-resume-damaged-checkpoint | 1 | truncated.pth | train --resume {ck}/truncated.pth
train-resume-truncated-last | 1 | the newest intact checkpoint is epoch 1's: sever train --resume {w}/damaged-run/checkpoints/checkpoint-epoch1.pth | train --resume {w}/damaged-run
train-resume-state-dict | 1 | state-dict.pth: not a sever checkpoint | train --resume {ck}/state-dict.pth
train-resume-changes-the-model | 2 | -o model.encoder: a run resumes with its own model.encoder | train --resume {run} -o model.encoder=resnet34
train-resume-changes-the-optimiser | 2 | -o optimizer.encoder.lr: a run resumes with its own | train --resume {run} -o optimizer.encoder.lr=0.1
train-resume-changes-the-split | 2 | -o data.val_fraction: a run resumes with its own | train --resume {run} -o data.val_fraction=0.5
train-resume-bad-override | 2 | trainer.epochs | train --resume {run} -o trainer.epochs=many
evaluate-run-missing | 1 | {tmp}/nowhere: no such run directory or checkpoint | evaluate -r {tmp}/nowhere
evaluate-checkpoint-alone | 1 | fpn.pth: not inside its run directory (RUN/checkpoints/), whose split.csv names the validation images | evaluate -r {ck}/fpn.pth
evaluate-postprocess-typo | 2 | pp-typo.yml: PostProcess: unknown key 'treshold' (did you mean 'threshold'?) | evaluate -r {run} --postprocess {y}/pp-typo.yml
evaluate-data-dir-missing | 1 | --data-dir {tmp}/nowhere: no train.csv in this folder | evaluate -r {run} --data-dir {tmp}/nowhere
evaluate-data-dir-other-images | 1 | is {w}/datasets/no-images the dataset this run trained on? | evaluate -r {run} --data-dir {w}/datasets/no-images
evaluate-two-segmenters-one-split | 1 | fpn.pth: not inside its run directory | evaluate -r {run} -r {ck}/fpn.pth
evaluate-classifier-alone | 1 | classifier.pth: not inside its run directory | evaluate -r {ck}/classifier.pth
evaluate-epoch-not-kept | 1 | no checkpoint for epoch 9; kept epochs: 1 (or use --best) | evaluate -r {run} -e 9
evaluate-out-a-folder | 2 | --out {tmp}: is a folder | evaluate -r {run} --out {tmp}
evaluate-ensemble-typo | 2 | ens-typo.yml: unknown key 'models.0.weigth' | evaluate -c {y}/ens-typo.yml
tune-classifier-alone | 1 | classifier.pth: not inside its run directory | tune -r {ck}/classifier.pth
tune-postprocess-typo | 2 | pp-typo.yml: PostProcess: unknown key 'treshold' | tune -r {run} --postprocess {y}/pp-typo.yml
tune-data-dir-missing | 1 | --data-dir {tmp}/nowhere: no train.csv in this folder | tune -r {run} --data-dir {tmp}/nowhere
tune-epoch-not-kept | 1 | no checkpoint for epoch 9; kept epochs: 1 | tune -r {run} -e 9
compare-one-candidate | 2 | compare needs two candidates or more (-c A.yml -c B.yml) | compare -c {y}/ens-ok.yml
compare-missing-candidate | 2 | nowhere.yml: ensemble file not found | compare -c {y}/ens-ok.yml -c nowhere.yml
compare-bad-second-before-any-model | 2 | ens-pp-inline.yml: postprocess: PostProcess.threshold | compare -c {y}/ens-ok.yml -c {y}/ens-pp-inline.yml
compare-pick-three | 2 | '--pick': 3 is not in the range 2<=x<=2 | compare -c {y}/ens-ok.yml -c {y}/ens-ok.yml --pick 3
compare-resamples-few | 2 | '--resamples': 10 is not in the range x>=100 | compare -c {y}/ens-ok.yml -c {y}/ens-ok.yml --resamples 10
predict-from-probs-missing | 1 | --from-probs nowhere: no such folder | predict --from-probs nowhere --out {tmp}/s.csv
predict-from-probs-not-saved | 1 | --from-probs {data}: no probs.json; not a folder that predict --save-probs wrote | predict --from-probs {data} --out {tmp}/s.csv
predict-from-probs-with-models | 2 | --from-probs predicts without checkpoints: drop -r/-c | predict --from-probs nowhere -r {run} --out {tmp}/s.csv
predict-from-probs-and-onnx | 2 | give --from-probs or --exported, not both | predict --from-probs nowhere --onnx m.onnx --out {tmp}/s.csv
predict-onnx-with-tta | 2 | --exported predicts without checkpoints: drop -r/-c and --tta | predict --onnx m.onnx --tta hflip --images {test} --out {tmp}/s.csv
predict-onnx-with-averaging | 2 | --exported: the export averages its models inside; drop --averaging | predict --exported m.pt2 --averaging rms --images {test} --out {tmp}/s.csv
predict-without-images | 2 | give --images DIR (or --from-probs DIR) | predict -r {run} --out {tmp}/s.csv
predict-save-probs-not-empty | 2 | --save-probs {data}: already exists and is not empty | PREDICT --save-probs {data}
predict-instances-a-folder | 2 | --instances {data}: is a folder | PREDICT --instances {data}
export-out-a-folder | 2 | --out {data}: is a folder | export -r {run} --out {data}
predict-format-unknown | 2 | '--format': 'compact' is not one of 'auto', 'wide', 'long' | PREDICT --format compact
predict-out-in-proc | 2 | --out /proc/sub.csv: cannot write in /proc (no such file or directory) | predict -r {run} --images {test} --out /proc/sub.csv
predict-out-is-instances-csv | 2 | --out {tmp}/x.csv and --instances {tmp}/x.jsonl (its .csv) are the same file ({tmp}/x.csv); give each its own name | predict -r {run} --images {test} --out {tmp}/x.csv --instances {tmp}/x.jsonl
predict-instances-named-csv | 2 | --instances {tmp}/d.csv: the JSON lines go there and the CSV beside them, under the same name | PREDICT --instances {tmp}/d.csv
predict-out-inside-save-probs | 2 | --out {tmp}/p/sub.csv is inside --save-probs {tmp}/p, which is written whole | predict -r {run} --images {test} --out {tmp}/p/sub.csv --save-probs {tmp}/p
predict-save-probs-are-overlays | 2 | --save-probs {tmp}/p and --overlays {tmp}/p are the same file | PREDICT --save-probs {tmp}/p --overlays {tmp}/p
evaluate-out-in-proc | 2 | --out /proc/r.json: cannot write in /proc | evaluate -r {run} --out /proc/r.json
evaluate-out-is-html | 2 | --out {tmp}/r.json and --html {tmp}/r.json are the same file | evaluate -r {run} --out {tmp}/r.json --html {tmp}/r.json
export-out-in-proc | 2 | --out /proc/m.onnx: cannot write in /proc | export -r {run} --out /proc/m.onnx
tune-out-in-proc | 2 | --out /proc/pp.yml: cannot write in /proc | tune -r {run} --out /proc/pp.yml
tune-cache-dir-in-proc | 2 | --cache-dir /proc/cache: cannot write in /proc | tune -r {run} --cache-dir /proc/cache
pseudo-out-in-proc | 2 | --out /proc/p.csv: cannot write in /proc | pseudo-label -r {run} --images {test} --out /proc/p.csv
average-out-in-proc | 2 | --out /proc/a.pth: cannot write in /proc | average -r {run} --out /proc/a.pth
"""

# What some cases need around them.
SETUP: dict[str, Callable[[Path, World], None]] = {
    "cwd-deleted": vanished_cwd,
    "logging-yml-not-yaml": copy_yaml("logging-bad.yml", "logging.yml"),
    "logging-yml-bad-handler": copy_yaml("logging-class.yml", "logging.yml"),
    "logging-yml-a-list": in_cwd("logging.yml", "- version: 1\\n"),
    "pseudo-sibling-a-folder": lambda tmp, w: (tmp / "pseudo-images.txt").mkdir(),
    "upload-staging-default-a-file": in_cwd("upload", "not a folder\n"),
    "bench-default-out-a-folder": lambda tmp, w: (tmp / "bench-tiny.json").mkdir(),
    "upload-kaggle-json-not-json": kaggle_json('{"username": "me", "key": abc}'),
    "upload-kaggle-json-without-key": kaggle_json('{"username": "me"}'),
    "download-kaggle-json-a-list": kaggle_json("[]"),
}
ENV = {
    "sever-logging-missing": {"SEVER_LOGGING": "nowhere.yml"},
    "sever-logging-a-folder": {"SEVER_LOGGING": "{tmp}"},
    # no network and an empty Hugging Face cache
    "bench-imagenet-offline": {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": "{tmp}/hub"},
}
# Run as a user would, in a subprocess: Python's warnings reach stderr there.
SUBPROCESS = {
    "checkpoint-pickled-object",
    "checkpoint-plain-pickle",
    "bench-weights-not-torch",
    "bench-imagenet-offline",
}
# check-data prints its report (summary, problems) on stdout before the one error line.
REPORTS = {"check-no-images", "check-wide-rows-missing", "check-no-train-csv"}


def parse(table: str) -> list[Case]:
    cases = []
    for line in table.strip().splitlines():
        id, code, needle, args = (part.strip() for part in line.split(" | "))
        words = [
            w for arg in shlex.split(args) for w in (SHORT[arg].split() if arg in SHORT else [arg])
        ]
        cases.append(Case(id, int(code), needle, tuple(words)))
    return cases


CASES = parse(TABLE)


def snapshot(*folders: Path) -> dict[str, tuple[int, int, int]]:
    """Path -> (size, mtime, inode) of everything below the folders: a file or folder
    created, removed, rewritten or replaced by a rename changes it."""
    found = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            stat = path.stat()
            found[str(path)] = (
                stat.st_size if path.is_file() else 0,
                stat.st_mtime_ns,
                stat.st_ino,
            )
    return found


def run_subprocess(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    repo = Path(__file__).resolve().parents[1]
    environ = {**os.environ, **env, "PYTHONPATH": str(repo)}
    done = subprocess.run(
        [sys.executable, "-m", "sever", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


def test_every_case_is_distinct() -> None:
    assert len(CASES) >= 120
    assert len({c.id for c in CASES}) == len(CASES)
    # the same command line twice only with different surroundings
    plain = [c.args for c in CASES if c.id not in SETUP and c.id not in ENV]
    assert len(set(plain)) == len(plain)
    assert set(SETUP) | set(ENV) | SUBPROCESS | REPORTS <= {c.id for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_mistake_is_one_line(
    case: Case, world: World, tmp_path: Path, monkeypatch, capsys
) -> None:
    without_credentials(monkeypatch, tmp_path)  # and tmp_path is the working directory
    names = world.names(tmp_path)
    args = [a.format(**names) for a in case.args]
    needle = case.needle.format(**names)
    env = {k: v.format(**names) for k, v in ENV.get(case.id, {}).items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if case.id in SETUP:
        SETUP[case.id](tmp_path, world)
    watched = [world.root, world.data, tmp_path]
    before = snapshot(*watched)
    if case.id in SUBPROCESS:
        code, out, err = run_subprocess(args, env, tmp_path)
    else:
        code, out, err = cli_output(capsys, *args)
    assert "Traceback" not in out + err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert needle in err, err
    assert code == case.code, err
    assert out == "" or case.id in REPORTS, out
    assert snapshot(*watched) == before
