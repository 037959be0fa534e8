"""geoseg: semantic segmentation of multispectral satellite imagery."""

import os

from geoseg.errors import GeosegError

# albumentations checks PyPI for a newer release on import: on offline cluster nodes that is a failed
# network call (and a warning) in every process and DataLoader worker. Set the variable to 0 to allow it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__all__ = ["GeosegError"]
__version__ = "0.1.0"
