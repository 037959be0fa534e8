"""Whole-scene inference: streaming sliding-window prediction to GeoTIFF, and scene evaluation."""
