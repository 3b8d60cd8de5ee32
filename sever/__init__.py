"""sever: steel-surface-defect segmentation in the Kaggle Severstal format."""

import os

__version__ = "0.1.0"

# onnxruntime (1.29+) uploads telemetry from Linux too, a few seconds after a session runs
# and from then on, unless this is set before it initialises: sever runs offline (Kaggle
# notebooks, inspection lines), so it is off unless the user says otherwise. (Through a
# test's HTTPS proxy those uploads failed whichever Kaggle-stub test was running then.)
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
