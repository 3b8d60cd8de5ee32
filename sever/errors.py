"""User-facing errors: each one prints as a single line and maps to an exit status.

Anything raised as a `SeverError` is the user's to fix (a bad config, a broken CSV, a
missing checkpoint); the CLI prints its message without a traceback. Everything else is
a bug and keeps its traceback.
"""


class SeverError(Exception):
    """An error the user can fix; its message is the one line the CLI prints."""

    exit_code = 1


class ConfigError(SeverError):
    """An experiment config or command-line override that does not validate."""

    exit_code = 2


class DataError(SeverError):
    """A dataset, CSV or image that is missing or malformed."""


class CheckpointError(SeverError):
    """A checkpoint or run directory that is missing, corrupt or incompatible."""


class TrainingStopped(SeverError):
    """The loss became non-finite; the last good checkpoint is untouched."""


class Interrupted(SeverError):
    """A run stopped on request (Ctrl-C, SIGTERM) with its state saved; the message says
    how to resume. Not a mistake: the CLI prints it without 'error:'."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class OptionError(SeverError):
    """A command-line option or argument whose value cannot work (an output path that is a
    folder, a device that does not exist); found before any work starts."""

    exit_code = 2


class UsageError(OptionError):
    """Options that do not go together, or a choice left out (--folds with --resume,
    predict without --images), found by the library a command calls; the CLI prints it as
    click prints its own usage errors, pointing at the command's --help."""


class WriteError(SeverError):
    """An output that could not be written (a full disk, a read-only file system); the
    message names the file, and what it replaces is kept as it was. `path` is that file."""

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path
