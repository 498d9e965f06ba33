"""Numba kernel of the local-thickness pass (one window = one chunk plus its halo).

Why by hand: PoreSpy's ``local_thickness`` works on isotropic voxels only and on a whole
in-memory image; no maintained library paints Hildebrand balls with anisotropic voxels on a
window whose core is only part of the array. The distance transform itself comes from
``edt`` (anisotropic, exact); only the ball painting lives here.

Imported lazily (numba compiles on first use, then caches on disk).
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _find(nxt, base, x):
    # smallest unfilled position >= x in one core row (row start at ``base``), with path halving
    while True:
        p = nxt[base + x]
        if p == x:
            return x
        q = nxt[base + p]
        nxt[base + x] = q
        x = q


@numba.njit(cache=True, nogil=True)
def paint_balls(mask, dt, core_lo, core_hi, reg_lo, reg_hi, spacing, step):
    """Binned radius index ``k`` (radius ``k * step``) of the largest covering ball, per core voxel.

    ``mask`` (uint8) and ``dt`` (float32, distance to the nearest voxel outside the phase, in
    the units of ``spacing``) are the window; ``core_lo``/``core_hi`` bound the core (the
    output), ``reg_lo``/``reg_hi`` the centres whose distance is exact and whose ball may
    reach the core. Every phase voxel ``c`` in the region is a ball centre of radius
    ``t(c) = floor(dt(c) / step) * step``; a voxel ``p`` is covered when
    ``|p - c| < t(c)``; the result is the largest such ``t`` (0 outside the phase).

    Balls contained in a neighbour's ball (``t(n) >= t(c) + |n - c|``) are skipped, the
    rest are painted from the largest radius down, each voxel written once (a per-row
    "next unfilled" forest skips filled runs).
    """
    sz, sy, sx = spacing[0], spacing[1], spacing[2]
    wz, wy, wx = mask.shape
    cz0, cy0, cx0 = core_lo[0], core_lo[1], core_lo[2]
    nz, ny, nx = core_hi[0] - cz0, core_hi[1] - cy0, core_hi[2] - cx0
    out = np.zeros((nz, ny, nx), np.uint16)
    eps = 1e-9 * step

    # neighbour offsets and their lengths
    offs = np.empty((26, 3), np.int64)
    dists = np.empty(26, np.float64)
    m = 0
    for a in range(-1, 2):
        for b in range(-1, 2):
            for c in range(-1, 2):
                if a == 0 and b == 0 and c == 0:
                    continue
                offs[m, 0] = a
                offs[m, 1] = b
                offs[m, 2] = c
                dists[m] = math.sqrt((a * sz) ** 2 + (b * sy) ** 2 + (c * sx) ** 2)
                m += 1

    # 1. candidate centres: k per region voxel (0 = not a candidate), then compacted
    rz0, ry0, rx0 = reg_lo[0], reg_lo[1], reg_lo[2]
    rk = np.zeros((reg_hi[0] - rz0, reg_hi[1] - ry0, reg_hi[2] - rx0), np.uint16)
    ncand = 0
    kmax = 0
    for z in range(reg_lo[0], reg_hi[0]):
        ddz = max(cz0 - z, z - (core_hi[0] - 1), 0) * sz
        for y in range(reg_lo[1], reg_hi[1]):
            ddy = max(cy0 - y, y - (core_hi[1] - 1), 0) * sy
            for x in range(reg_lo[2], reg_hi[2]):
                if mask[z, y, x] == 0:
                    continue
                k = int(dt[z, y, x] / step)
                if k <= 0:
                    continue
                t = k * step
                ddx = max(cx0 - x, x - (core_hi[2] - 1), 0) * sx
                if ddz * ddz + ddy * ddy + ddx * ddx >= t * t:
                    continue  # the ball does not reach the core
                contained = False
                for j in range(26):
                    zz = z + offs[j, 0]
                    yy = y + offs[j, 1]
                    xx = x + offs[j, 2]
                    if zz < 0 or yy < 0 or xx < 0 or zz >= wz or yy >= wy or xx >= wx:
                        continue
                    if mask[zz, yy, xx] == 0:
                        continue
                    tn = int(dt[zz, yy, xx] / step) * step
                    if tn >= t + dists[j] - eps:
                        contained = True
                        break
                if contained:
                    continue
                rk[z - rz0, y - ry0, x - rx0] = k
                ncand += 1
                if k > kmax:
                    kmax = k
    cand = np.empty(ncand, np.int64)
    candk = np.empty(ncand, np.int64)
    i = 0
    for z in range(reg_lo[0], reg_hi[0]):
        for y in range(reg_lo[1], reg_hi[1]):
            for x in range(reg_lo[2], reg_hi[2]):
                k = rk[z - rz0, y - ry0, x - rx0]
                if k > 0:
                    cand[i] = (z * wy + y) * wx + x
                    candk[i] = k
                    i += 1
    rk = np.zeros((1, 1, 1), np.uint16)  # release

    # 2. counting sort, largest radius first
    counts = np.zeros(kmax + 2, np.int64)
    for i in range(ncand):
        counts[kmax - candk[i] + 1] += 1
    for i in range(1, kmax + 2):
        counts[i] += counts[i - 1]
    order = np.empty(ncand, np.int64)
    for i in range(ncand):
        slot = kmax - candk[i]
        order[counts[slot]] = i
        counts[slot] += 1

    # 3. "next unfilled" forest per core row; voxels outside the phase start filled
    rowlen = nx + 1
    nxt = np.empty(nz * ny * rowlen, np.int32)
    for z in range(nz):
        for y in range(ny):
            base = (z * ny + y) * rowlen
            nxt[base + nx] = nx
            for x in range(nx - 1, -1, -1):
                if mask[z + cz0, y + cy0, x + cx0] != 0:
                    nxt[base + x] = x
                else:
                    nxt[base + x] = nxt[base + x + 1]

    # 4. paint; centres come grouped by radius, so the half-width of each row of the
    # ball is tabulated once per radius
    cur_k = -1
    rz = 0
    ry = 0
    wtab = np.empty((1, 1), np.int64)
    for i in range(ncand):
        ci = order[i]
        k = candk[ci]
        if k != cur_k:
            cur_k = k
            t = k * step
            t2 = t * t
            rz = int(t / sz) + 1
            ry = int(t / sy) + 1
            wtab = np.full((2 * rz + 1, 2 * ry + 1), -1, np.int64)
            for dz in range(-rz, rz + 1):
                remz = t2 - (dz * sz) ** 2
                if remz <= 0:
                    continue
                for dy in range(-ry, ry + 1):
                    rem = remz - (dy * sy) ** 2
                    if rem <= 0:
                        continue
                    w = int(math.sqrt(rem) / sx)
                    while w >= 0 and (w * sx) ** 2 >= rem:
                        w -= 1
                    while ((w + 1) * sx) ** 2 < rem:
                        w += 1
                    wtab[dz + rz, dy + ry] = w
        flat = cand[ci]
        x = flat % wx
        y = (flat // wx) % wy
        z = flat // (wx * wy)
        for dz in range(-rz, rz + 1):
            zc = z + dz - cz0
            if zc < 0 or zc >= nz:
                continue
            for dy in range(-ry, ry + 1):
                yc = y + dy - cy0
                if yc < 0 or yc >= ny:
                    continue
                w = wtab[dz + rz, dy + ry]
                if w < 0:
                    continue
                a = x - w - cx0
                b = x + w - cx0
                if a < 0:
                    a = 0
                if b > nx - 1:
                    b = nx - 1
                if a > b:
                    continue
                base = (zc * ny + yc) * rowlen
                p = _find(nxt, base, a)
                while p <= b:
                    out[zc, yc, p] = k
                    nxt[base + p] = p + 1
                    p = _find(nxt, base, p + 1)
    return out
