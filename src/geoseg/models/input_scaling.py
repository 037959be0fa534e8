"""The model's input scaling with pretrained weights: the weights' own, or the data statistics.

``encoder.input_scaling``:

- ``data``: every band standardised by the training data's mean and std (what geoseg does without
  weights);
- ``weights``: a band the weights were trained on is scaled as they expect (TorchGeo's SSL4EO weights:
  reflectance / 10000; a geoseg checkpoint: the statistics of the data it was trained on); other bands
  use the data statistics;
- ``auto`` (default): ``weights`` when the weights state a scaling and it suits the data, else ``data``.
  A scaling suits the data when it leaves the matched bands' spread (std) within 1/50..50 of what a
  standardisation gives: data in other units (reflectance 0–1 against weights for 0–10000) would
  otherwise reach the network 10,000 times too small.

ImageNet weights state no scaling here: their mean/std standardise 0–1 RGB photos channel by channel,
and for bands of any unit the data statistics do the same.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence

from geoseg.errors import GeosegError
from geoseg.models.band_names import match_bands
from geoseg.models.band_normalize import BandStatistics
from geoseg.models.pretrained import PretrainedWeights

log = logging.getLogger(__name__)

INPUT_SCALINGS = ("auto", "weights", "data")
SPREAD_LIMIT = 50.0


def check_input_scaling(value: str) -> str:
    if value not in INPUT_SCALINGS:
        raise GeosegError(f"encoder.input_scaling={value!r} is not one of {', '.join(INPUT_SCALINGS)}")
    return value


def choose_scaling(
    choice: str,
    pretrained: PretrainedWeights | None,
    stats: BandStatistics | None,
    band_names: Sequence[str | None] | None,
) -> tuple[list[float], list[float], str] | None:
    """(mean, std, in words) per data band for the weights' scaling, or None for the data statistics."""
    check_input_scaling(choice)
    if choice == "data" or pretrained is None or stats is None:
        return None
    stated = pretrained.mean is not None and pretrained.std is not None and pretrained.bands
    index = match_bands(pretrained.bands, band_names) if stated and band_names else []
    matched = [(j, i) for j, i in enumerate(index) if i is not None]
    if not matched:
        if choice == "weights":
            why = "the weights state no input scaling" if not stated else "no band of the data is theirs"
            raise GeosegError(
                f"encoder.input_scaling=weights: {why} ({pretrained.name}); use encoder.input_scaling=data"
            )
        return None
    mean, std = list(stats.mean), list(stats.std)
    spreads = [stats.std[j] / pretrained.std[i] for j, i in matched if pretrained.std[i] > 0]
    spread = statistics.median(spreads) if spreads else 1.0
    if choice == "auto" and not 1 / SPREAD_LIMIT <= spread <= SPREAD_LIMIT:
        log.warning(
            "encoder.input_scaling=auto: the scaling of %s would leave the data's spread at %.3g (about 1 "
            "is expected): the data are in other units than the weights', so the data statistics scale it "
            "(set encoder.input_scaling=data to say so, or =weights to force theirs)",
            pretrained.name,
            spread,
        )
        return None
    for j, i in matched:
        mean[j], std[j] = pretrained.mean[i], pretrained.std[i]
    words = f"the weights' scaling for {len(matched)} of {len(mean)} bands (data spread x{spread:.3g})"
    return mean, std, words
