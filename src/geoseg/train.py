"""``python -m geoseg.train [overrides]``: the training entry for torchrun, the same as ``geoseg train``.

torchrun --nproc-per-node=4 -m geoseg.train hydra.run.dir=runs/x norm=syncbatchnorm
"""

from __future__ import annotations

import sys

from geoseg.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
