"""The random streams relion_refine draws from, reproduced so that a run with the same
``--random_seed`` makes the same choices as RELION (built with GCC on Linux):

* glibc's ``rand()`` (the TYPE_3 additive feedback generator behind ``srand``/``rand``): the
  random half sets, the perturbation of the sampling grids, the accuracy axes;
* libstdc++'s ``std::shuffle`` driven by ``std::mt19937``: the order in which relion_refine
  visits the particles (``Experiment::randomiseParticlesOrder``), whose first 100 particles
  estimate the accuracies."""
from __future__ import annotations

import numpy as np

__all__ = ["GlibcRandom", "RAND_MAX", "relion_rnd_unif", "Mt19937", "libstdcxx_shuffle"]

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


class Mt19937:
    """``std::mt19937(seed)``: the 32-bit Mersenne Twister with the standard seeding."""

    def __init__(self, seed: int) -> None:
        state = [int(seed) & 0xFFFFFFFF]
        for i in range(1, 624):
            state.append((1812433253 * (state[-1] ^ (state[-1] >> 30)) + i) & 0xFFFFFFFF)
        self._state = state
        self._index = 624

    def _twist(self) -> None:
        s = self._state
        for i in range(624):
            y = (s[i] & 0x80000000) | (s[(i + 1) % 624] & 0x7FFFFFFF)
            s[i] = s[(i + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
        self._index = 0

    def __call__(self) -> int:
        if self._index >= 624:
            self._twist()
        y = self._state[self._index]
        self._index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        return y ^ (y >> 18)


def _uniform_below(generator: Mt19937, n: int) -> int:
    """libstdc++'s ``uniform_int_distribution{0, n-1}`` on a 32-bit generator: Lemire's
    multiply-and-shift with rejection (GCC 11 and later)."""
    product = generator() * n
    low = product & 0xFFFFFFFF
    if low < n:
        threshold = (2**32 - n) % n
        while low < threshold:
            product = generator() * n
            low = product & 0xFFFFFFFF
    return product >> 32


def libstdcxx_shuffle(items: list, generator: Mt19937) -> None:
    """``std::shuffle(items.begin(), items.end(), generator)`` in place, as libstdc++ (GCC 10
    and later) does it: for ranges below 2**16 two swap positions per draw."""
    n = len(items)
    if n == 0:
        return
    if (2**32 - 1) // n < n:
        for i in range(1, n):
            j = _uniform_below(generator, i + 1)
            items[i], items[j] = items[j], items[i]
        return
    i = 1
    if n % 2 == 0:
        j = _uniform_below(generator, 2)
        items[i], items[j] = items[j], items[i]
        i += 1
    while i != n:
        swap_range = i + 1
        x = _uniform_below(generator, swap_range * (swap_range + 1))
        first, second = divmod(x, swap_range + 1)
        items[i], items[first] = items[first], items[i]
        items[i + 1], items[second] = items[second], items[i + 1]
        i += 2
