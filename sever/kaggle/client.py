"""The kaggle package's Python API, on sever's terms.

Importing the top-level `kaggle` module builds a client and authenticates at import time
(printing help, or calling the network for a token), so `kaggle_api()` loads
`kaggle.api.kaggle_api_extended` under a bare parent package instead. Credentials are
found where the kaggle client looks for them (checked up front, without the network, for a
one-line error), are never printed, and are scrubbed from every message that passes through
here. The client's own prints go to the debug log.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import requests

from sever.kaggle import KaggleError

log = logging.getLogger(__name__)

TOKEN_HELP = (
    "set KAGGLE_API_TOKEN (or KAGGLE_USERNAME and KAGGLE_KEY), or put kaggle.json in {dir} "
    "(kaggle.com > Settings > API > Create New Token)"
)


def config_dir() -> Path:
    """Where the kaggle client reads kaggle.json: $KAGGLE_CONFIG_DIR, ~/.kaggle, or (on
    Linux, when ~/.kaggle does not exist) $XDG_CONFIG_HOME/kaggle."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path("~/.kaggle").expanduser()
    if sys.platform.startswith("linux") and not home.exists():
        xdg = os.environ.get("XDG_CONFIG_HOME") or Path("~/.config").expanduser()
        return Path(xdg) / "kaggle"
    return home


def _kaggle_json() -> dict:
    path = config_dir() / "kaggle.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def kaggle_json_problem() -> str | None:
    """Why kaggle.json, if there is one, gives no credentials (never quoting it), or None."""
    path = config_dir() / "kaggle.json"
    if not path.exists():
        return None
    if path.is_dir():
        return f"{path}: is a folder, not the kaggle.json token file"
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        return f"{path}: not a text file, so not a Kaggle token"
    except json.JSONDecodeError as exc:  # the position only: the file holds a secret
        where = f"line {exc.lineno} column {exc.colno}"
        return f"{path}: not valid JSON (at {where})"
    except OSError as exc:
        return f"{path}: cannot read it ({exc.strerror})"
    if not isinstance(data, dict):
        return f'{path}: expected {{"username": ..., "key": ...}}, found a {type(data).__name__}'
    lacking = [k for k in ("username", "key") if not data.get(k)]
    if lacking:
        return f"{path}: no {' and no '.join(repr(k) for k in lacking)} in it"
    return None


def _access_token() -> tuple[str | None, str | None]:
    """(token, where) as kagglesdk finds it: KAGGLE_API_TOKEN or ~/.kaggle/access_token."""
    try:  # with kaggle itself, imported only when credentials are looked for
        from kagglesdk import get_access_token_from_env
    except ImportError:
        return None, None
    return get_access_token_from_env()


def _oauth_file() -> Path:
    return Path("~/.kaggle/credentials.json").expanduser()


def credential_source() -> str | None:
    """Where the kaggle client will find credentials (never the secret), or None.

    The same order as the client: an access token, then a legacy key (environment over
    kaggle.json, key by key), then OAuth credentials from `kaggle auth login`.
    """
    token, where = _access_token()
    if token:
        return where
    stored = _kaggle_json()
    username = os.environ.get("KAGGLE_USERNAME") or stored.get("username")
    key = os.environ.get("KAGGLE_KEY") or stored.get("key")
    if username and key:
        return "KAGGLE_KEY" if os.environ.get("KAGGLE_KEY") else str(config_dir() / "kaggle.json")
    try:
        if json.loads(_oauth_file().read_text()).get("refresh_token"):
            return str(_oauth_file())
    except (OSError, ValueError, AttributeError):
        pass
    return None


def local_username() -> str | None:
    """The Kaggle username known without the network (KAGGLE_USERNAME or kaggle.json)."""
    return os.environ.get("KAGGLE_USERNAME") or _kaggle_json().get("username") or None


def secrets() -> list[str]:
    """Every credential value in reach, to scrub from messages."""
    found = [os.environ.get("KAGGLE_KEY"), _kaggle_json().get("key"), _access_token()[0]]
    env_token = os.environ.get("KAGGLE_API_TOKEN")
    if env_token and not Path(env_token).exists():
        found.append(env_token)
    try:
        stored = json.loads(_oauth_file().read_text())
        found += [stored.get("refresh_token"), stored.get("access_token")]
    except (OSError, ValueError, AttributeError):
        pass
    return [s for s in found if isinstance(s, str) and len(s) >= 4]


def redact(text: str) -> str:
    """`text` with every credential value replaced by ***."""
    for secret in sorted(set(secrets()), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def kaggle_api_class() -> type:
    """`kaggle.api.kaggle_api_extended.KaggleApi`, without running `kaggle/__init__.py`.

    That file authenticates at import time; here a bare `kaggle` package stands in for it
    while the module loads (the module only needs the package's `__version__`).
    """
    if "kaggle.api.kaggle_api_extended" in sys.modules:
        return sys.modules["kaggle.api.kaggle_api_extended"].KaggleApi
    spec = importlib.util.find_spec("kaggle")
    if spec is None or not spec.submodule_search_locations:
        raise KaggleError("the kaggle package is not installed: pip install kaggle six")
    had_real = "kaggle" in sys.modules
    if not had_real:
        shell = types.ModuleType("kaggle")
        shell.__path__ = list(spec.submodule_search_locations)
        shell.__spec__ = spec
        try:
            setattr(shell, "__version__", version("kaggle"))  # noqa: B010 (a bare module)
        except PackageNotFoundError:
            setattr(shell, "__version__", "0")  # noqa: B010
        sys.modules["kaggle"] = shell
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as exc:
        hint = " (kaggle 2.x needs six: pip install six)" if "six" in str(exc) else ""
        raise KaggleError(f"cannot import the kaggle package: {exc}{hint}") from None
    finally:
        if not had_real:
            # A later `import kaggle` by the user's own code then runs the real package.
            sys.modules.pop("kaggle", None)
    return KaggleApi


def connect():
    """An authenticated `KaggleApi`.

    Raises:
        KaggleError: no credentials anywhere, or Kaggle refused them.
    """
    source = credential_source()
    if source is None:
        problem = kaggle_json_problem()
        if problem:
            raise KaggleError(
                f"{problem}; download a new one at kaggle.com > Settings > API > Create New "
                "Token (or set KAGGLE_API_TOKEN)"
            )
        raise KaggleError("no Kaggle credentials: " + TOKEN_HELP.format(dir=config_dir()))
    api = kaggle_api_class()()
    # The class reads these at import; take them from the environment as it is now. Never
    # pass --verbose: the client then prints request headers, credentials included.
    api.args = ["--local"] if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" else []
    api.config_dir = str(config_dir())
    api.config = str(config_dir() / "kaggle.json")
    with kaggle_errors("authenticating with Kaggle"), quiet_client():
        try:
            api.authenticate()
        except SystemExit:
            raise KaggleError(
                f"Kaggle did not accept the credentials from {source}: create a new token at "
                "https://www.kaggle.com/settings/api"
            ) from None
    log.debug("Kaggle credentials from %s", source)
    return api


def username(api) -> str:
    """The authenticated user's name."""
    name = api.config_values.get("username")
    if not name:
        raise KaggleError("Kaggle did not report a username for these credentials")
    return name


@contextmanager
def quiet_client() -> Iterator[None]:
    """Send what the kaggle client prints on stdout to the debug log, scrubbed."""
    buffer = io.StringIO()
    try:
        with redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                log.debug("kaggle: %s", redact(line.strip()))


def describe_http(exc: Exception, forbidden: str = "") -> str:
    """One line for an HTTP error from the kaggle client."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    detail = str(exc).splitlines()[0] if str(exc) else ""
    if response is not None:
        try:
            detail = response.json().get("message") or detail
        except (ValueError, AttributeError):
            pass
    if status == 401:
        return (
            "Kaggle rejected the credentials (401 Unauthorized); create a new token at "
            "https://www.kaggle.com/settings/api"
        )
    if status == 403:
        return f"Kaggle refused the request (403 Forbidden: {detail}){forbidden}"
    if status == 404:
        return f"not found on Kaggle (404: {detail})"
    if status == 429:
        return "Kaggle's rate limit was hit (429 Too Many Requests); try again in a few minutes"
    return f"Kaggle answered HTTP {status}: {detail}" if status else detail


@contextmanager
def kaggle_errors(action: str, forbidden: str = "") -> Iterator[None]:
    """Turn what the kaggle client raises into one scrubbed `KaggleError` line.

    Args:
        action: what was being done, e.g. 'creating dataset me/x'.
        forbidden: appended to a 403 message (e.g. where to accept competition rules).
    """
    try:
        yield
    except KaggleError as exc:
        raise KaggleError(redact(str(exc))) from None
    except requests.HTTPError as exc:
        raise KaggleError(redact(f"{action}: {describe_http(exc, forbidden)}")) from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        how = "timed out" if isinstance(exc, requests.Timeout) else "no connection"
        raise KaggleError(
            redact(f"{action}: could not reach Kaggle ({how}); check the network")
        ) from None
    except (ValueError, OSError) as exc:
        # The client's own checks (slug and title lengths, metadata) raise ValueError.
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KaggleError(redact(f"{action}: {detail}")) from None
