"""Data: readers for the real dataset formats (300W-LP, AFLW2000-3D), the training store
(crop, preprocess, shards, loader) and the bundled default dataset."""
from .samples import LabelError, LabelledSample, find_samples, read_image, read_label, read_sample

__all__ = ["LabelError", "LabelledSample", "find_samples", "read_image", "read_label", "read_sample",
           "default_store"]


def default_store():
    """Folder of the bundled default training store (see nl3dmm.data.default_data)."""
    from .default_data import default_store as path  # lazy: keeps `import nl3dmm.data` light
    return path()
