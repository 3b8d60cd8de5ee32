"""sever: steel-surface-defect segmentation in the Kaggle Severstal format."""

__version__ = "0.1.0"
