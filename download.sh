#!/usr/bin/env bash
# Download the Severstal competition data with the Kaggle API, unzip it and check it.
#   ./download.sh [DATA_DIR]     (default: data/raw/severstal-steel-defect-detection)
# Needs a Kaggle API token (KAGGLE_USERNAME + KAGGLE_KEY, or kaggle.json in
# $KAGGLE_CONFIG_DIR or ~/.kaggle) and the competition's rules accepted on kaggle.com.
# Safe to run again: a finished download is not fetched twice.
set -euo pipefail
cd "$(dirname "$0")"
COMPETITION=severstal-steel-defect-detection
DEST=${1:-data/raw/$COMPETITION}
BIN=.venv/bin
[ -x "$BIN/sever" ] || BIN=$(dirname "$(command -v sever || echo /usr/bin/sever)")

token_dir=${KAGGLE_CONFIG_DIR:-${HOME:-}/.kaggle}
if [ -z "${KAGGLE_USERNAME:-}${KAGGLE_API_TOKEN:-}" ] && [ ! -f "$token_dir/kaggle.json" ]; then
    echo "error: no Kaggle API token: set KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json" \
         "in $token_dir (kaggle.com > Settings > API > Create New Token)" >&2
    exit 1
fi

mkdir -p "$DEST"
if [ ! -f "$DEST/.complete" ]; then
    "$BIN/kaggle" competitions download -c "$COMPETITION" -p "$DEST" || {
        echo "error: download failed; have you accepted the rules at" \
             "https://www.kaggle.com/c/$COMPETITION/rules ?" >&2
        exit 1
    }
    "$BIN/python" -m zipfile -e "$DEST/$COMPETITION.zip" "$DEST"
    rm -f "$DEST/$COMPETITION.zip"
    touch "$DEST/.complete"
fi
"$BIN/sever" check-data "$DEST"
