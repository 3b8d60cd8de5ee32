"""The `sever` command line, by area: `app` holds the group, the flags every command takes
and `main` (errors to one line and an exit status); `options` the inference commands'
shared options; `train`, `data`, `infer`, `validate` and `kaggle` the commands, each
registering itself on the group when imported here.

Commands only parse, call one library function and report. Each imports the library it
calls inside its function: torch, SMP and albumentations take 5-7 s to import, and
`sever --help`, `sever config` or a config typo answer in about 0.3-0.6 s without them.
"""

from sever.cli import data, infer, kaggle, train, validate  # noqa: F401 (they register)
from sever.cli.app import cli, main

__all__ = ["cli", "main"]
