"""Turn probability maps into defect masks: ensemble averaging and post-processing steps.

Pure numpy (and cv2 for connected components), no I/O, so it runs as is in an offline Kaggle
notebook. Maps are `(C, H, W)` for one image or `(N, C, H, W)` for a batch; masks are bool of
the same shape. Every function returns a new array and leaves its inputs untouched.

`postprocess` runs the steps in this order, each configured per class by `PostProcess`:

1. `threshold`: a pixel is predicted for class c when its probability is strictly above
   t[c].
2. `one_class_per_pixel`: a pixel predicted for several classes keeps only the most
   probable of them (ties go to the lowest class index).
3. `remove_small_components`: 8-connected components of fewer than min_component[c]
   pixels are dropped.
4. `min_pixels`: a class with fewer than min_pixels[c] pixels left in the image is emptied;
   with a classifier's presence probabilities and `scale_c`, each image's minimum comes
   from `scaled_min_pixels` (the original project's classifier scaling), so a class the
   classifier doubts needs a larger mask, and a large confident mask can still overrule it.
5. `gate`: a class whose presence probability is below gate[c] is emptied.

Boundaries, the same everywhere: a probability equal to its threshold is not predicted; a
component or mask of exactly the minimum size, and a presence equal to its gate, are kept.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "AVERAGING",
    "DEFAULT_CLASSES",
    "FORMAT",
    "TUNED_WITH",
    "PostProcess",
    "average",
    "gate",
    "min_pixels",
    "one_class_per_pixel",
    "postprocess",
    "postprocess_batch",
    "remove_small_components",
    "scaled_min_pixels",
    "threshold",
    "winners",
]

DEFAULT_CLASSES = 4  # the competition's; `PostProcess.classes` says how many
# A tuned file's record of the models and options it was tuned with (`sever tune` writes
# it, predict compares it): not a setting, so `PostProcess.from_dict` skips it.
TUNED_WITH = "tuned_with"
# Post-processing files and mappings carry `format: 2` since `scale_c` scales the minimum
# pixel counts (the original project's rule); before, it scaled the probability threshold.
# A file with `scale_c` and no format was written under the old rule and is refused.
FORMAT = "format"
FORMAT_VERSION = 2
PER_CLASS = ("threshold", "min_pixels", "min_component", "gate")
DEFAULT_MIN_PIXELS = (600, 600, 1000, 2000)  # the usual Severstal choice for its 4 classes

# Probabilities come in any float dtype (float16 from autocast, float32, float64).
Probs = NDArray[Any]
Masks = NDArray[np.bool_]
# Ensemble members: stacked on axis 0, or a sequence of arrays of one shape.
Members = NDArray[Any] | Sequence[NDArray[Any]]
_Scalar = TypeVar("_Scalar", bound=np.generic)
_Number = TypeVar("_Number", int, float)


# --- ensemble averaging ------------------------------------------------------------------


def _arithmetic_mean(
    members: Members, weights: NDArray[np.float64] | None, dtype: np.dtype[Any]
) -> NDArray[Any]:
    """sum_m w_m p_m, or sum_m p_m / M like `np.mean` without weights."""
    return _accumulate(members, weights, dtype, square=False)


def _root_mean_square(
    members: Members, weights: NDArray[np.float64] | None, dtype: np.dtype[Any]
) -> NDArray[Any]:
    """sqrt(mean_m p_m^2): leans towards the most confident member."""
    out = _accumulate(members, weights, dtype, square=True)
    np.sqrt(out, out=out)
    return out


def _accumulate(
    members: Members, weights: NDArray[np.float64] | None, dtype: np.dtype[Any], square: bool
) -> NDArray[Any]:
    """The (weighted) mean of the members or their squares, summed in place member by
    member, so there is no (M, ...) temporary whether or not the input was stacked."""
    out = np.zeros(members[0].shape, dtype)
    tmp = np.empty_like(out)
    for i, p in enumerate(members):
        term = np.multiply(p, p, out=tmp, dtype=dtype) if square else p
        if weights is not None:
            term = np.multiply(term, dtype.type(weights[i]), out=tmp, dtype=dtype)
        np.add(out, term, out=out, dtype=dtype)
    if weights is None:
        out /= dtype.type(len(members))
    return out


# Name -> function(members, weights normalised to sum 1 or None for equal ones, dtype).
Averaging = Callable[[Members, NDArray[np.float64] | None, np.dtype[Any]], NDArray[Any]]
AVERAGING: dict[str, Averaging] = {
    "mean": _arithmetic_mean,
    "rms": _root_mean_square,
    "weighted": _arithmetic_mean,
}


def average(
    probs: Members,
    method: str = "mean",
    weights: Sequence[float] | None = None,
) -> NDArray[Any]:
    """Combine M ensemble members' probability maps into one.

    Args:
        probs: `(M, ...)` with the members stacked on axis 0, or a sequence of M arrays of one
            shape, e.g. each `(N, C, H, W)`.
        method: 'mean' (arithmetic mean), 'rms' (root mean square, sqrt(mean(p^2)), which
            leans towards confident members: [0.1, 0.2, 0.9] gives 0.54 where the mean gives
            0.40) or 'weighted' (arithmetic mean with `weights`). See `AVERAGING`.
        weights: M non-negative numbers with a positive sum, normalised to sum 1; required by
            'weighted' and refused by the others.

    Returns:
        The combined map, shaped like one member. float32 and float64 inputs keep their
        dtype; anything else (float16, integers) is computed in and returned as float32.

    Raises:
        ValueError: an unknown method, no members, members of different shapes, or missing,
            unexpected or invalid weights.
    """
    if method not in AVERAGING:
        raise ValueError(f"unknown averaging method {method!r}; expected one of {list(AVERAGING)}")
    members: Members = probs if isinstance(probs, np.ndarray) else [np.asarray(p) for p in probs]
    if isinstance(members, np.ndarray) and members.ndim == 0:
        raise ValueError("probs: expected (M, ...) stacked members or a list of arrays")
    if len(members) == 0:
        raise ValueError("probs: no ensemble members to average")
    for i, p in enumerate(members[1:], 1):
        if p.shape != members[0].shape:
            raise ValueError(
                f"probs: member {i} has shape {p.shape}, member 0 has {members[0].shape}"
            )
    dtype: np.dtype[Any]
    if isinstance(members, np.ndarray):
        dtype = members.dtype
    else:
        dtype = np.result_type(*(p.dtype for p in members))
    if dtype not in (np.float32, np.float64):
        dtype = np.dtype(np.float32)
    return AVERAGING[method](members, _normalised_weights(method, weights, len(members)), dtype)


def _normalised_weights(
    method: str, weights: Sequence[float] | None, m: int
) -> NDArray[np.float64] | None:
    """(M,) float64 weights summing to 1 for 'weighted', None for the others."""
    if method != "weighted":
        if weights is not None:
            raise ValueError(f"weights are only used by method 'weighted', not {method!r}")
        return None
    if weights is None:
        raise ValueError("method 'weighted' needs weights, one per ensemble member")
    w = np.asarray(weights, np.float64)
    if w.shape != (m,):
        raise ValueError(f"weights: expected {m} values (one per member), got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights: expected finite values >= 0 with a sum > 0, got {w.tolist()}")
    return w / float(w.sum())


# --- post-processing steps ---------------------------------------------------------------


def threshold(probs: Probs, t: float | Sequence[float] | NDArray[Any] = 0.5) -> Masks:
    """Masks of the pixels whose probability is strictly above the class threshold.

    Args:
        probs: `(C, H, W)` or `(N, C, H, W)` probabilities.
        t: one threshold, one per class `(C,)`, or for a batch one per image and class
            `(N, C)`. Compared in probs' dtype, so 0.4 is not above a float32 0.4.

    Returns:
        bool masks shaped like `probs`.
    """
    probs = np.asarray(probs)
    batch = _batch(probs, "probs")
    return _threshold(batch, t).reshape(probs.shape)


def winners(probs: Probs) -> NDArray[np.unsignedinteger[Any]]:
    """Each pixel's most probable class, `(N, H, W)` from `(N, C, H, W)` (ties go to the
    lowest class index), in the smallest unsigned dtype that holds C - 1: what one class
    per pixel keeps, stored beside rounded probabilities (tune's cache, saved
    probabilities) because rounding creates ties."""
    probs = np.asarray(probs)
    found: NDArray[np.unsignedinteger[Any]] = probs.argmax(axis=1).astype(
        np.min_scalar_type(max(probs.shape[1] - 1, 0))
    )
    return found


def one_class_per_pixel(probs: Probs, masks: NDArray[Any]) -> Masks:
    """A pixel may only belong to its most probable class.

    Each predicted pixel is kept for a class only where that class has the highest
    probability of all classes there (the argmax over C; on a tie the lowest class index,
    `np.argmax` order), whether or not the winner is itself predicted at that pixel. This
    does not depend on the thresholds, which is what lets `sever tune` search each class's
    threshold exactly.

    Args:
        probs: `(C, H, W)` or `(N, C, H, W)` probabilities.
        masks: bool masks shaped like `probs`, e.g. from `threshold`.

    Returns:
        bool masks shaped like `masks`.
    """
    probs, out = np.asarray(probs), _mask_copy(masks)
    if probs.shape != out.shape:
        raise ValueError(f"probs has shape {probs.shape} but masks has {out.shape}")
    _keep_most_probable(_batch(probs, "probs"), _batch(out, "masks"))
    return out


def remove_small_components(
    masks: NDArray[Any], min_size: int | Sequence[int] | NDArray[Any]
) -> Masks:
    """Drop the 8-connected components with fewer than `min_size[c]` pixels.

    Pixels that touch diagonally belong to one component.

    Args:
        masks: bool `(C, H, W)` or `(N, C, H, W)`.
        min_size: one size or one per class `(C,)`; 0 leaves a class as it is.

    Returns:
        bool masks shaped like `masks`.
    """
    out = _mask_copy(masks)
    batch = _batch(out, "masks")
    sizes = _per_class_counts(min_size, batch.shape[1], "min_size")
    _remove_small(batch, sizes, _counts(batch))
    return out


def min_pixels(
    masks: NDArray[Any], min_pixels: int | Sequence[int] | NDArray[Any] = DEFAULT_MIN_PIXELS
) -> Masks:
    """Empty each class that has fewer than `min_pixels[c]` pixels in its image.

    Args:
        masks: bool `(C, H, W)` or `(N, C, H, W)`.
        min_pixels: one count, one per class `(C,)`, or for a batch one per image and class
            `(N, C)` (as `scaled_min_pixels` gives); a mask of exactly that many pixels is
            kept. The default is the usual Severstal choice for 4 classes.

    Returns:
        bool masks shaped like `masks`.
    """
    out = _mask_copy(masks)
    batch = _batch(out, "masks")
    least = np.asarray(min_pixels)
    if least.ndim == 2:
        if least.shape != batch.shape[:2]:
            raise ValueError(
                f"min_pixels: expected shape {batch.shape[:2]} (one per image and class), "
                f"got {least.shape}"
            )
        least = _per_class_counts(least.ravel(), least.size, "min_pixels").reshape(least.shape)
    else:
        least = _per_class_counts(min_pixels, batch.shape[1], "min_pixels")
    batch[_counts(batch) < least] = False
    return out


def gate(
    masks: NDArray[Any], presence: NDArray[Any] | Sequence[float], t: float | Sequence[float]
) -> Masks:
    """Empty each class whose presence probability is below its gate.

    Args:
        masks: bool `(C, H, W)` or `(N, C, H, W)`.
        presence: a classifier's probability that each class is in the image: `(C,)`, or
            `(N, C)` for a batch.
        t: one gate or one per class `(C,)`; presence equal to it keeps the class.

    Returns:
        bool masks shaped like `masks`.
    """
    out = _mask_copy(masks)
    batch = _batch(out, "masks")
    p = _presence(presence, batch.shape[:2], out.ndim == 3)
    batch[p < _per_class(t, batch.shape[1], "t")] = False
    return out


def scaled_min_pixels(
    m0: int | Sequence[int] | NDArray[Any],
    presence: NDArray[Any] | Sequence[float],
    c: float = 5.0,
) -> NDArray[np.int64]:
    """Minimum pixel counts raised where a classifier doubts a class: m = m0*c - m0*(c-1)*p.

    The original project's classifier scaling ("amplify the defect pixel thresholds"): a
    class the classifier is sure of (p = 1) keeps m0; one it rules out (p = 0) needs c*m0
    pixels, so a large, confident segmentation can still overrule the classifier. With
    m0 = 600 and c = 5: p = 1 -> 600, 0.5 -> 1800, 0 -> 3000. A mask is kept when it has at
    least m pixels, so m is rounded up to a whole number of pixels (after rounding to 6
    decimals, so float error never adds a pixel): p = 0.3 -> 2280.

    Args:
        m0: base minimum pixel counts, one or one per class `(C,)`.
        presence: `(C,)` or `(N, C)` probabilities in [0, 1] that each class is present.
        c: the scale at p = 0; at least 1 (1 gives m0 whatever p is).

    Returns:
        int64 minimum counts shaped like `presence`, for `min_pixels`.
    """
    p = np.asarray(presence, np.float64)
    if p.ndim not in (1, 2):
        raise ValueError(f"presence: expected (C,) or (N, C), got shape {p.shape}")
    bad = ~((p >= 0) & (p <= 1))
    if bad.any():
        raise ValueError(f"presence: expected probabilities in [0, 1], got {p[bad][0]}")
    if not (math.isfinite(c) and c >= 1):
        raise ValueError(f"c: expected a finite number >= 1, got {c}")
    base = _per_class_counts(m0, p.shape[-1], "m0").astype(np.float64)
    return np.ceil(np.round(base * c - base * (c - 1) * p, 6)).astype(np.int64)


# --- the pipeline ------------------------------------------------------------------------


@dataclass(frozen=True, init=False)
class PostProcess:
    """Per-class settings of `postprocess`, for `classes` classes (the competition's 4).

    A single number stands for every class; after construction each per-class field is a
    tuple of `classes` values. Values are checked when built, so a bad YAML fails on load.

    Attributes:
        threshold: pixel probability thresholds, in [0, 1].
        min_pixels: a class with fewer pixels than this in an image is emptied; 0 = off.
            None: `DEFAULT_MIN_PIXELS` (600, 600, 1000, 2000) for 4 classes, else 0.
        one_class_per_pixel: keep only the most probable class at each pixel.
        min_component: 8-connected components smaller than this are dropped; 0 = off.
        gate: None, or presence probabilities in [0, 1] below which a class is emptied.
        scale_c: None, or the `c` of `scaled_min_pixels` (>= 1) to raise each image's
            minimum pixel counts where presence is low.
        classes: how many classes the probabilities have.
    """

    # The fields hold the checked values; `__init__` takes what the docstring describes
    # (a number for all classes), so the two are typed apart.
    threshold: tuple[float, ...]
    min_pixels: tuple[int, ...]
    one_class_per_pixel: bool
    min_component: tuple[int, ...]
    gate: tuple[float, ...] | None
    scale_c: float | None
    classes: int

    def __init__(
        self,
        threshold: float | Sequence[float] = 0.5,
        min_pixels: int | Sequence[int] | None = None,
        one_class_per_pixel: bool = True,
        min_component: int | Sequence[int] = 0,
        gate: float | Sequence[float] | None = None,
        scale_c: float | None = None,
        classes: int = DEFAULT_CLASSES,
    ) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if not _is_number(classes, int) or classes < 1:
            raise ValueError(f"PostProcess.classes: expected a whole number >= 1, got {classes!r}")
        put("classes", int(classes))
        if min_pixels is None:
            min_pixels = DEFAULT_MIN_PIXELS if classes == DEFAULT_CLASSES else 0
        n = classes
        put("threshold", _config_values("threshold", threshold, n, float, 0, 1))
        put("min_pixels", _config_values("min_pixels", min_pixels, n, int, 0, math.inf))
        put("min_component", _config_values("min_component", min_component, n, int, 0, math.inf))
        put("gate", None if gate is None else _config_values("gate", gate, n, float, 0, 1))
        if not isinstance(one_class_per_pixel, bool | np.bool_):
            raise ValueError(
                f"PostProcess.one_class_per_pixel: expected true or false, "
                f"got {one_class_per_pixel!r}"
            )
        put("one_class_per_pixel", bool(one_class_per_pixel))
        if scale_c is not None:
            c = scale_c
            if not _is_number(c, float) or not (math.isfinite(c) and c >= 1):
                raise ValueError(f"PostProcess.scale_c: expected null or a number >= 1, got {c!r}")
        put("scale_c", None if scale_c is None else float(scale_c))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], classes: int | None = None) -> PostProcess:
        """Build from a plain dict (e.g. loaded YAML); missing keys take the defaults, and
        the `tuned_with` record of a tuned file is skipped.

        `format` (2, what `to_dict` writes) says the dict was written since `scale_c` scales
        the minimum pixel counts; a dict with a `scale_c` but no format was written when it
        scaled the probability threshold, and is refused rather than read with another
        meaning.

        Args:
            classes: the models' classes: the dict's `classes` must agree, and without one
                it is this. None (a file on its own, before the models are known): the
                dict's `classes`, else the length of its per-class lists, else 4.

        Raises:
            ValueError: an unknown key (named, with the valid ones), a bad value, or a
                `scale_c` of the old rule.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"PostProcess: expected a mapping, got {type(d).__name__}")
        valid = [f.name for f in fields(cls)]
        version = d.get(FORMAT)
        if version is not None and (not _is_number(version, int) or version != FORMAT_VERSION):
            raise ValueError(
                f"PostProcess.format: {version!r} is not a format this sever reads "
                f"(expected {FORMAT_VERSION})"
            )
        d = {k: v for k, v in d.items() if k not in (TUNED_WITH, FORMAT)}
        for key in d:
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"PostProcess: unknown key {key!r}{hint}; valid keys: {', '.join(valid)}"
                )
        if classes is None:
            lists = [v for k, v in d.items() if k in PER_CLASS and isinstance(v, list)]
            d.setdefault("classes", len(lists[0]) if lists else DEFAULT_CLASSES)
        elif d.setdefault("classes", classes) != classes:
            raise ValueError(
                f"PostProcess.classes: {d['classes']}, but the models predict {classes} "
                "classes; tune it for these models (sever tune)"
            )
        postprocess = cls(**d)
        if version is None and postprocess.scale_c is not None:
            raise ValueError(
                "PostProcess.scale_c: without 'format: 2' this was written when scale_c scaled "
                "the probability threshold; it now scales min_pixels (the original project's "
                "rule): tune it again (sever tune), or add 'format: 2' to keep scale_c with "
                "the new meaning"
            )
        return postprocess

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, numbers, bools and None: `yaml.safe_dump` and `from_dict` take it."""
        return {
            FORMAT: FORMAT_VERSION,
            "threshold": list(self.threshold),
            "min_pixels": list(self.min_pixels),
            "one_class_per_pixel": self.one_class_per_pixel,
            "min_component": list(self.min_component),
            "gate": None if self.gate is None else list(self.gate),
            "scale_c": self.scale_c,
            "classes": self.classes,
        }


def postprocess(
    probs: Probs, config: PostProcess, presence: NDArray[Any] | Sequence[float] | None = None
) -> Masks:
    """One image's probabilities to masks through every step `config` turns on.

    Args:
        probs: `(C, H, W)` probabilities, C = `config.classes`.
        config: the per-class settings.
        presence: `(C,)` classifier probabilities that each class is present; required when
            `config.scale_c` or `config.gate` is set, ignored otherwise.

    Returns:
        bool masks `(C, H, W)`.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(
            f"postprocess: expected probs (C, H, W) for one image, got shape {probs.shape}; "
            "use postprocess_batch for (N, C, H, W)"
        )
    p = None if presence is None else _presence(presence, (1, probs.shape[0]), single=True)
    masks: Masks = _pipeline(probs[None], config, p)[0]
    return masks


def postprocess_batch(
    probs: Probs,
    config: PostProcess,
    presence: NDArray[Any] | None = None,
    winner: NDArray[np.integer[Any]] | None = None,
) -> Masks:
    """`postprocess` for a batch: probabilities `(N, C, H, W)` to bool masks `(N, C, H, W)`.

    Args:
        probs: `(N, C, H, W)` probabilities, C = `config.classes`.
        config: the per-class settings.
        presence: `(N, C)` classifier probabilities; as in `postprocess`.
        winner: `(N, H, W)` each pixel's most probable class when `probs` are a rounded
            copy (saved 1/255 levels) and the winner was taken before rounding, which
            creates ties; None: from `probs`.
    """
    probs = np.asarray(probs)
    if probs.ndim != 4:
        raise ValueError(
            f"postprocess_batch: expected probs (N, C, H, W), got shape {probs.shape}; "
            "use postprocess for one image (C, H, W)"
        )
    p = None if presence is None else _presence(presence, probs.shape[:2], single=False)
    if winner is not None and winner.shape != (probs.shape[0], *probs.shape[2:]):
        raise ValueError(f"winner: expected shape {(probs.shape[0], *probs.shape[2:])}")
    return _pipeline(probs, config, p, winner)


def _pipeline(
    probs: Probs,
    config: PostProcess,
    presence: NDArray[np.float64] | None,
    winner: NDArray[np.integer[Any]] | None = None,
) -> Masks:
    """The steps on a batch `(N, C, H, W)`, editing one mask array in place."""
    if probs.shape[1] != config.classes:
        raise ValueError(f"PostProcess is for {config.classes} classes, probs has {probs.shape[1]}")
    # A config tuned with a classifier must not quietly run without one.
    if presence is None and (config.gate is not None or config.scale_c is not None):
        raise ValueError(
            "PostProcess.gate and .scale_c need presence probabilities; pass presence or set "
            "them to null"
        )
    masks = np.ascontiguousarray(_threshold(probs, np.asarray(config.threshold)))
    if config.one_class_per_pixel and winner is not None:
        masks &= winner[:, None] == np.arange(config.classes)[None, :, None, None]
    elif config.one_class_per_pixel:
        _keep_most_probable(probs, masks)
    counts = _counts(masks)
    sizes = np.asarray(config.min_component)
    if sizes.any():
        _remove_small(masks, sizes, counts)
    least: NDArray[np.int64] = np.asarray(config.min_pixels)
    if config.scale_c is not None:
        assert presence is not None  # refused above
        least = scaled_min_pixels(least, presence, config.scale_c)
    masks[counts < least] = False
    if config.gate is not None:
        masks[presence < np.asarray(config.gate)] = False
    return masks


# --- helpers: every one works on batches (N, C, H, W) ------------------------------------


def _threshold(probs: Probs, t: float | Sequence[float] | NDArray[Any]) -> Masks:
    """probs `(N, C, H, W)` > t, with t a number, `(C,)` or `(N, C)`, in probs' dtype."""
    n, c = probs.shape[:2]
    dtype = probs.dtype if probs.dtype.kind == "f" else np.dtype(np.float64)
    ts = np.asarray(t, dtype)
    if ts.ndim == 1:
        ts = _per_class(ts, c, "t").astype(dtype)
    elif ts.ndim > 0 and ts.shape != (n, c):
        raise ValueError(
            f"t: expected a number, {c} values (one per class) or shape ({n}, {c}) "
            f"(one per image and class), got shape {ts.shape}"
        )
    return probs > ts[..., None, None]


def _keep_most_probable(probs: Probs, masks: Masks) -> None:
    """One class per pixel, in place."""
    # Comparing with the per-pixel maximum is several times faster than an argmax over C;
    # only exact ties (rare with floats) then need the argmax's lowest-index rule.
    is_max = probs >= probs.max(axis=1, keepdims=True)
    masks &= is_max
    classes = probs.shape[1]
    tied = np.add.reduce(is_max.view(np.uint8), axis=1, dtype=np.min_scalar_type(classes)) > 1
    n, h, w = np.nonzero(tied & np.logical_or.reduce(masks, axis=1))
    if n.size:
        # Index arrays split by a slice put the pixel axis first: (K, C).
        winner = probs[n, :, h, w].argmax(axis=1)
        masks[n, :, h, w] &= np.arange(classes) == winner[:, None]


def _remove_small(masks: Masks, sizes: NDArray[np.int64], counts: NDArray[np.int64]) -> None:
    """Drop components smaller than sizes[c] in place; `counts` (N, C) kept up to date."""
    for c in np.flatnonzero(sizes > 0):
        size = sizes[c]
        for i in np.flatnonzero(counts[:, c]):
            plane = masks[i, c]
            if counts[i, c] < size:  # every component is smaller than the whole mask
                plane[:] = False
                counts[i, c] = 0
                continue
            # Grana's algorithm: the same labels and stats as the default, but the default
            # (Spaghetti) spends ~2 ms gathering stats on a 256x1600 image even when empty.
            _, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
                plane.view(np.uint8), 8, cv2.CV_32S, cv2.CCL_GRANA
            )
            area = stats[:, cv2.CC_STAT_AREA]
            keep = area >= size
            keep[0] = False  # label 0 is the background
            if keep[1:].all():
                continue
            # mode="clip" skips the bounds check (labels index `keep` by construction).
            np.take(keep, labels, out=plane, mode="clip")
            counts[i, c] = area[keep].sum()


def _counts(masks: Masks) -> NDArray[np.int64]:
    """Pixels per (image, class) `(N, C)` int64; count_nonzero per plane beats .sum()."""
    n, c = masks.shape[:2]
    planes = masks.reshape(n * c, -1)
    return np.fromiter((np.count_nonzero(p) for p in planes), np.int64, n * c).reshape(n, c)


def _batch(x: NDArray[_Scalar], name: str) -> NDArray[_Scalar]:
    """`(C, H, W)` as a batch of one `(1, C, H, W)` view; `(N, C, H, W)` as it is."""
    if x.ndim == 3:
        return x[None]
    if x.ndim == 4:
        return x
    raise ValueError(f"{name}: expected (C, H, W) or (N, C, H, W), got shape {x.shape}")


def _mask_copy(masks: NDArray[Any]) -> Masks:
    """A C-contiguous bool copy: cv2 and the in-place helpers need both."""
    return np.array(masks, dtype=bool, order="C", copy=True)


def _presence(
    presence: NDArray[Any] | Sequence[float], shape: tuple[int, int], single: bool
) -> NDArray[np.float64]:
    """Presence probabilities as `(N, C)` float64, checked against the masks' shape."""
    p = np.asarray(presence, np.float64)
    want = shape[1:] if single else shape
    if p.shape != want:
        raise ValueError(f"presence: expected shape {want}, got {p.shape}")
    return p.reshape(shape)


def _per_class(
    value: float | Sequence[float] | NDArray[Any], classes: int, name: str
) -> NDArray[np.float64]:
    """`value` as `(C,)` float64: one number repeated, or exactly one per class."""
    return _one_per_class(value, classes, name).astype(np.float64)


def _per_class_counts(
    value: int | Sequence[int] | NDArray[Any], classes: int, name: str
) -> NDArray[np.int64]:
    """`value` as `(C,)` int64 whole numbers >= 0: one repeated, or one per class."""
    v = _one_per_class(value, classes, name)
    if v.dtype.kind not in "iub" and not np.array_equal(v, np.floor(v)):
        raise ValueError(f"{name}: expected whole numbers, got {v.tolist()}")
    if (v < 0).any():
        raise ValueError(f"{name}: expected values >= 0, got {v.tolist()}")
    return v.astype(np.int64)


def _one_per_class(
    value: float | Sequence[float] | NDArray[Any], classes: int, name: str
) -> NDArray[Any]:
    """`value` as `(C,)` in its own dtype: one number repeated, or exactly one per class."""
    v = np.asarray(value)
    if v.ndim == 0:
        v = np.full(classes, v)
    if v.shape != (classes,):
        raise ValueError(f"{name}: expected 1 or {classes} values (one per class), got {v.shape}")
    return v


def _is_number(value: object, kind: type) -> bool:
    """A real (kind float) or integral (kind int) number, bools excluded."""
    wanted = numbers.Integral if kind is int else numbers.Real
    return isinstance(value, wanted) and not isinstance(value, bool | np.bool_)


def _config_values(
    name: str, value: object, classes: int, kind: type[_Number], low: float, high: float
) -> tuple[_Number, ...]:
    """One number or `classes` numbers in [low, high] as a tuple of `classes` numbers."""
    values = [value] * classes if _is_number(value, float) else value
    if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray):
        raise ValueError(
            f"PostProcess.{name}: expected a number or {classes} values, got {value!r}"
        )
    values = list(values)
    if len(values) != classes:
        raise ValueError(
            f"PostProcess.{name}: expected {classes} values (one per class) or one number, "
            f"got {len(values)}: {values}"
        )
    type_name = "whole numbers" if kind is int else "numbers"
    for v in values:
        if not _is_number(v, kind) or not (low <= v <= high):
            bounds = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
            raise ValueError(f"PostProcess.{name}: expected {type_name} {bounds}, got {values}")
    return tuple(kind(v) for v in values)
