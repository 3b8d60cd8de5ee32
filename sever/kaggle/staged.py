"""What a staged upload folder is: where it goes on Kaggle, its checkpoints, its files.

`sever.kaggle.staging` builds a `Staged`, `card` writes its model card and `publish`
uploads it: the three read this plain data, so none of them imports another for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MODEL_FRAMEWORK = "pyTorch"


@dataclass
class Target:
    """Where the staged folder goes on Kaggle.

    Attributes:
        kind: 'dataset' or 'model'.
        owner: the Kaggle user or organisation (staging.UNKNOWN_OWNER in a dry run without one).
        slug: the dataset's or model's slug.
        title: its title (6-50 characters for a dataset).
        variation: for a model, the instance (variation) slug; the framework is PyTorch.
        public: make it public when it is created (a new version keeps the visibility).
    """

    kind: str
    owner: str
    slug: str
    title: str
    variation: str | None = None
    public: bool = False

    @property
    def handle(self) -> str:
        if self.kind == "model":
            return f"{self.owner}/{self.slug}/{MODEL_FRAMEWORK.lower()}/{self.variation}"
        return f"{self.owner}/{self.slug}"

    @property
    def input_dir(self) -> str:
        """Where a Kaggle notebook sees the files (a model's version is only known later)."""
        if self.kind == "model":
            return f"/kaggle/input/{self.slug}/pytorch/{self.variation}/1"
        return f"/kaggle/input/{self.slug}"


@dataclass
class StagedCheckpoint:
    """One staged checkpoint and what the model card says about it."""

    name: str
    source: Path
    epoch: int
    metrics: dict[str, float]
    validated_at: int | None
    size: int
    source_size: int
    fingerprint: str = ""  # weights_fingerprint of its evaluated weights


@dataclass
class Staged:
    """A complete staged folder."""

    folder: Path
    run: Path
    target: Target
    config: dict
    versions: dict
    checkpoints: list[StagedCheckpoint]
    files: list[Path] = field(default_factory=list)
    wheels: list[str] = field(default_factory=list)
    weights_only: bool = False
    replaced: bool = False

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files)
