"""Rasterio chip pipeline: scenes, windows, samplers, datasets, statistics and transforms."""
