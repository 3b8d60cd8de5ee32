"""The kaggle client's upload and download progress, shown where users run sever.

The client draws a tqdm bar per file, and only when not `quiet`. Here it always runs
unquiet (its prints go to the debug log through `quiet_client`), and its `tqdm` goes
through `sever.progress.Tracker`, named by the file: a bar on a terminal, a plain line
every SEVER_PROGRESS_INTERVAL seconds elsewhere (a Kaggle notebook, a job log).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from sever.progress import tqdm_replaced


@contextmanager
def shown_transfers(api) -> Iterator[None]:
    """While inside, `api`'s uploads and downloads report progress per file."""
    module = sys.modules[type(api).__module__]
    current = {"name": "transfer"}
    upload, download = api.upload_complete, api.download_file

    def upload_complete(path, *args, **kwargs):
        current["name"] = f"upload {os.path.basename(path)}"
        return upload(path, *args, **kwargs)

    def download_file(response, outfile, *args, **kwargs):
        current["name"] = f"download {os.path.basename(outfile)}"
        return download(response, outfile, *args, **kwargs)

    # Instance attributes shadow the methods the client calls on itself.
    api.upload_complete, api.download_file = upload_complete, download_file
    try:
        with tqdm_replaced(module, lambda: current["name"]):
            yield
    finally:
        del api.upload_complete, api.download_file
