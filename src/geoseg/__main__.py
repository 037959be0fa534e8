"""``python -m geoseg`` is the same as the ``geoseg`` console script."""

from geoseg.cli import main

main()
