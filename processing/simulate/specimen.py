"""Particles on spheres (vesicles / VLPs) and their poses in RELION 5's picker convention.

Convention (derived from RELION's ``get_particle_poses spheres`` and spec 1.4 / 2.1 / 2.2):

* The surface frame ``O`` (3×3, columns = local x, y, z axes in tomogram coordinates) has its
  z column along the outward sphere normal n.
* RELION's picker writes ``A_sub = A(rlnTomoSubtomogramRot, Tilt, Psi) = O · Ry(+90°)`` and
  ``rlnAngleRot/Tilt/Psi`` = (0, 90, 0), the Euler angles of Ry(90°):
  ``A(0, 90, 0) = Ry(90°)ᵀ = Ry(-90°)``, so ``R = A_sub · A_part = O``.
* ``A`` maps reference coordinates to observation coordinates (spec 2.1, 2.2): a reference
  point r (Å from the box centre) lies in the tomogram at ``p + R·r``. The reference Z axis
  (the phantom's symmetry axis) therefore appears along ``R·e_z = O·e_z = n`` — the *third
  column of R* (equivalently the third row of Rᵀ), i.e. the symmetry axis is the sphere normal.
* With ``A(rot, tilt, psi) = Rz(-psi)·Ry(-tilt)·Rz(-rot)``, ``rlnAngleRot`` rotates the
  particle about its own Z axis (in-plane on the membrane) and tilt/psi move the axis away
  from the normal; the true poses have ``rlnAngleRot`` uniform in (-180, 180], tilt 90, psi 0,
  which equals the priors ``rlnAngleTiltPrior`` = 90, ``rlnAnglePsiPrior`` = 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from ..errors import InputError
from ..geometry.euler import euler_to_matrix, matrix_to_euler, rotation_y
from .phantom import Phantom

__all__ = [
    "ParticlePoses",
    "fibonacci_sphere",
    "geodesic_sphere",
    "nearest_neighbour_directions",
    "min_angular_separation",
    "sphere_reach",
    "sphere_lattice",
    "place_spheres",
    "surface_frames",
    "sphere_particle_poses",
    "perturb_poses",
    "PlantedDuplicates",
    "plant_duplicates",
    "choose_decoy_sites",
    "membrane_patch",
]

PRIOR_ANGLES = (0.0, 90.0, 0.0)  # Euler angles of Ry(+90°): the picker's rlnAngle* / priors


@dataclass(frozen=True)
class ParticlePoses:
    """Poses of the particles of one tomogram (all arrays share the leading length n).

    positions : (n, 3) decentred positions in ts-px (tomogram corner = 0).
    subtomogram_angles : (n, 3) rlnTomoSubtomogramRot/Tilt/Psi (deg).
    angles : (n, 3) rlnAngleRot/Tilt/Psi (deg).
    sphere_index : (n,) index of the sphere each particle sits on.
    normals : (n, 3) outward unit normals at the particles.
    """

    positions: NDArray[np.float64]
    subtomogram_angles: NDArray[np.float64]
    angles: NDArray[np.float64]
    sphere_index: NDArray[np.int64]
    normals: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def rotations(self) -> NDArray[np.float64]:
        """Particle→tomogram rotations R = A_sub·A_part, (n, 3, 3)."""
        s, a = self.subtomogram_angles, self.angles
        return euler_to_matrix(s[:, 0], s[:, 1], s[:, 2]) @ euler_to_matrix(a[:, 0], a[:, 1], a[:, 2])


def fibonacci_sphere(n: int) -> NDArray[np.float64]:
    """``n`` nearly uniform unit vectors (Fibonacci lattice, offset variant), (n, 3)."""
    i = np.arange(n, dtype=np.float64)
    golden = (1.0 + np.sqrt(5.0)) / 2.0
    phi = 2.0 * np.pi * i / golden
    eps = 0.36
    cos_theta = 1.0 - 2.0 * (i + eps) / max(n - 1 + 2.0 * eps, 1.0)
    sin_theta = np.sqrt(np.clip(1.0 - cos_theta**2, 0.0, None))
    return np.stack([np.cos(phi) * sin_theta, np.sin(phi) * sin_theta, cos_theta], axis=1)


def geodesic_sphere(frequency: int) -> NDArray[np.float64]:
    """Vertices of a geodesic icosahedral net, (10·f² + 2, 3) unit vectors.

    Each face of an icosahedron is divided into f² triangles (class I subdivision) and the
    grid points are projected onto the sphere: every point has six neighbours but the 12
    icosahedron vertices, which have five.
    """
    if frequency < 1:
        raise ValueError(f"frequency must be >= 1, got {frequency}")
    golden = (1.0 + np.sqrt(5.0)) / 2.0
    vertices = np.array([[s1, s2 * golden, 0.0] for s1 in (-1, 1) for s2 in (-1, 1)]
                        + [[0.0, s1, s2 * golden] for s1 in (-1, 1) for s2 in (-1, 1)]
                        + [[s2 * golden, 0.0, s1] for s1 in (-1, 1) for s2 in (-1, 1)])
    vertices /= np.linalg.norm(vertices, axis=1, keepdims=True)
    cos = vertices @ vertices.T
    edge = np.isclose(cos, cos[~np.eye(12, dtype=bool)].max())
    faces = [(a, b, c) for a in range(12) for b in range(a + 1, 12) for c in range(b + 1, 12)
             if edge[a, b] and edge[b, c] and edge[a, c]]
    i, j = (g.ravel() for g in np.meshgrid(np.arange(frequency + 1), np.arange(frequency + 1), indexing="ij"))
    inside = i + j <= frequency
    weights = np.stack([i[inside], j[inside], frequency - i[inside] - j[inside]], axis=1) / frequency
    points = np.concatenate([weights @ vertices[list(face)] for face in faces])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    # Points on shared edges and vertices appear once per face: keep the first of each.
    _, first = np.unique(np.round(points, 9), axis=0, return_index=True)
    return points[np.sort(first)]


def nearest_neighbour_directions(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """(n, 3) unit tangents at the unit vectors ``points`` (n, 3), n ≥ 2, each towards its
    nearest other point (the direction of the great circle through both)."""
    cos = points @ points.T
    np.fill_diagonal(cos, -np.inf)
    nearest = points[np.argmax(cos, axis=1)]
    tangent = nearest - np.sum(nearest * points, axis=1, keepdims=True) * points
    return tangent / np.linalg.norm(tangent, axis=1, keepdims=True)


def min_angular_separation(points: NDArray[np.float64]) -> float:
    """Smallest angle (radians) between any two unit vectors of (n, 3); π for n < 2."""
    if len(points) < 2:
        return float(np.pi)
    cos = points @ points.T
    np.fill_diagonal(cos, -1.0)
    return float(np.arccos(np.clip(cos.max(), -1.0, 1.0)))


def required_separation(phantom: Phantom, radius: float, gap: float) -> float:
    """Smallest angle (radians, seen from the sphere centre) between two particles' normals
    so that their blobs (out to 2σ) cannot overlap on a sphere of ``radius`` Å.

    Each blob at lateral distance ρ from the particle axis and height z along the normal
    subtends at most atan(ρ / (R + z)) from the particle's own normal.
    """
    rho, z = phantom.lateral_extent()
    reach = radius + z - 2.0 * phantom.sigmas
    if np.any(reach <= 0):
        raise InputError(
            f"sphere radius {radius:.0f} Å is too small for the particle", column="sphere_radius_angst"
        )
    half = np.arctan2(rho, reach).max()
    return float(2.0 * half + gap / radius)


def sphere_reach(phantom: Phantom, radius: float) -> float:
    """How far (Å) the particles reach beyond a sphere of ``radius`` Å on which their centres
    lie (blobs out to 2σ, symmetry axis along the normal)."""
    rho, z = phantom.lateral_extent()
    distance = np.hypot(radius + z + 2.0 * phantom.sigmas, rho)
    return float(max(distance.max() - radius, 0.0))


def sphere_lattice(separation: float, rng: np.random.Generator, *, max_points: int = 0,
                   kind: str = "fibonacci") -> NDArray[np.float64]:
    """Randomly rotated lattice of unit normals with pairwise angles ≥ ``separation``: a
    Fibonacci lattice (``kind="fibonacci"``) or a geodesic icosahedral net (``"geodesic"``,
    see :func:`geodesic_sphere`).

    The largest lattice that satisfies the separation is taken, then randomly rotated and, if
    ``max_points`` > 0, randomly thinned to at most that many points.
    """
    if kind == "geodesic":
        frequency = 1
        while min_angular_separation(geodesic_sphere(frequency + 1)) >= separation:
            frequency += 1
        points = geodesic_sphere(frequency)
    elif kind == "fibonacci":
        area_per_point = separation**2 * np.sqrt(3.0) / 2.0
        n = int(4.0 * np.pi / area_per_point) + 2
        while n > 1 and min_angular_separation(fibonacci_sphere(n)) < separation:
            n -= 1
        points = fibonacci_sphere(max(n, 1))
    else:
        raise ValueError(f"unknown sphere lattice {kind!r}")
    points = Rotation.random(random_state=rng).apply(points)
    if max_points > 0 and len(points) > max_points:
        keep = np.sort(rng.choice(len(points), size=max_points, replace=False))
        points = points[keep]
    return points


#: Whole fresh arrangements :func:`place_spheres` tries before it gives up: sequential random
#: placement can jam with room left (8 tutorial-sized spheres jam in 1 tomogram of 40).
PLACEMENT_RESTARTS = 20


def place_spheres(
    n: int,
    radii: NDArray[np.float64],
    outer: float,
    tomogram_size: tuple[int, int, int],
    image_size: tuple[int, int],
    rng: np.random.Generator,
    *,
    margin: float = 8.0,
) -> NDArray[np.float64]:
    """Centres (ts-px) of ``n`` non-overlapping spheres inside the tomogram.

    ``radii`` are particle-centre radii and ``outer`` the extra reach of the particles (both
    ts-px). Each sphere with its particles must fit in the tomogram and its projection in the
    central disc of the tilt images (any in-plane rotation), so every particle stays visible.
    Spheres are placed one by one at random; an arrangement that jams starts again, up to
    :data:`PLACEMENT_RESTARTS` times (a first arrangement that fits draws what it always drew).
    """
    size = np.asarray(tomogram_size, dtype=np.float64)
    for i in range(n):
        r = radii[i] + outer
        if size[2] < 2 * r:
            raise InputError(
                f"tomogram thickness {tomogram_size[2]} ts-px cannot hold a sphere of diameter "
                f"{2 * r:.0f} ts-px",
                column="tomogram_size",
            )
    for _restart in range(PLACEMENT_RESTARTS):
        centres = _arrangement(n, radii, outer, size, min(image_size) / 2.0, rng, margin)
        if centres is not None:
            return centres
    raise InputError(
        f"cannot place {n} spheres of radius ~{radii.mean():.0f} ts-px in a tomogram of "
        f"{tuple(tomogram_size)} ts-px with images {tuple(image_size)} ({PLACEMENT_RESTARTS} tries)",
        column="spheres_per_tomogram",
    )


def _arrangement(n: int, radii: NDArray[np.float64], outer: float, size: NDArray[np.float64], disc: float,
                 rng: np.random.Generator, margin: float) -> NDArray[np.float64] | None:
    """One sequential random placement (see :func:`place_spheres`); None when a sphere finds no
    room in 5,000 draws."""
    centre = size / 2.0
    centres: list[NDArray] = []
    for i in range(n):
        r = radii[i] + outer
        zslack = max(0.0, size[2] / 2.0 - r - margin) * 0.5
        for _attempt in range(5000):
            c = centre.copy()
            if n == 1:
                slack = max(0.0, min(0.1 * disc, disc - r - margin))
                c[:2] += rng.uniform(-slack, slack, 2)
            else:
                low, high = r + margin, size[:2] - r - margin
                if np.any(high <= low):
                    return None
                c[:2] = rng.uniform(low, high)
                if np.hypot(*(c[:2] - centre[:2])) + r + margin > disc:
                    continue
            c[2] += rng.uniform(-zslack, zslack)
            if all(np.linalg.norm(c - o) >= r + radii[j] + outer + margin for j, o in enumerate(centres)):
                centres.append(c)
                break
        else:
            return None
    return np.array(centres)


def surface_frames(normals: NDArray[np.float64]) -> NDArray[np.float64]:
    """Right-handed frames O (n, 3, 3) whose third column is the given unit normal.

    The first column is the normalised component of the lab axis least aligned with n
    orthogonal to n; any in-plane choice works (the in-plane angle is then randomised).
    """
    n = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    lab = np.eye(3)[np.argmin(np.abs(n), axis=1)]
    x = lab - np.sum(lab * n, axis=1, keepdims=True) * n
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.cross(n, x)
    return np.stack([x, y, n], axis=2)


def sphere_particle_poses(
    sphere_centres: NDArray[np.float64],
    sphere_radii: NDArray[np.float64],
    separations: NDArray[np.float64],
    rng: np.random.Generator,
    *,
    max_per_sphere: int = 0,
    lattice: str = "fibonacci",
) -> ParticlePoses:
    """True poses of particles on spheres (centres/radii in ts-px, separations in radians),
    on a :func:`sphere_lattice` of kind ``lattice``.

    ``A_sub = O·Ry(90°)`` (picker convention) and the true ``rlnAngle*`` = (φ, 90, 0):
    R = A_sub·A(φ, 90, 0) = O·Rz(-φ) keeps the symmetry axis on the normal. On a Fibonacci
    lattice φ is uniform (a random in-plane rotation); on a geodesic net it turns the
    particle's x axis (R·e_x) towards its nearest neighbour on the sphere, so that the
    particles share the net's in-plane order.
    """
    positions, normals, index, towards = [], [], [], []
    for s, (c, r, sep) in enumerate(zip(sphere_centres, sphere_radii, separations)):
        pts = sphere_lattice(float(sep), rng, max_points=max_per_sphere, kind=lattice)
        positions.append(c + r * pts)
        normals.append(pts)
        index.append(np.full(len(pts), s, dtype=np.int64))
        if lattice == "geodesic":
            towards.append(nearest_neighbour_directions(pts) if len(pts) > 1 else surface_frames(pts)[:, :, 0])
    pos = np.concatenate(positions)
    nrm = np.concatenate(normals)
    frames = surface_frames(nrm)
    a_sub = frames @ rotation_y(90.0)
    sub = np.stack(matrix_to_euler(a_sub), axis=1)
    if lattice == "geodesic":
        # O·Rz(-φ)·e_x = cos φ·x_O - sin φ·y_O must be the unit tangent d.
        d = np.concatenate(towards)
        phi = np.degrees(np.arctan2(-np.sum(d * frames[:, :, 1], axis=1), np.sum(d * frames[:, :, 0], axis=1)))
    else:
        phi = rng.uniform(-180.0, 180.0, len(pos))
    angles = np.stack([phi, np.full_like(phi, PRIOR_ANGLES[1]), np.full_like(phi, PRIOR_ANGLES[2])], axis=1)
    return ParticlePoses(pos, sub, angles, np.concatenate(index), nrm)


def perturb_poses(
    poses: ParticlePoses,
    rng: np.random.Generator,
    *,
    rot_error: float,
    tilt_error: float,
    psi_error: float,
    position_error_px: float,
) -> ParticlePoses:
    """Initial poses: truth + errors (rot normal with σ = rot_error/2, clipped to ±rot_error;
    tilt/psi normal σ, degrees; position isotropic normal with RMS 3D error
    ``position_error_px``). A_sub is kept.

    The rot error is not uniform: errors spread evenly over a whole symmetry period (±30° for
    C6) would average the initial reference into a cylinder, whose in-plane orientation (and
    hence that of every refined particle) could then not be recovered by any refinement.
    """
    n = len(poses)
    d_rot = np.clip(rng.normal(0.0, rot_error / 2.0, n), -rot_error, rot_error) if rot_error > 0 else np.zeros(n)
    d_tilt = rng.normal(0.0, tilt_error, n) if tilt_error > 0 else np.zeros(n)
    d_psi = rng.normal(0.0, psi_error, n) if psi_error > 0 else np.zeros(n)
    angles = poses.angles + np.stack([d_rot, d_tilt, d_psi], axis=1)
    angles[:, 0] = np.mod(angles[:, 0] + 180.0, 360.0) - 180.0
    angles[:, 2] = np.mod(angles[:, 2] + 180.0, 360.0) - 180.0
    d_pos = rng.normal(0.0, position_error_px / np.sqrt(3.0), (n, 3)) if position_error_px > 0 else np.zeros((n, 3))
    return ParticlePoses(poses.positions + d_pos, poses.subtomogram_angles.copy(), angles, poses.sphere_index, poses.normals)


@dataclass(frozen=True)
class PlantedDuplicates:
    """Second picks of some particles of one tomogram, and the row order of all picks.

    poses : second picks' initial poses (picker's A_sub of the particle, own angle errors,
        positions ``distance`` from the particle's true centre), length m.
    duplicate_of : (m,) index of the particle each second pick belongs to.
    order : (n + m,) file order of the picks: entries < n are the first picks (particle index),
        entries n + k the k-th second pick.
    """

    poses: ParticlePoses
    duplicate_of: NDArray[np.int64]
    order: NDArray[np.int64]


def plant_duplicates(
    true_poses: ParticlePoses,
    rng: np.random.Generator,
    *,
    fraction: float,
    distance_px: tuple[float, float],
    rot_error: float,
    tilt_error: float,
    psi_error: float,
) -> PlantedDuplicates:
    """Second picks of ``round(fraction * n)`` randomly chosen particles, as a picker that
    finds a particle twice would give them.

    Each second pick lies at a distance uniform in ``distance_px`` (ts-px) from the particle's
    true centre, in a uniformly random direction, with angle errors drawn as
    :func:`perturb_poses` draws them. All picks are then put in a random file order.
    """
    n = len(true_poses)
    m = int(round(fraction * n))
    chosen = np.sort(rng.choice(n, size=m, replace=False)) if m else np.zeros(0, dtype=np.int64)
    base = ParticlePoses(true_poses.positions[chosen], true_poses.subtomogram_angles[chosen],
                         true_poses.angles[chosen], true_poses.sphere_index[chosen], true_poses.normals[chosen])
    picked = perturb_poses(base, rng, rot_error=rot_error, tilt_error=tilt_error, psi_error=psi_error,
                           position_error_px=0.0)
    direction = rng.normal(size=(m, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    distance = rng.uniform(distance_px[0], distance_px[1], m)
    positions = base.positions + direction * distance[:, None]
    poses = ParticlePoses(positions, picked.subtomogram_angles, picked.angles, picked.sphere_index, picked.normals)
    return PlantedDuplicates(poses, chosen.astype(np.int64), rng.permutation(n + m).astype(np.int64))


# ---- planted decoys: picks on empty membrane -------------------------------------------------

#: Distance (Å) of each leaflet's density from the membrane's mid-plane (a ~40 Å bilayer).
MEMBRANE_LEAFLET_OFFSET = 17.5
#: Mass of a decoy's membrane patch relative to that of one complex.
MEMBRANE_MASS_RATIO = 1.0


def choose_decoy_sites(n: int, rng: np.random.Generator, *, fraction: float) -> NDArray[np.bool_]:
    """Which of ``n`` lattice sites are left empty and picked as decoys: ``round(fraction·n)``
    of them, chosen uniformly at random; (n,) mask."""
    m = int(round(fraction * n))
    mask = np.zeros(n, dtype=bool)
    if m:
        mask[rng.choice(n, size=m, replace=False)] = True
    return mask


def membrane_patch(
    phantom: Phantom, sphere_radius: float, angular_radius: float, *, sigma: float
) -> Phantom:
    """A patch of vesicle membrane (a bilayer, no protein) centred on a site of the sphere.

    Frame of the particles on the sphere: the site is the origin and the outward normal +z, so
    the patch is drawn with a pick's ``A_sub·A_part`` like a complex. Each leaflet is a sheet
    of Gaussians (σ = ``sigma`` Å, hexagonal grid of spacing σ, so the sheet is smooth) on
    the sphere of radius ``sphere_radius`` ± :data:`MEMBRANE_LEAFLET_OFFSET` Å around the
    vesicle's centre, out to ``angular_radius`` (radians, seen from the centre) with a cosine
    taper over its last 3σ. The amplitudes make the patch's mass
    :data:`MEMBRANE_MASS_RATIO` × that of ``phantom`` (one complex).
    """
    spacing = sigma
    layers, weights = [], []
    for h in (-MEMBRANE_LEAFLET_OFFSET, MEMBRANE_LEAFLET_OFFSET):
        r = sphere_radius + h
        edge = r * np.sin(angular_radius)
        k = int(np.ceil(edge / spacing)) + 1
        i, j = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1), indexing="ij")
        x = (i + 0.5 * j).ravel() * spacing
        y = j.ravel() * spacing * np.sqrt(3.0) / 2.0
        rho = np.hypot(x, y)
        keep = rho <= edge
        x, y, rho = x[keep], y[keep], rho[keep]
        z = np.sqrt(r * r - rho * rho) - sphere_radius
        taper = np.clip((edge - rho) / (3.0 * sigma), 0.0, 1.0)
        layers.append(np.stack([x, y, z], axis=1))
        weights.append(0.5 - 0.5 * np.cos(np.pi * taper))
    positions = np.concatenate(layers)
    weight = np.concatenate(weights)
    mass = float(np.sum(phantom.amplitudes * phantom.sigmas**3))
    amplitude = MEMBRANE_MASS_RATIO * mass / (float(np.sum(weight)) * sigma**3)
    return Phantom(positions, amplitude * weight, np.full(len(positions), float(sigma)), "C1")
