"""Console and per-run file logging from logging.yml."""

from __future__ import annotations

import logging
import logging.config
import os
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


def add_file_log(path: Path) -> logging.Handler:
    """Also log everything from sever into `path` (the run's log file); returns the handler."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(_file_format.get("format"), _file_format.get("datefmt")))
    handler.setLevel(logging.DEBUG)
    logging.getLogger("sever").addHandler(handler)
    return handler


def remove_handler(handler: logging.Handler) -> None:
    logging.getLogger("sever").removeHandler(handler)
    handler.close()
