"""The legend of a class map for GIS software: GDAL category names and a raster attribute table.

A GeoTIFF has no tag for class names, so GDAL keeps them in the file's PAM sidecar,
``<file>.aux.xml``: ``CategoryNames`` (the name of each pixel value, which GDAL-based tools show)
and a thematic ``GDALRasterAttributeTable`` with the value, class name, label code and colour of
each class (QGIS 3.30+ and ArcGIS build their legend from it). The sidecar is written next to the
class map and renamed with it; the colour table and the ``geoseg_classes`` tag stay in the GeoTIFF
itself, so a class map copied without its sidecar still has colours and names for geoseg.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from geoseg.classes import ClassInfo

# GDALRATFieldType and GDALRATFieldUsage codes (gdal.h)
INTEGER, STRING = 0, 2
GENERIC, NAME, MINMAX, RED, GREEN, BLUE = 0, 2, 5, 6, 7, 8
FIELDS = (("Value", INTEGER, MINMAX), ("Class", STRING, NAME), ("Code", INTEGER, GENERIC),
          ("Red", INTEGER, RED), ("Green", INTEGER, GREEN), ("Blue", INTEGER, BLUE))  # fmt: skip


def legend_path(class_map: str) -> str:
    """Where GDAL looks for the legend of ``class_map``."""
    return f"{class_map}.aux.xml"


def legend_xml(classes: ClassInfo) -> str:
    """PAM XML for band 1 of a class map whose pixel value ``i`` is class ``i`` of ``classes``."""
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    names = ET.SubElement(band, "CategoryNames")
    for name in classes.names:
        ET.SubElement(names, "Category").text = name
    table = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    for i, (name, kind, usage) in enumerate(FIELDS):
        field = ET.SubElement(table, "FieldDefn", index=str(i))
        for tag, value in (("Name", name), ("Type", kind), ("Usage", usage)):
            ET.SubElement(field, tag).text = str(value)
    for i, (code, name, rgb) in enumerate(zip(classes.codes, classes.names, classes.colors, strict=True)):
        row = ET.SubElement(table, "Row", index=str(i))
        for value in (i, name, code, *rgb):
            ET.SubElement(row, "F").text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_legend(path: str, classes: ClassInfo) -> None:
    """Write the legend XML of ``classes`` to ``path`` (a temporary name renamed by the caller)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(legend_xml(classes))
