"""geoseg: semantic segmentation of multispectral satellite imagery."""

from geoseg.errors import GeosegError

__all__ = ["GeosegError"]
__version__ = "0.1.0"
