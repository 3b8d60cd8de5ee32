"""Experiment configs: merging, overrides, and one-line errors naming file and key."""

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from sever.config import Config, dump_config, load_config
from sever.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def exp(tmp_path: Path) -> Path:
    return write(tmp_path / "x.yml", "name: x\ntrainer:\n  epochs: 3\n")


def test_defaults_and_contract_keys(exp: Path) -> None:
    config = load_config(exp)
    assert config.name == "x" and config.trainer.epochs == 3
    # the documented contract keys exist with their documented defaults
    assert config.seed == 42
    assert config.data.dir == Path("data/synthetic")
    assert config.data.val_fraction == 0.2
    assert config.data.folds is None and config.data.fold is None
    assert config.trainer.batch_size == 16
    assert config.trainer.save_dir == Path("saved")
    assert config.trainer.device == "auto"
    # the original project's optimiser groups and loss weights
    assert (config.optimizer.encoder.lr, config.optimizer.encoder.weight_decay) == (7e-5, 3e-5)
    assert (config.optimizer.decoder.lr, config.optimizer.decoder.weight_decay) == (3e-3, 3e-4)
    assert (config.loss.bce, config.loss.dice) == (0.6, 0.4)


def test_overrides_are_parsed_and_validated(exp: Path) -> None:
    config = load_config(exp, ["trainer.epochs=7", "optimizer.encoder.lr=1e-4", "data.crop=null"])
    assert config.trainer.epochs == 7
    assert config.optimizer.encoder.lr == 1e-4
    assert config.data.crop is None
    with pytest.raises(ConfigError, match=r"^-o trainer.epochs=many: trainer.epochs: expected an"):
        load_config(exp, ["trainer.epochs=many"])


def test_later_files_and_extends_merge_deeply(tmp_path: Path) -> None:
    write(tmp_path / "base.yml", "name: base\ntrainer:\n  epochs: 5\n  batch_size: 4\n")
    child = write(tmp_path / "child.yml", "extends: base.yml\nname: child\ntrainer:\n  epochs: 9\n")
    extra = write(tmp_path / "extra.yml", "trainer:\n  batch_size: 2\n")
    config = load_config([child, extra])
    assert (config.name, config.trainer.epochs, config.trainer.batch_size) == ("child", 9, 2)


def test_extends_cycle_is_an_error(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yml", "extends: b.yml\nname: a\n")
    write(tmp_path / "b.yml", "extends: a.yml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(a)


def test_a_classifier_monitors_mean_f1_by_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.yml", "name: c\ntask: classify\n"))
    assert config.trainer.monitor == "max val_f1_mean"
    assert load_config(write(tmp_path / "s.yml", "name: s\n")).trainer.monitor == (
        "max val_dice_mean"
    )
    chosen = load_config(tmp_path / "c.yml", ["trainer.monitor=min val_loss"])
    assert chosen.trainer.monitor == "min val_loss"
    head = load_config(
        tmp_path / "s.yml", ["model.class_head.enabled=true", "trainer.monitor=max val_f1_2"]
    )
    assert head.trainer.monitor_metric == "val_f1_2"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "name: x\noptimizer:\n  encoder:\n    lr: fast\n",
            "x.yml: optimizer.encoder.lr: expected a number, got 'fast'",
        ),
        (
            "name: x\ntrainer:\n  epoch: 3\n",
            "x.yml: unknown key 'trainer.epoch' (did you mean 'trainer.epochs'?)",
        ),
        ("name: x\ntrainr: {}\n", "x.yml: unknown key 'trainr' (did you mean 'trainer'?)"),
        (
            "name: x\noptimizer:\n  type: radm\n",
            "x.yml: optimizer.type: unknown optimizer 'radm' (did you mean 'radam'?); "
            "expected one of: adamw, radam, sgd",
        ),
        (
            "name: x\ndata:\n  crop: [250, 384]\n",
            "x.yml: data.crop: 250 is not a multiple of 32 (nearest valid: 224 or 256)",
        ),
        (
            "name: x\ndata:\n  image_size: [256, 1590]\n",
            "x.yml: data.image_size: 1590 is not a multiple of 32 (nearest valid: 1568 or 1600)",
        ),
        ("name: x\ndata:\n  crop: [512, 384]\n", "data.crop [512, 384] is larger than"),
        ("name: x\ndata:\n  crop: [20, 384]\n", "20 is not a multiple of 32 (nearest valid: 32)"),
        ("name: x\ndata:\n  fold: 1\n", "data.fold is set but data.folds is not"),
        ("name: x\ndata:\n  folds: 5\n  fold: 5\n", "data.fold 5 is out of range for 5 folds"),
        ("name: x\nmodel:\n  input_channel: red\n", "model.input_channel: expected one of 'r'"),
        ("name: x\nmodel:\n  arch: Unett\n", "unknown architecture 'Unett' (did you mean 'Unet'?)"),
        ("name: x\nmodel:\n  encoder: resnet181\n", "model.encoder: unknown encoder 'resnet181'"),
        ("name: x\ndata:\n  augment: heavy\n", "unknown augmentation recipe 'heavy'"),
        ("name: x\nscheduler:\n  type: cosine\n", "scheduler.type: unknown scheduler 'cosine'"),
        ("name: x\ntrainer:\n  monitor: max dice\n", "trainer.monitor: expected 'max METRIC'"),
        ("name: x\ntask: detect\n", "x.yml: task: expected one of 'segment' or 'classify'"),
        (
            "name: x\ntask: classify\ntrainer:\n  monitor: max val_dice_mean\n",
            "x.yml: trainer.monitor: a classifier (task: classify) has no val_dice_mean",
        ),
        (
            "name: x\ntrainer:\n  monitor: max val_f1_mean\n",
            "x.yml: trainer.monitor: val_f1_mean needs class presence",
        ),
        ("name: x\nloss:\n  bce: 0\n  dice: 0\n", "loss: expected at least one loss term"),
        ("name: x\nloss:\n  lovasz_hinge: 1\n", "unknown key 'loss.lovasz_hinge' (did you mean"),
        ("trainer:\n  epochs: 3\n", "x.yml: name: missing required key"),
        ("name: a/b\n", "x.yml: name: "),
        ("name: x\ntrainer:\n  device: gpu0\n", "expected auto, cpu, cuda, cuda:N or mps"),
        ("- 1\n- 2\n", "x.yml: expected a mapping of keys at the top level"),
        ("name: [x\n", "x.yml: line 2: not valid YAML"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "x.yml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_override_syntax_error(exp: Path) -> None:
    with pytest.raises(ConfigError, match=r"-o trainer.epochs: expected KEY.PATH=VALUE"):
        load_config(exp, ["trainer.epochs"])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yml: config file not found"):
        load_config(tmp_path / "nope.yml")


def test_dump_round_trips(exp: Path, tmp_path: Path) -> None:
    config = load_config(exp, ["model.input_channel=r", "data.crop=[256, 416]"])
    dumped = write(tmp_path / "dumped.yml", dump_config(config))
    assert load_config(dumped) == config
    assert yaml.safe_load(dumped.read_text())["data"]["crop"] == [256, 416]


RECIPES = sorted(p for p in (ROOT / "experiments").glob("*.yml") if p.name != "base.yml")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_experiments_validate(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_a_bare_off_means_off(tmp_path: Path) -> None:
    """YAML 1.1 reads `off` as false; `trainer.amp: off` must still mean amp off."""
    path = tmp_path / "x.yml"
    path.write_text("name: x\ntrainer:\n  amp: off\n")
    assert load_config(path).trainer.amp == "off"
    assert load_config(path, ["trainer.amp=off"]).trainer.amp == "off"
    with pytest.raises(ConfigError, match="trainer.amp"):
        load_config(path, ["trainer.amp=on"])


def nested_defaults(model: type[BaseModel], path: str = "") -> list[tuple[str, BaseModel]]:
    """(dotted key, default instance) of every nested section below `model`."""
    found = []
    for name, info in model.model_fields.items():
        if isinstance(info.default, BaseModel):
            key = f"{path}{name}"
            found.append((key, info.default))
            found += nested_defaults(type(info.default), f"{key}.")
    return found


NESTED = nested_defaults(Config)


def test_every_nested_section_is_found() -> None:
    keys = [key for key, _ in NESTED]
    assert {"optimizer.encoder", "optimizer.decoder", "data.normalize", "trainer"} <= set(keys)


@pytest.mark.parametrize(("key", "default"), NESTED, ids=[key for key, _ in NESTED])
def test_a_nested_override_merges_into_the_defaults(tmp_path: Path, key: str, default) -> None:
    # Each field of the section given alone, at its default value: the whole section must
    # stay its default (a replaced section would take the field types' own defaults).
    bare = write(tmp_path / "bare.yml", "name: x\n")
    for field, value in default.model_dump().items():
        if isinstance(value, dict) or value is None:
            continue
        value = str(value) if isinstance(value, Path) else value
        override = f"{key}.{field}={yaml.safe_dump(value, default_flow_style=True).strip()}"
        override = override.removesuffix("\n...").removesuffix(" ...")
        section = load_config(bare, [override])
        for part in key.split("."):
            section = getattr(section, part)
        assert section == default, override


def test_an_encoder_learning_rate_keeps_the_groups_weight_decay(exp: Path) -> None:
    # the documented defaults: encoder 7e-5 / 3e-5, decoder 3e-3 / 3e-4
    config = load_config(exp, ["optimizer.encoder.lr=1e-3"])
    assert (config.optimizer.encoder.lr, config.optimizer.encoder.weight_decay) == (1e-3, 3e-5)
    assert (config.optimizer.decoder.lr, config.optimizer.decoder.weight_decay) == (3e-3, 3e-4)
    path = exp.parent / "group.yml"
    path.write_text(exp.read_text() + "optimizer:\n  decoder:\n    weight_decay: 0.01\n")
    decoder = load_config(path).optimizer.decoder
    assert (decoder.lr, decoder.weight_decay) == (3e-3, 0.01)


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("trainer.min_pixels=0", "min_pixels", [0, 0, 0, 0]),
        ("trainer.min_pixels=600", "min_pixels", [600] * 4),
        ("trainer.min_pixels=[1,2,3,4]", "min_pixels", [1, 2, 3, 4]),
        ("model.class_head.pos_weight=2", "pos_weight", [2.0] * 4),
        ("model.class_head.pos_weight=[1,2,3,4.5]", "pos_weight", [1.0, 2.0, 3.0, 4.5]),
    ],
)
def test_a_number_stands_for_every_class(exp: Path, override: str, key: str, expected) -> None:
    config = load_config(exp, [override])
    section = config.trainer if key == "min_pixels" else config.model.class_head
    assert getattr(section, key) == expected
    two = load_config(exp, [override.split("=")[0] + "=3", "model.classes=2"])
    section = two.trainer if key == "min_pixels" else two.model.class_head
    assert getattr(section, key) == [3, 3]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.min_pixels=-1", "trainer.min_pixels: expected a whole number >= 0 for every"),
        ("trainer.min_pixels=1.5", "trainer.min_pixels: expected a whole number >= 0 for every"),
        ("trainer.min_pixels=[1,2]", "trainer.min_pixels: expected a list of 4 values"),
        ("model.class_head.pos_weight=0", "model.class_head.pos_weight: expected a number > 0"),
    ],
)
def test_a_bad_per_class_number_is_one_error(exp: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(exp, [override])
