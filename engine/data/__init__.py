"""Data: readers for the real dataset formats (300W-LP, AFLW2000-3D)."""
from .samples import LabelError, LabelledSample, find_samples, read_image, read_label, read_sample

__all__ = ["LabelError", "LabelledSample", "find_samples", "read_image", "read_label", "read_sample"]
