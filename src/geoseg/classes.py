"""The classes a model predicts (index order, label codes, names, colours): shared by training's
TensorBoard images and by inference's writer, legend, quicklook, polygons and scoring."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class ClassInfo:
    """The classes a model predicts: index order, label codes, names and display colours."""

    codes: list[int]
    names: list[str]
    colors: list[tuple[int, int, int]]

    @classmethod
    def from_config(cls, classes: Sequence[Mapping[str, Any]]) -> ClassInfo:
        colors = [tuple(int(v) for v in c.get("color") or default_color(i)) for i, c in enumerate(classes)]
        return cls([int(c["code"]) for c in classes], [str(c["name"]) for c in classes], colors)

    def as_list(self) -> list[dict[str, Any]]:
        return [
            {"code": c, "name": n, "color": list(rgb)}
            for c, n, rgb in zip(self.codes, self.names, self.colors, strict=True)
        ]


def default_color(index: int) -> tuple[int, int, int]:
    """A distinct colour for classes the config gives none (golden-angle hues)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.65, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)
