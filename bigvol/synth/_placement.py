"""Particle placement: the random sequential addition of the active-material ellipsoids in a
periodic box (:func:`_particles`, drawn once per seed), with their cracks, contact-loss gaps
and brightness factors, held in :class:`_Particles`."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ._params import _S_PARTICLES, GAP_PARTICLE_FRACTION, KAPPA, N_MC, SIGMA_LN


# -- particles ----------------------------------------------------------------------------
@dataclass
class _Particles:
    box: np.ndarray  # (3,) periodic box, nm
    centre: np.ndarray  # (n, 3) nm
    M: np.ndarray  # (n, 3, 3) nm^-2
    ext: np.ndarray  # (n, 3) half extent along each axis, nm
    r: np.ndarray  # (n,) bounding radius, nm
    rmean: np.ndarray  # (n,) equivalent radius, nm
    gain: np.ndarray  # (n,)
    crack_n: np.ndarray  # (n, 2, 3) unit normals (zero = no crack)
    crack_o: np.ndarray  # (n, 2) offsets, nm
    gap_w: np.ndarray  # (n,) gap width nm (0 = none)
    gap_u: np.ndarray  # (n, 3) cap axis
    gap_cos: np.ndarray  # (n,)
    fraction: float  # Monte-Carlo AM fraction inside the array volume


def _rotations(rng, n):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def _unit(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@functools.lru_cache(maxsize=16)
def _particles(shape, voxel_size, seed, am, d50_um, gradient, crack_fraction) -> _Particles:
    """Random sequential addition of ellipsoids; deterministic for the arguments."""
    rng = np.random.default_rng([seed, _S_PARTICLES])
    extent = np.array(shape, float) * np.array(voxel_size, float)
    d50 = d50_um * 1000.0
    rmax_bound = 2.0 * d50 / 2 * math.exp(3 * 0.12) * 1.01
    box = extent + 2 * rmax_bound
    mc = rng.random((N_MC, 3)) * extent
    covered = np.zeros(N_MC, bool)
    mc_tree = cKDTree(mc, boxsize=box)
    cap = max(am, 1e-9) + abs(gradient) / 2
    # with a gradient, the array is filled slab by slab (8 slabs along z) to f(z)
    n_slabs = 8
    mc_slab = np.minimum((mc[:, 0] / extent[0] * n_slabs).astype(int), n_slabs - 1)
    slab_n = np.maximum(np.bincount(mc_slab, minlength=n_slabs), 1)
    slab_target = am + gradient * ((np.arange(n_slabs) + 0.5) / n_slabs - 0.5)
    slab_cov = np.zeros(n_slabs)

    cen, Ms, exts, rs, rms = [], [], [], [], []
    placed_c = np.empty((1024, 3))
    placed_r = np.empty(0)
    tree = (None, 0, 0.0)  # (KD-tree of the first n particles, n, their largest radius)
    frac = 0.0
    batch = 64
    while am > 0 and frac < am:
        d = np.clip(d50 * np.exp(rng.normal(0, SIGMA_LN, batch)), 0.45 * d50, 2.0 * d50)
        ln = rng.normal(0, 0.12, (batch, 3))
        ln -= ln.mean(axis=1, keepdims=True)
        semi = d[:, None] / 2 * np.exp(ln)
        R = _rotations(rng, batch)
        new_c = []
        for k in range(batch):
            r = semi[k].max()
            c = None
            kappa = KAPPA
            for _round in range(12):
                cand = rng.random((24, 3)) * box
                if gradient:
                    # the margin above the array wraps onto its first slices
                    zc = np.clip(cand[:, 0] / extent[0], 0, 1)
                    zc[cand[:, 0] > extent[0] + rmax_bound] = 0.0
                    keep = rng.random(24) * cap <= am + gradient * (zc - 0.5)
                    # slabs that reached their target take no more centres
                    slab = np.minimum((zc * n_slabs).astype(int), n_slabs - 1)
                    keep &= slab_cov[slab] < slab_target[slab]
                    cand = cand[keep]
                good = _free(cand, r, kappa, placed_c[: len(placed_r)], placed_r, box, tree)
                if len(good):
                    c = cand[good[0]]
                    break
                kappa *= 0.93
            if c is None:
                continue
            placed_c[len(placed_r)] = c
            placed_r = np.append(placed_r, r)
            if len(placed_r) - tree[1] >= 512:  # rebuild the tree of old particles
                tree = (cKDTree(placed_c[: len(placed_r)], boxsize=box), len(placed_r),
                        placed_r.max())
            if len(placed_r) == len(placed_c):
                placed_c = np.vstack([placed_c, np.empty_like(placed_c)])
            M = R[k] @ np.diag(1.0 / semi[k] ** 2) @ R[k].T
            cov = R[k] @ np.diag(semi[k] ** 2) @ R[k].T
            cen.append(c)
            Ms.append(M)
            exts.append(np.sqrt(np.diag(cov)))
            rs.append(r)
            rms.append(d[k] / 2)
            new_c.append(len(cen) - 1)
            # Monte-Carlo coverage of the array volume; stop at the particle that reaches it
            i = len(cen) - 1
            near = np.asarray(mc_tree.query_ball_point(c, r), dtype=np.intp)
            near = near[~covered[near]]
            diff = mc[near] - c
            diff -= box * np.round(diff / box)
            if len(near):
                q = np.einsum("ni,ij,nj->n", diff, Ms[i], diff)
                covered[near[q <= 1.0]] = True
                frac = covered.mean()
                if gradient:
                    slab_cov = np.bincount(mc_slab, weights=covered, minlength=n_slabs) / slab_n
                    if np.all(slab_cov >= slab_target):
                        break
                elif frac >= am:
                    break
        if not new_c:
            break
    n = len(cen)
    if n == 0:
        z3 = np.zeros((0, 3))
        return _Particles(box, z3, np.zeros((0, 3, 3)), z3, np.zeros(0), np.zeros(0),
                          np.zeros(0), np.zeros((0, 2, 3)), np.zeros((0, 2)), np.zeros(0),
                          z3, np.zeros(0), 0.0)
    rs = np.array(rs)
    rms = np.array(rms)
    gain = 1.0 + rng.normal(0, 0.02, n)
    cracked = rng.random(n) < crack_fraction
    ncr = np.where(cracked, rng.integers(1, 3, n), 0)
    crack_n = _unit(rng, 2 * n).reshape(n, 2, 3)
    crack_n[ncr < 1, 0] = 0
    crack_n[ncr < 2, 1] = 0
    crack_o = rng.uniform(-0.3, 0.3, (n, 2)) * rms[:, None]
    gapped = rng.random(n) < GAP_PARTICLE_FRACTION
    gap_w = np.where(gapped, rng.uniform(40, 100, n), 0.0)
    gap_u = _unit(rng, n)
    gap_cos = np.cos(np.deg2rad(rng.uniform(50, 110, n)))
    return _Particles(
        box=box, centre=np.array(cen), M=np.array(Ms), ext=np.array(exts), r=rs, rmean=rms,
        gain=gain, crack_n=crack_n, crack_o=crack_o, gap_w=gap_w, gap_u=gap_u,
        gap_cos=gap_cos, fraction=float(frac),
    )


def _free(cand, r, kappa, placed_c, placed_r, box, tree):
    """Indices of candidate centres whose bounding sphere keeps the RSA distance.

    Distances are minimum-image (periodic box). Old particles are looked up in a periodic
    KD-tree (scipy's cKDTree), the ones placed since its last rebuild by brute force.
    """
    ok = np.ones(len(cand), bool)
    kd, n_old, rmax_old = tree
    recent_c, recent_r = placed_c[n_old:], placed_r[n_old:]
    if len(recent_r):
        diff = cand[:, None, :] - recent_c[None, :, :]
        diff -= box * np.round(diff / box)
        dist = np.sqrt((diff * diff).sum(-1))
        ok &= np.all(dist >= kappa * (r + recent_r[None, :]), axis=1)
    if kd is not None and len(cand):
        # the K nearest old particles within the largest possible reach; a candidate with K
        # or more of them is treated as blocked (conservative, never an overlap)
        K = 24
        dist, nb = kd.query(cand, k=K, distance_upper_bound=kappa * (r + rmax_old))
        found = np.isfinite(dist)
        rj = np.where(found, placed_r[np.minimum(nb, len(placed_r) - 1)], 0.0)
        ok &= np.all(~found | (dist >= kappa * (r + rj)), axis=1) & ~found[:, -1]
    return np.flatnonzero(ok)
