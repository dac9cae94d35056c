"""Poisson variates from a seeded `random.Random`, exact at any mean.

Small means by multiplying uniforms (Knuth); from 10 up, Hoermann's transformed rejection with
squeeze (PTRS, "The transformed rejection method for generating Poisson random variables",
1993), which needs about two uniforms per draw whatever the mean.
"""

from __future__ import annotations

import math
import random

_SMALL = 10.0


def poisson(rng: random.Random, mean: float) -> int:
    """One draw of a Poisson variable with `mean` (0 for a mean of 0 or less)."""
    if mean <= 0:
        return 0
    if mean < _SMALL:
        limit = math.exp(-mean)
        count, product = 0, rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
        return count
    return _ptrs(rng, mean)


def _ptrs(rng: random.Random, mean: float) -> int:
    root = math.sqrt(mean)
    log_mean = math.log(mean)
    b = 0.931 + 2.53 * root
    a = -0.059 + 0.02483 * b
    log_inv_alpha = math.log(1.1239 + 1.1328 / (b - 3.4))
    vr = 0.9277 - 3.6224 / (b - 2)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        if us <= 0:
            continue
        k = math.floor((2 * a / us + b) * u + mean + 0.43)
        if us >= 0.07 and v <= vr:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + log_inv_alpha - math.log(a / (us * us) + b) <= (
            -mean + k * log_mean - math.lgamma(k + 1)
        ):
            return k
