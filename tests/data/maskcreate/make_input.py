"""Write blobs.mrc: the 32^3 input map (3.5 A/px) of the mask-creation fixtures (see ORIGIN.md).

Five Gaussian blobs (sigma 1.5-3 px, heights 0.4-1) plus Gaussian noise (sigma 0.03), numpy
seed 15, float32. Run with the project's Python: python make_input.py
"""
import mrcfile
import numpy as np

rng = np.random.default_rng(15)
n = 32
z, y, x = np.mgrid[:n, :n, :n].astype(np.float64)
vol = np.zeros((n, n, n))
for _ in range(5):
    c = rng.uniform(10, 22, size=3)
    s = rng.uniform(1.5, 3.0)
    h = rng.uniform(0.4, 1.0)
    vol += h * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * s * s))
vol += rng.normal(0.0, 0.03, size=vol.shape)
with mrcfile.new("blobs.mrc", overwrite=True) as mrc:
    mrc.set_data(vol.astype(np.float32))
    mrc.voxel_size = 3.5
