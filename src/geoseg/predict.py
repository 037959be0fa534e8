"""``python -m geoseg.predict [overrides]``: ``geoseg predict`` as a module, for torchrun.

torchrun --nproc-per-node=4 -m geoseg.predict checkpoint=runs/x/best.pt input='scenes/*.tif' output=preds/
"""

from __future__ import annotations

import sys

from geoseg.cli import main

if __name__ == "__main__":
    main(["predict", *sys.argv[1:]])
