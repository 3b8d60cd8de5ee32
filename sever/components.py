"""The names a config can pick, apart from the libraries that build what they name.

`sever.config` checks recipe, sampler, optimiser and scheduler names against these, so it
imports neither torch nor albumentations to do so; the modules that build the components
(data.augment, data.sampling, model.optim) bind each name to its builder with
`Names.registry`, which refuses a builder for a name not listed here or a name left
without one. Architectures and encoders are SMP's and timm's own names: config checks them
through sever.model.catalogue, in validation's second pass (config.NAMES_CHECKED).
"""

from __future__ import annotations

from sever.registry import Names

RECIPES = Names("augmentation recipe", ("none", "light", "medium", "heavy-crop"))
SAMPLERS = Names("sampler", ("random", "class-balanced"))
OPTIMIZERS = Names("optimizer", ("radam", "adamw", "sgd"))
SCHEDULERS = Names("scheduler", ("flat-cosine", "flat-logistic", "constant", "plateau"))
