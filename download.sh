#!/usr/bin/env bash
# Download the Severstal competition data with the Kaggle API, unzip it and check it.
#   ./download.sh [DATA_DIR] [--force]   (default: data/raw/severstal-steel-defect-detection)
# The work is `sever download` (see README.rst, "Kaggle"): it needs a Kaggle API token
# (KAGGLE_API_TOKEN, or KAGGLE_USERNAME + KAGGLE_KEY, or kaggle.json in $KAGGLE_CONFIG_DIR
# or ~/.kaggle) and the competition's rules accepted on kaggle.com. Safe to run again: a
# finished download is not fetched twice, an interrupted one resumes.
set -euo pipefail
cd "$(dirname "$0")"
BIN=.venv/bin
[ -x "$BIN/sever" ] || BIN=$(dirname "$(command -v sever || echo /nonexistent/sever)")
if [ ! -x "$BIN/sever" ]; then
    echo "error: sever is not installed: run 'make install' first" >&2
    exit 1
fi
exec "$BIN/sever" download "$@"
