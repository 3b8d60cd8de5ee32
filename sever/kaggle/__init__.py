"""Kaggle: stage and publish a run's checkpoints, download the competition.

- `staging`: choose checkpoints, strip them to weights, write `upload/<name>/<stamp>/` with
  the config, Kaggle metadata and a model card (`card`), plus wheels (`wheels`).
- `client`: the kaggle package's Python API, imported lazily and without its import-time
  authentication; credential checks and one-line errors that never show a secret.
- `publish`: create a dataset or a new version of it, or a Kaggle Models instance version.
- `competition`: download and unzip the competition's files, resumably.

Nothing here is imported by training, so training never needs the kaggle package or a token.
"""

from sever.errors import SeverError


class KaggleError(SeverError):
    """Missing credentials, a refused request or an unreachable Kaggle: one line, exit 1."""
