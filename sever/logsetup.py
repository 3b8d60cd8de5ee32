"""Console and per-run file logging from logging.yml."""

from __future__ import annotations

import logging
import logging.config
import os
import sys
from pathlib import Path

from sever.errors import ConfigError
from sever.yamlio import read_yaml

PACKAGED = Path(__file__).with_name("logging.yml")
_file_format: dict = {}


def logging_file() -> Path:
    """$SEVER_LOGGING (which must exist), else ./logging.yml if present, else the default."""
    chosen = os.environ.get("SEVER_LOGGING")
    if chosen:
        if Path(chosen).is_dir():
            raise ConfigError(
                f"SEVER_LOGGING={chosen}: is a folder; point it at a logging YAML file, or unset it"
            )
        if not Path(chosen).is_file():
            raise ConfigError(f"SEVER_LOGGING={chosen}: no such file; unset it or fix the path")
        return Path(chosen)
    return Path("logging.yml") if Path("logging.yml").is_file() else PACKAGED


def setup_logging(verbose: bool = False) -> None:
    """Configure logging from $SEVER_LOGGING, ./logging.yml, or the packaged default.

    Raises:
        ConfigError: the chosen file is missing or a folder ($SEVER_LOGGING), not YAML,
            or not a logging configuration; the message names it.
    """
    path = logging_file()
    config = read_yaml(path, "logging configuration")
    try:
        if not isinstance(config, dict):
            raise ValueError("expected a mapping of keys (version: 1, handlers, loggers)")
        logging.config.dictConfig(config)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"{path}: not a logging configuration ({reason}); fix it, remove it or set "
            "SEVER_LOGGING to another file (the format: logging.config.dictConfig)"
        ) from None
    _file_format.update(config.get("formatters", {}).get("detailed", {}))
    if verbose:
        for handler in logging.getLogger("sever").handlers:
            handler.setLevel(logging.DEBUG)


class RunLogHandler(logging.FileHandler):
    """The run's log file. A write that fails (a full disk) stops it with one warning on
    the console, where logging would print a traceback for every line after it."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)
            return
        self.failed = True
        logging.getLogger("sever").warning(
            "%s: cannot write the log (%s); it stops here, the run goes on",
            self.baseFilename,
            error.strerror or error,
        )

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # the unwritten rest of a failed write: the warning said so
            pass


def add_file_log(path: Path) -> logging.Handler:
    """Also log everything from sever into `path` (the run's log file); returns the handler."""
    handler = RunLogHandler(path)
    handler.setFormatter(logging.Formatter(_file_format.get("format"), _file_format.get("datefmt")))
    handler.setLevel(logging.DEBUG)
    logging.getLogger("sever").addHandler(handler)
    return handler


def remove_handler(handler: logging.Handler) -> None:
    logging.getLogger("sever").removeHandler(handler)
    handler.close()
