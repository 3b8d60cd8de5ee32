"""SMP models for 1-channel steel images: architecture, encoder, first conv, weights, heads.

`build_model` creates the SMP model with 3 input channels (so pretrained weights load as
they were trained), then turns the encoder's first conv into a 1-channel conv whose filters
are the pretrained ones of one colour channel (r, g, b) or their sum. Summing is exact for
a grey image fed as three equal channels, so `sum` starts where the RGB network was.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import huggingface_hub
import segmentation_models_pytorch as smp
import timm
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from sever.errors import CheckpointError, ConfigError
from sever.fileio import torch_load_problem
from sever.model.catalogue import ARCHITECTURES
from sever.model.classifier import Classifier

if TYPE_CHECKING:
    from sever.config import ModelConfig

# Architectures with their own spatial dropout on decoder features: the argument to set.
# The others get an nn.Dropout2d in front of their segmentation head.
NATIVE_DROPOUT = {"FPN": "decoder_dropout", "PSPNet": "psp_dropout"}

CHANNELS = {"r": 0, "g": 1, "b": 2}


def build_model(cfg: ModelConfig, task: str = "segment") -> nn.Module:
    """The SMP model for `cfg`: input (N, 1, H, W) -> mask logits (N, C, H, W).

    With `cfg.class_head.enabled` the model returns (mask logits, class logits (N, C)); a
    classifier (`task` "classify") returns class logits (N, C) alone. `split_outputs`
    takes every form.

    Raises:
        ConfigError: smp rejects the architecture / encoder / weights combination.
        CheckpointError: the weights cannot be downloaded or the weights file does not fit.
    """
    weights = cfg.encoder_weights
    local = weights not in (None, "imagenet")
    model = create(cfg, None if local else weights, task)
    encoder = module(model, "encoder")
    if weights is not None and local:
        load_encoder_weights(encoder, Path(weights), cfg.encoder)
    use_one_channel(first_conv(encoder, cfg.encoder), cfg.input_channel)
    if task == "segment" and cfg.dropout > 0 and cfg.arch not in NATIVE_DROPOUT:
        add_head_dropout(model, cfg.dropout)
    if task == "segment" and cfg.arch_params:
        try_small_input(model, cfg)
    return model


def try_small_input(model: nn.Module, cfg: ModelConfig) -> None:
    """Run the model once on a 64x64 image, so arch_params that build a model SMP cannot
    run (scse attention on a block of under 16 channels) fail before training starts."""
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, 64, 64))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"model.arch_params: {cfg.arch} with {cfg.arch_params} builds a model that "
            f"cannot run ({reason})"
        ) from None
    finally:
        model.train()


def create(cfg: ModelConfig, weights: str | None, task: str = "segment") -> nn.Module:
    """The 3-channel model, with `weights` None or "imagenet" (downloaded by SMP)."""
    # timm encoders take a flag (their weights tag is part of the name), not "imagenet"
    timm_flag = weights is not None and cfg.encoder.startswith("tu-")
    try:
        with pretrained_access(cfg.encoder) if weights else nullcontext():
            if task == "classify":
                head = cfg.class_head
                return Classifier(cfg.encoder, weights, cfg.classes, head.pooling, head.dropout)
            return segmenter(cfg, True if timm_flag else weights)
    except OSError as exc:  # what huggingface_hub and timm raise when offline
        raise CheckpointError(download_hint(cfg.encoder, exc)) from None
    except (ValueError, KeyError) as exc:  # smp's word on a combination it cannot build
        reason = exc.args[0] if exc.args else exc
        what = "classifier" if task == "classify" else cfg.arch
        raise ConfigError(f"model: {what} with encoder {cfg.encoder}: {reason}") from None
    except TypeError as exc:  # a value of arch_params SMP cannot use
        if task == "classify" or not cfg.arch_params:
            raise
        raise ConfigError(
            f"model.arch_params: {cfg.arch} cannot take {cfg.arch_params} ({exc})"
        ) from None


def segmenter(cfg: ModelConfig, weights: str | bool | None) -> nn.Module:
    """SMP's `cfg.arch` with 4 mask logits, dropout and the optional presence head."""
    kwargs: dict[str, object] = (
        {NATIVE_DROPOUT[cfg.arch]: cfg.dropout} if cfg.arch in NATIVE_DROPOUT else {}
    )
    if cfg.class_head.enabled:
        kwargs["aux_params"] = dict(
            classes=cfg.classes,
            dropout=cfg.class_head.dropout,
            activation=None,
            pooling=cfg.class_head.pooling,
        )
    return ARCHITECTURES[cfg.arch](
        **cfg.arch_params,
        encoder_name=cfg.encoder,
        encoder_weights=weights,
        in_channels=3,
        classes=cfg.classes,
        activation=None,
        **kwargs,
    )


def hub_files(encoder: str) -> tuple[str, str | None, list[str]] | None:
    """(Hugging Face repo, revision, files of which the encoder needs all, or for timm one)
    holding the encoder's pretrained weights; None when they are not on the Hub."""
    if encoder.startswith("tu-"):
        pretrained = timm.models.get_pretrained_cfg(encoder[3:])
        repo = getattr(pretrained, "hf_hub_id", None)
        return (repo, None, ["model.safetensors", "pytorch_model.bin"]) if repo else None
    settings = smp.encoders.encoders[encoder]["pretrained_settings"].get("imagenet")
    if not settings or "repo_id" not in settings:
        return None
    return settings["repo_id"], settings.get("revision"), ["config.json", "model.safetensors"]


def in_hub_cache(encoder: str) -> bool:
    """Whether the encoder's pretrained weights are in the Hugging Face cache already."""
    source = hub_files(encoder)
    if source is None:
        return False
    repo, revision, files = source
    found = [
        isinstance(huggingface_hub.try_to_load_from_cache(repo, f, revision=revision), str)
        for f in files
    ]
    return any(found) if encoder.startswith("tu-") else all(found)


def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached right now (one quick try), or None."""
    endpoint = huggingface_hub.constants.ENDPOINT
    try:
        huggingface_hub.get_session().head(endpoint, timeout=5)
    except Exception as exc:  # offline mode, DNS, refused, proxy, timeout: all say "no"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{endpoint} cannot be reached: {detail}"
    return None


@contextmanager
def pretrained_access(encoder: str) -> Iterator[None]:
    """Let SMP or timm fetch pretrained weights without huggingface_hub's half minute of
    retries and warnings when there is no network: weights already in the cache load with
    the Hub offline, and a download is tried only after one quick check that the Hub
    answers.

    Raises:
        CheckpointError: the weights are not cached and the Hub cannot be reached.
    """
    if in_hub_cache(encoder):
        offline = huggingface_hub.constants.HF_HUB_OFFLINE
        huggingface_hub.constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            huggingface_hub.constants.HF_HUB_OFFLINE = offline
        return
    if hub_files(encoder) is not None:
        reason = hub_unreachable()
        if reason:
            raise CheckpointError(download_hint(encoder, reason))
    yield


def download_hint(encoder: str, exc: Exception | str) -> str:
    """One line saying why the imagenet weights did not come and how to supply them."""
    if encoder.startswith("tu-"):
        source = f"timm's weights for {encoder[3:]}"
    else:
        settings = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]
        source = f"Hugging Face repo {settings['repo_id']} (revision {settings['revision']})"
    cache = huggingface_hub.constants.HF_HUB_CACHE
    reason = exc if isinstance(exc, str) else str(exc).split(". ")[0].strip()
    reason = reason or type(exc).__name__
    return (
        f"encoder {encoder}: cannot download its imagenet weights ({reason}); put {source} "
        f"in the Hugging Face cache {cache} (set HF_HUB_CACHE or HF_HOME to move it) or set "
        f"model.encoder_weights to a local .pth/.safetensors file of the encoder's weights"
    )


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from a .pth/.pt (plain or under 'state_dict'/'model') or .safetensors file."""
    state: object
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            with warnings.catch_warnings():  # torch warns about pickles it then refuses
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to read is the file's: say which, in one line
        problem = torch_load_problem(exc, path)
        if path.suffix == ".safetensors":
            problem = "not a safetensors file, or a damaged one"
        raise CheckpointError(f"{path}: cannot read weights ({problem})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    # DataParallel / DDP checkpoints prefix every key with "module."
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_encoder_weights(encoder: nn.Module, path: Path, name: str) -> None:
    """Load the weights file at `path` into `encoder` (strictly).

    Raises:
        CheckpointError: naming the file and counting missing, unexpected and misshapen keys.
    """
    state = read_state_dict(path)
    try:
        encoder.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(mismatch(path, name, encoder.state_dict(), state)) from None


def mismatch(path: Path, name: str, own: dict[str, Tensor], given: dict[str, Tensor]) -> str:
    """`w.pth does not fit encoder resnet18: 2 missing keys (e.g. 'fc.x'), ...`."""
    common = own.keys() & given.keys()
    problems = {
        "missing": sorted(own.keys() - given.keys()),
        "unexpected": sorted(given.keys() - own.keys()),
        "misshapen": sorted(k for k in common if own[k].shape != given[k].shape),
    }
    parts = [f"{len(ks)} {kind} keys (e.g. '{ks[0]}')" for kind, ks in problems.items() if ks]
    return f"{path}: does not fit encoder {name}: {', '.join(parts) or 'load failed'}"


def first_conv(encoder: nn.Module, name: str) -> nn.Conv2d:
    """The encoder's first convolution over the 3 colour channels."""
    for module in encoder.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3 and module.groups == 1:
            return module
    raise ConfigError(f"model.encoder: {name} has no 3-channel input conv to make 1-channel")


def use_one_channel(conv: nn.Conv2d, channel: str) -> None:
    """Make `conv` take 1 channel, keeping the filters of `channel` (r/g/b) or their sum.

    Changed in place rather than replaced, so subclasses (timm's Conv2dSame, the padded
    convs of EfficientNet) keep their forward; the bias is untouched.
    """
    weight = conv.weight.detach()  # (out, 3, k, k)
    if channel == "sum":
        weight = weight.sum(1, keepdim=True)
    else:
        index = CHANNELS[channel]
        weight = weight[:, index : index + 1]
    conv.weight = nn.Parameter(weight.clone())
    conv.in_channels = 1


def add_head_dropout(model: nn.Module, p: float) -> None:
    """Put nn.Dropout2d(p) on the decoder features, in front of the segmentation head."""
    head = module(model, "segmentation_head")
    if isinstance(head, nn.Sequential):
        # The head's own children keep their names, so the parameter names
        # (segmentation_head.0.weight) are those of the model built without dropout.
        layers = [("dropout", nn.Dropout2d(p)), *head.named_children()]
    else:
        layers = [("dropout", nn.Dropout2d(p)), ("head", head)]
    model.segmentation_head = nn.Sequential(OrderedDict(layers))


def module(model: nn.Module, name: str) -> nn.Module:
    """A named submodule (an SMP model's `encoder`, `segmentation_head`), typed as one."""
    child = getattr(model, name)
    assert isinstance(child, nn.Module), name
    return child


def split_outputs(
    output: Tensor | tuple[Tensor, Tensor],
) -> tuple[Tensor | None, Tensor | None]:
    """(mask logits (N, C, H, W) or None, class logits (N, C) or None) from any model's
    output: masks alone, (masks, class logits), or a classifier's class logits alone."""
    if isinstance(output, (tuple, list)):
        masks, labels = output
        return masks, labels
    if output.ndim == 2:
        return None, output
    return output, None


def encoder_and_rest(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The encoder's parameters, and all the others (decoder, heads): the optimiser groups."""
    encoder = list(module(model, "encoder").parameters())
    ids = {id(p) for p in encoder}
    return encoder, [p for p in model.parameters() if id(p) not in ids]
