"""`sever upload`: stage a run, then create a Kaggle dataset (or a new version of it), or a
Kaggle Models variation (or a new version of it), through the kaggle package's Python API.

Credentials are checked (and, for a token, verified) before anything is staged; once the
folder is staged, any failure keeps it and names it in the one-line error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import requests

from sever.fileio import check_output_folder
from sever.inference.postprocess_file import TUNED_FILE, read_postprocess
from sever.kaggle import KaggleError, client
from sever.kaggle.staging import (
    UPLOAD_ROOT,
    Staged,
    Target,
    choose_checkpoints,
    find_run,
    make_target,
    stage,
)
from sever.kaggle.transfers import shown_transfers
from sever.kaggle.wheels import KAGGLE_MISSING

log = logging.getLogger(__name__)


@dataclass
class UploadOptions:
    """What `sever upload` was asked to do (see the CLI's help for each)."""

    run: Path
    epochs: list[int] = field(default_factory=list)
    best: bool = False
    last: bool = False
    target: str = "dataset"
    handle: str | None = None
    public: bool = False
    message: str | None = None
    weights_only: bool = False
    with_package: bool = False
    with_deps: bool = False
    dry_run: bool = False
    root: Path = UPLOAD_ROOT


@dataclass
class UploadResult:
    """The staged folder and what happened on Kaggle ('dry run', 'created', 'new version')."""

    staged: Staged
    action: str
    message: str
    url: str | None = None

    def report(self) -> list[str]:
        """What the CLI prints: the staged files and sizes, then what Kaggle got."""
        staged = self.staged
        note = " (replaced the earlier staging of this run)" if staged.replaced else ""
        width = max(len(p.name) for p in staged.files) + 2
        lines = [f"staged {staged.folder}{note}"]
        lines += [f"  {p.name:<{width}}{p.stat().st_size / 1e6:10.1f} MB" for p in staged.files]
        lines.append(f"  {'total':<{width}}{staged.size / 1e6:10.1f} MB")
        where = describe_target(staged.target)
        if self.action == "dry run":
            lines.append(f"dry run: nothing sent; {where} would be created or get a new version")
        else:
            lines.append(f"{self.action}: {where}: {self.url}")
        return lines


def upload_run(options: UploadOptions) -> UploadResult:
    """Stage `options.run` and publish it (unless a dry run).

    Raises:
        CheckpointError: no such run, no checkpoints, an unknown epoch.
        KaggleError: no credentials or a refused request; after staging, the message
            names the kept folder.
    """
    run, given = find_run(options.run)
    checkpoints = choose_checkpoints(run, options.epochs, options.best, options.last, given)
    if (run / TUNED_FILE).is_file():
        read_postprocess(run / TUNED_FILE)  # a bad file is one line before anything is staged
    check_output_folder(Path(options.root) / run.parent.name / run.name, "--staging-dir")
    api = None
    if options.dry_run:
        owner = client.local_username()
        if owner is None and not options.handle:
            log.warning(
                "no Kaggle username here (KAGGLE_USERNAME or kaggle.json): the staged metadata "
                "says YOUR-KAGGLE-USERNAME; a real upload fills in yours"
            )
    else:
        api = client.connect()
        owner = client.username(api)
    target = make_target(options.target, run, owner, options.handle, options.public)
    packages: tuple[str, ...] = ()
    if options.with_package or options.with_deps:
        packages = ("sever", *(KAGGLE_MISSING if options.with_deps else ()))
    staged = stage(
        run,
        checkpoints,
        target,
        weights_only=options.weights_only,
        packages=packages,
        root=options.root,
    )
    message = options.message or default_message(staged)
    if api is None:
        return UploadResult(staged, "dry run", message)
    try:
        action, url = publish(api, staged, message)
    except KaggleError as exc:
        raise KaggleError(f"{exc} (staged folder kept: {staged.folder})") from None
    return UploadResult(staged, action, message, url)


def default_message(staged: Staged) -> str:
    run = staged.run
    parts = []
    for c in staged.checkpoints:
        dice = c.metrics.get("val_dice_mean")
        parts.append(f"{c.name} (epoch {c.epoch}" + (f", Dice {dice:.4f})" if dice else ")"))
    return f"sever {run.parent.name}/{run.name}: " + ", ".join(parts)


def publish(api, staged: Staged, message: str) -> tuple[str, str]:
    """Send the staged folder to its target; returns (action, url)."""
    if staged.target.kind == "model":
        return publish_model(api, staged, message)
    return publish_dataset(api, staged, message)


def exists(fetch, action: str) -> bool:
    """Whether `fetch()` finds the thing on Kaggle.

    A 404, or a 403 (how Kaggle may answer for a private or missing slug), means no: the
    create call that follows then says plainly if the slug is taken.
    """
    with client.kaggle_errors(action), client.quiet_client():
        try:
            fetch()
        except requests.HTTPError as exc:
            if getattr(exc.response, "status_code", None) in (403, 404):
                return False
            raise
    return True


def publish_dataset(api, staged: Staged, message: str) -> tuple[str, str]:
    target, folder = staged.target, str(staged.folder)
    ref = f"{target.owner}/{target.slug}"
    if exists(lambda: api.dataset_status(ref), f"looking up dataset {ref}"):
        action = "new version"
        log.info("uploading a new version of dataset %s", ref)
        with (
            client.kaggle_errors(f"creating a new version of dataset {ref}"),
            client.quiet_client(),
        ):
            with shown_transfers(api):
                result = api.dataset_create_version(folder, message, quiet=False, dir_mode="skip")
    else:
        action = "created"
        log.info("creating dataset %s", ref)
        with (
            client.kaggle_errors(f"creating dataset {ref}"),
            client.quiet_client(),
            shown_transfers(api),
        ):
            result = api.dataset_create_new(folder, public=target.public, quiet=False)
    check_response(result, f"dataset {ref}")
    if getattr(result, "invalid_tags", None):
        log.warning("Kaggle ignored unknown tags: %s", ", ".join(result.invalid_tags))
    return action, result.url or f"https://www.kaggle.com/datasets/{ref}"


def publish_model(api, staged: Staged, message: str) -> tuple[str, str]:
    target, folder = staged.target, str(staged.folder)
    model = f"{target.owner}/{target.slug}"
    instance = target.handle
    if not exists(lambda: api.model_get(model), f"looking up model {model}"):
        log.info("creating model %s", model)
        with client.kaggle_errors(f"creating model {model}"), client.quiet_client():
            check_response(api.model_create_new(folder), f"model {model}")
    if exists(lambda: api.model_instance_get(instance), f"looking up model variation {instance}"):
        action = "new version"
        log.info("uploading a new version of %s", instance)
        with client.kaggle_errors(f"creating a new version of {instance}"), client.quiet_client():
            with shown_transfers(api):
                result = api.model_instance_version_create(instance, folder, message, quiet=False)
    else:
        action = "created"
        log.info("creating model variation %s", instance)
        with client.kaggle_errors(f"creating model variation {instance}"), client.quiet_client():
            with shown_transfers(api):
                result = api.model_instance_create(folder, quiet=False)
    check_response(result, instance)
    return action, result.url or f"https://www.kaggle.com/models/{model}"


def check_response(result, what: str) -> None:
    """Kaggle reports some refusals in the response body rather than the HTTP status."""

    if result is None:
        raise KaggleError(f"{what}: Kaggle returned no response")
    error = getattr(result, "error", None)
    status = getattr(result, "status", None)
    if error or (isinstance(status, str) and status and status.lower() not in ("ok", "ready")):
        raise KaggleError(client.redact(f"{what}: Kaggle refused it: {error or status}"))


def describe_target(target: Target) -> str:
    kind = "model variation" if target.kind == "model" else "dataset"
    return f"{kind} {target.handle}"
