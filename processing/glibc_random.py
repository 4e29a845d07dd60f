"""glibc's ``rand()`` (the TYPE_3 additive feedback generator behind ``srand``/``rand``),
which relion_refine seeds with ``--random_seed`` for its random half sets and for the random
perturbation of the sampling grids. Reproducing it makes a run with the same seed draw the
same halves and perturbations as RELION."""
from __future__ import annotations

import numpy as np

__all__ = ["GlibcRandom", "RAND_MAX", "relion_rnd_unif"]

RAND_MAX = 2147483647


class GlibcRandom:
    """``srand(seed)`` then successive ``rand()`` values, as glibc computes them."""

    def __init__(self, seed: int) -> None:
        seed = int(seed) & 0xFFFFFFFF
        r = [0] * 34
        r[0] = seed if seed != 0 else 1
        for i in range(1, 31):
            hi, lo = divmod(r[i - 1], 127773)
            word = 16807 * lo - 2836 * hi
            if word < 0:
                word += 2147483647
            r[i] = word
        for i in range(31, 34):
            r[i] = r[i - 31]
        self._state = r
        for _ in range(310):          # glibc discards the first 310 outputs
            self._next()

    def _next(self) -> int:
        r = self._state
        value = (r[-31] + r[-3]) & 0xFFFFFFFF
        r.append(value)
        if len(r) > 64:
            del r[:-34]
        return value

    def rand(self) -> int:
        """The next ``rand()``: 0 .. RAND_MAX."""
        return self._next() >> 1


def relion_rnd_unif(generator: GlibcRandom, a: float, b: float) -> float:
    """RELION's ``rnd_unif(a, b)``: ``a + (float) rand() / (float)(RAND_MAX / (b - a))`` in
    single precision."""
    a32, b32 = np.float32(a), np.float32(b)
    if a32 == b32:
        return float(a32)
    scale = np.float32(np.float32(RAND_MAX) / (b32 - a32))
    return float(a32 + np.float32(generator.rand()) / scale)
