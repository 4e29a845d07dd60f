"""Make the half maps, mask and MTF of tests/data/postprocess (fixed seed; see ORIGIN.md).

An atom-like map: 400 Gaussian "atoms" (sigma 0.8 A) at random positions within 14 A of the
box centre, blurred by a B-factor of 60 A^2 (exp(-B k^2/4) in Fourier space), the same map
in both halves plus independent white noise. Box 48, 1.0 A/px, float32.
Run from this folder: python make_inputs.py
"""
import mrcfile
import numpy as np

N, PX, SEED = 48, 1.0, 20261206
rng = np.random.default_rng(SEED)
c = N // 2
z, y, x = np.mgrid[0:N, 0:N, 0:N].astype(np.float64)
vol = np.zeros((N, N, N))
pts = []
while len(pts) < 400:
    p = rng.uniform(-14, 14, 3)
    if np.linalg.norm(p) <= 14:
        pts.append(p)
for p in pts:
    r2 = (z - c - p[0] / PX) ** 2 + (y - c - p[1] / PX) ** 2 + (x - c - p[2] / PX) ** 2
    vol += np.exp(-r2 * PX**2 / (2 * 0.8**2))
k = np.sqrt(sum(f**2 for f in np.meshgrid(np.fft.fftfreq(N, PX), np.fft.fftfreq(N, PX),
                                          np.fft.rfftfreq(N, PX), indexing="ij")))
vol = np.fft.irfftn(np.fft.rfftn(vol) * np.exp(-60.0 / 4 * k**2), s=(N, N, N))
vol /= vol.std()
noise = 0.6


def save(name, data):
    with mrcfile.new(name, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(data, dtype=np.float32))
        m.voxel_size = PX


save("run_half1_class001_unfil.mrc", vol + rng.normal(0, noise, vol.shape))
save("run_half2_class001_unfil.mrc", vol + rng.normal(0, noise, vol.shape))
r = np.sqrt((z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2)
mask = np.where(r <= 17, 1.0, np.where(r >= 22, 0.0, 0.5 + 0.5 * np.cos(np.pi * (r - 17) / 5)))
save("mask_r17_edge5.mrc", mask)
# A made-up detector MTF in RELION's format (rlnResolutionInversePixel, rlnMtfValue).
with open("mtf_made_up.star", "w") as f:
    f.write("\ndata_\n\nloop_\n_rlnResolutionInversePixel #1\n_rlnMtfValue #2\n")
    for i in range(0, 17):
        s = i / 32
        f.write(f"{s:.6f} {np.exp(-1.2 * s) * (1 - 0.6 * s):.6f}\n")
# A small mask in a corner, away from the particle (RELION then falls back to the unmasked FSC).
rc = np.sqrt((z - 6) ** 2 + (y - 6) ** 2 + (x - 6) ** 2)
save("mask_corner.mrc", np.where(rc <= 4, 1.0, np.where(rc >= 7, 0.0, 0.5 + 0.5 * np.cos(np.pi * (rc - 4) / 3))))
