"""``min_area=`` and ``simplify=`` of ``geoseg predict vectorize=true``: map units, or pixels (``20px``).

A number is in the scene's map units: metres (m² for an area) in a projected CRS, but degrees in a
geographic one (EPSG:4326), where ``min_area=20`` is larger than any scene and drops every polygon.
A value with ``px`` is in pixels of the scene's grid (an area in pixels, a tolerance in pixel widths),
the same on every CRS. A map-unit value that cannot be meant (a min_area over the whole scene; a
simplify of more than a few pixels in degrees) is warned about in one line that names the fix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rasterio.crs import CRS
from rasterio.transform import Affine

from geoseg.errors import GeosegError

PIXELS = re.compile(r"\s*((?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*px\s*", re.IGNORECASE)
GEOGRAPHIC_SIMPLIFY_PX = 5  # a simplify over this many pixel widths, in degrees, looks metric


@dataclass(frozen=True)
class Measure:
    """One of ``min_area=`` / ``simplify=``: a value, in map units or in pixels."""

    key: str  # min_area | simplify
    value: float
    pixels: bool = False

    @property
    def power(self) -> int:
        """2 for an area, 1 for a length."""
        return 2 if self.key == "min_area" else 1

    def in_map_units(self, pixel_area: float) -> float:
        """The value in map units (units² for an area), given the area of one pixel."""
        return self.value * math.sqrt(pixel_area) ** self.power if self.pixels else self.value

    def __str__(self) -> str:
        return f"{self.key}={self.value:g}{'px' if self.pixels else ''}"


def parse_measure(key: str, value: object) -> Measure:
    """``value`` of ``key=``: a number >= 0 (map units) or a string like ``'20px'`` (pixels)."""
    if isinstance(value, str) and (found := PIXELS.fullmatch(value)):
        return Measure(key, float(found.group(1)), pixels=True)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        example = "20px" if key == "min_area" else "1.5px"
        raise GeosegError(
            f"{key}={value!r} must be a number >= 0 in map units (m in a metric CRS, degrees in EPSG:4326) "
            f"or pixels, e.g. {key}={example}"
        )
    return Measure(key, float(value))


def pixel_area(transform: Affine) -> float:
    """The area of one pixel in map units² (1 for a grid without a transform)."""
    return abs(transform.a * transform.e - transform.b * transform.d) or 1.0


def unit_name(crs: CRS | None, power: int = 1) -> str:
    """What a map unit is in ``crs``: ``m``, ``degrees``, ``ft``..., with ``²`` for an area."""
    if crs is None:
        name = "px"  # no CRS: polygons in the file's pixel grid
    elif crs.is_geographic:
        name = "degrees"
    else:
        name = {"metre": "m", "meter": "m", "foot": "ft", "US survey foot": "ftUS"}.get(
            crs.linear_units, crs.linear_units or "map units"
        )
    return name + ("²" if power == 2 else "")


def described(measure: Measure, crs: CRS | None, transform: Affine) -> str:
    """``min_area=20px (0.0018 degrees²)`` or ``simplify=0.5 degrees``: the value and its unit."""
    unit = unit_name(crs, measure.power)
    if measure.pixels:
        return f"{measure} ({measure.in_map_units(pixel_area(transform)):.3g} {unit})"
    return f"{measure} {unit}"


def unit_warning(measure: Measure, crs: CRS | None, transform: Affine, height: int, width: int) -> str | None:
    """Why a map-unit ``measure`` cannot be meant on this grid (a line that names the fix), or None."""
    if measure.pixels or measure.value == 0 or crs is None:
        return None
    area = pixel_area(transform)
    unit = unit_name(crs, measure.power)
    fix = f"give it in pixels instead, e.g. {measure.key}={'20px' if measure.power == 2 else '1.5px'}"
    if measure.power == 2 and measure.value >= area * height * width:
        return (
            f"{measure} is in {unit} here ({crs.to_string()}), more than the whole scene "
            f"({area * height * width:.3g} {unit}), so it drops every polygon; {fix}"
        )
    if measure.power == 1 and crs.is_geographic and measure.value > GEOGRAPHIC_SIMPLIFY_PX * math.sqrt(area):
        return (
            f"{measure} is in {unit} here ({crs.to_string()}): {measure.value / math.sqrt(area):.0f} pixel "
            f"widths, which collapses the polygons; {fix}"
        )
    return None
