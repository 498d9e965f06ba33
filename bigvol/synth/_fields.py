"""Coordinate-hashed randomness: a splitmix64 hash of integer coordinates and a seed, the
i.i.d. N(0, 1) lattice values drawn from it, and the unit-variance cubic B-spline lattice
fields (3-D, evaluated slice by slice, and 2-D for curtaining) built on them, so that a
voxel's value depends only on its global coordinates, never on the chunk it is computed in."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

# -- hashing: coordinate-addressable randomness ---------------------------------------------
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_PRIMES = (
    np.uint64(0xD6E8FEB86659FD93), np.uint64(0xA0761D6478BD642F), np.uint64(0xE7037ED1A0B428DB)
)


def _mix(h):
    """splitmix64 finalizer on a uint64 array (in place where possible)."""
    h ^= h >> np.uint64(30)
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    h ^= h >> np.uint64(31)
    return h


def _key(seed: int, stream: int) -> np.uint64:
    h = _mix(np.array([(seed * 0x10001 + stream) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return h[0]


def _hash_coords(key, *coords):
    """A uint64 hash of broadcast integer coordinate arrays and a key."""
    with np.errstate(over="ignore"):
        h = None
        for c, p in zip(coords, _PRIMES):
            t = np.asarray(c, dtype=np.int64).astype(np.uint64) * p
            h = t if h is None else h + t
        h = _mix(h ^ key)
        return _mix(h + _GOLD)


def _lattice_gauss(key, *coords):
    """i.i.d. N(0, 1) values on integer lattice points (hash -> uniform -> inverse CDF)."""
    h = _hash_coords(key, *coords)
    u = ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)
    return ndtri(u).astype(np.float32)


def _bspline(t):
    """Lattice index of the first of 4 nodes and the normalized cubic B-spline weights."""
    t = np.asarray(t, dtype=np.float64)
    i = np.floor(t)
    f = t - i
    f2, f3 = f * f, f * f * f
    w = np.stack(
        [(1 - f) ** 3 / 6, (3 * f3 - 6 * f2 + 4) / 6, (-3 * f3 + 3 * f2 + 3 * f + 1) / 6, f3 / 6]
    )
    w /= np.sqrt((w * w).sum(axis=0))
    return i.astype(np.int64) - 1, w.astype(np.float32)


class _LatticeField:
    """The unit-variance lattice field over a region, evaluated slice by slice.

    ``zs``: (nz,) slice coordinates; ``ys``, ``xs``: (1 or nz, n) coordinates in voxels (one
    row per slice when the slices drift). The lattice values of the region are hashed once;
    each slice contracts z, then x, then y over 4 nodes, summed in a fixed order, so a
    voxel's value does not depend on the region it is computed in.
    """

    def __init__(self, key, spacing, zs, ys, xs):
        self.iz, self.wz = _bspline(np.asarray(zs, np.float64) / spacing[0])
        self.iy, self.wy = _bspline(ys / spacing[1])
        self.ix, self.wx = _bspline(xs / spacing[2])
        self.a0, self.b0, self.c0 = int(self.iz.min()), int(self.iy.min()), int(self.ix.min())
        a1, b1, c1 = int(self.iz.max()) + 4, int(self.iy.max()) + 4, int(self.ix.max()) + 4
        self.L = _lattice_gauss(
            key,
            np.arange(self.a0, a1)[:, None, None],
            np.arange(self.b0, b1)[None, :, None],
            np.arange(self.c0, c1)[None, None, :],
        )
        self.wy = self.wy[..., None]  # (4, n, ny, 1)

    def slice(self, k):
        r = k if self.iy.shape[0] > 1 else 0
        iz = self.iz[k] - self.a0
        lz = None
        for j in range(4):
            v = self.L[iz + j] * self.wz[j, k]
            lz = v if lz is None else lz + v
        rx = self.ix[r] - self.c0
        tx = None
        for j in range(4):
            v = lz[:, rx + j] * self.wx[j, r]
            tx = v if tx is None else tx + v
        ry = self.iy[r] - self.b0
        out = None
        for j in range(4):
            v = tx[ry + j]
            v *= self.wy[j, r]
            if out is None:
                out = v
            else:
                out += v
        return out


def _field_2d(key, spacing, zs, xs):
    """Unit-variance lattice field in (z, x) for 1-D ``zs``, ``xs`` (curtaining)."""
    iz, wz = _bspline(zs / spacing[0])
    ix, wx = _bspline(xs / spacing[1])
    a0, a1 = int(iz.min()), int(iz.max()) + 4
    c0, c1 = int(ix.min()), int(ix.max()) + 4
    lat = _lattice_gauss(key, np.arange(a0, a1)[:, None], np.arange(c0, c1)[None, :])
    t = None
    for j in range(4):
        v = lat[iz - a0 + j] * wz[j][:, None]
        t = v if t is None else t + v
    out = None
    for j in range(4):
        v = t[:, ix - c0 + j] * wx[j][None, :]
        out = v if out is None else out + v
    return out
