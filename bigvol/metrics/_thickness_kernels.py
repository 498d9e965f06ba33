"""Numba kernels of the local-thickness passes: exact EDT out of core, centres, painting.

Why by hand: PoreSpy's ``local_thickness`` works on isotropic voxels only and on a whole
in-memory image; no maintained library paints Hildebrand balls with anisotropic voxels on a
window whose core is only part of the array. The distance passes are written here because
no library runs one axis of a separable EDT on a block of slices or of columns (edt and
scipy transform whole arrays only, and edt holds the GIL), and that is what makes the exact
EDT of a volume that does not fit in memory possible without a halo.

Imported lazily (numba compiles on first use, then caches on disk).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros


@numba.njit(cache=True, nogil=True, inline="always")
def _envelope(g, a, v, zb, d):
    """Squared distances ``d(q) = min_p ( a (q - p)^2 + g(p) )`` of one line: the lower
    envelope of parabolas (Felzenszwalb & Huttenlocher 2012, *Theory Comput.* 8:415).
    ``g`` may hold inf (no outside voxel there); ``d`` is inf everywhere when all are."""
    n = g.shape[0]
    k = -1
    for q in range(n):
        gq = g[q]
        if gq == np.inf:
            continue
        if k < 0:
            k = 0
            v[0] = q
            zb[0] = -np.inf
            zb[1] = np.inf
            continue
        while True:
            p = v[k]
            s = ((gq + a * q * q) - (g[p] + a * p * p)) / (2.0 * a * (q - p))
            if s <= zb[k]:
                k -= 1
            else:
                break
        k += 1
        v[k] = q
        zb[k] = s
        zb[k + 1] = np.inf
    if k < 0:
        for q in range(n):
            d[q] = np.inf
        return
    k = 0
    for q in range(n):
        while zb[k + 1] < q:
            k += 1
        p = v[k]
        d[q] = a * (q - p) * (q - p) + g[p]


@numba.njit(cache=True, nogil=True)
def _envelope_runs(g, a, v, zb, d):
    """:func:`_envelope` of a line, computed run by run: ``d`` is 0 where ``g`` is 0 (the
    voxels outside the phase), and each run of non-zero ``g`` takes the envelope of its own
    parabolas and of the zeros at its two ends only.

    The same values, bit for bit: a zero at ``L`` beats every parabola left of it for
    ``q >= L`` (``a (q - p)^2 + g(p) > a (q - L)^2``), so in the whole line's envelope it is
    never popped and no parabola beyond it decides a value on the other side; the runs'
    envelopes hold the same parabolas with the same intersections. Outside voxels are most
    of a line in a phase of a few tens of percent, so this is ~1/3 of the envelope work.
    """
    n = g.shape[0]
    q = 0
    while q < n:
        if g[q] == 0:
            d[q] = 0.0
            q += 1
            continue
        s = q
        while q < n and g[q] != 0:
            q += 1
        lo = s - 1 if s > 0 else s
        hi = q + 1 if q < n else q  # one past the run's right zero
        _envelope(g[lo:hi], a, v, zb, d[lo:hi])
        if hi > q:
            q = hi  # the right zero's value was written (0) by the envelope


#: how far (in voxels along the axis) the lanes' search for the nearest parabola goes
#: before the lanes still open take their column's envelope instead
_LANE_REACH = 64

#: lanes (contiguous voxels) whose search stops together
_LANES = 64


@numba.njit(cache=True, nogil=True)
def _min_plus_lanes(g, a, d, l0, l1, env, have, v, zb, col, ecol):
    """``d[r, l] = min_p ( a (r - p)^2 + g[p, l] )`` for the lanes ``l0 <= l < l1`` of
    ``g`` (positions ``r`` along the axis by lanes, lanes contiguous): what
    :func:`_envelope_runs` gives for every lane.

    Why not the envelope: each row ``r`` starts from ``g[r]`` and takes the rows ``r - k``
    and ``r + k`` for ``k = 1, 2, ...``, a whole row of lanes at a time (vector
    instructions), until ``a k^2`` is at least every lane's current value: a farther row
    adds at least ``a k^2`` (``g >= 0``), so no lane can get lower. Most voxels of a
    phase lie a few voxels from its boundary, so ``k`` stays small, where the envelope's
    stack and branches cost ~60 cycles per voxel. Lanes still open at
    ``k > _LANE_REACH`` (deep inside large particles, or a column with no outside voxel)
    take their column's envelope (computed once per lane, into ``env``).

    A lane's value is the smallest of the candidates ``a k^2 + g``, each computed as the
    envelope computes the one it picks (``a k k + g`` in float64): on isotropic voxels
    all are exact integers, so the values are the envelope's bit for bit; on anisotropic
    voxels they were too on every volume compared (tests/test_thickness.py).
    """
    n = g.shape[0]
    m = l1 - l0  # lanes indexed from 0 in slices: numba then knows the index is not
    hv = have[l0:l1]  # negative and the loops vectorize (no wraparound test)
    for i in range(m):
        hv[i] = False
    for r in range(n):
        dr = d[r, l0:l1]
        gr = g[r, l0:l1]
        for i in range(m):
            dr[i] = gr[i]
        k = 1
        while True:
            c = a * k * k
            open_ = 0  # lanes a farther row could still lower (a count: a float maximum
            for i in range(m):  # over the lanes would not vectorize)
                open_ += dr[i] > c
            if open_ == 0 or (k > r and r + k >= n):
                break
            if k > _LANE_REACH:
                for i in range(m):
                    if dr[i] <= c:
                        continue
                    if not hv[i]:
                        for q in range(n):
                            col[q] = g[q, l0 + i]
                        _envelope_runs(col, a, v, zb, ecol)
                        for q in range(n):
                            env[l0 + i, q] = ecol[q]
                        hv[i] = True
                    dr[i] = env[l0 + i, r]
                break
            if k <= r:
                below = g[r - k, l0:l1]
                for i in range(m):
                    t = c + below[i]
                    dr[i] = t if t < dr[i] else dr[i]
            if r + k < n:
                above = g[r + k, l0:l1]
                for i in range(m):
                    t = c + above[i]
                    dr[i] = t if t < dr[i] else dr[i]
            k += 1


@numba.njit(cache=True, nogil=True)
def squared_in_slice(labels, phase, ay, ax, out):
    """Squared distance of each ``phase`` voxel of a slice of phase codes to the nearest
    other voxel of the slice (0 outside the phase, inf when the slice has no other voxel),
    with voxel sides ``ay``, ``ax``, into ``out`` (float32); returns the count of phase
    voxels.

    Meijster et al. (2000) order: the 1D distance along y by two sweeps over whole rows
    (contiguous, no transposition), then the exact lower envelope of parabolas along each
    row. Values are sums of two squares of voxel counts times the sides, exact in float64
    and, on isotropic slices, integers exact in float32 up to 2^24.
    """
    ny, nx = labels.shape
    big = np.inf
    g = np.empty((ny, nx), np.float64)  # distance along y, in voxels
    n = 0
    for x in range(nx):
        if labels[0, x] == phase:
            g[0, x] = big
            n += 1
        else:
            g[0, x] = 0.0
    for y in range(1, ny):
        for x in range(nx):
            if labels[y, x] == phase:
                g[y, x] = g[y - 1, x] + 1.0
                n += 1
            else:
                g[y, x] = 0.0
    for y in range(ny - 2, -1, -1):
        for x in range(nx):
            t = g[y + 1, x] + 1.0
            if t < g[y, x]:
                g[y, x] = t
    f = np.empty(nx, np.float64)
    d = np.empty(nx, np.float64)
    v = np.empty(nx, np.int64)
    zb = np.empty(nx + 1, np.float64)
    a = ax * ax
    for y in range(ny):
        for x in range(nx):
            gy = g[y, x]
            f[x] = big if gy == big else (gy * ay) * (gy * ay)
        _envelope_runs(f, a, v, zb, d)
        for x in range(nx):
            out[y, x] = d[x]
    return n


@numba.njit(cache=True, nogil=True)
def radius_index_z(f, scale, sz, step, cap, out):
    """Exact EDT along z of a column block ``(Z, h, w)``, binned: the radius index of every voxel.

    ``f`` holds the squared in-slice distances in units of ``scale`` (:func:`squared_in_slice`
    on voxel sides divided by the finer in-slice side: integers on isotropic slices, exact in
    float32 up to 2^24; inf on a slice with no outside voxel); the squared 3D distance is
    the minimum of parabolas along z, ``D2(z) = min_q ( sz^2 (z - q)^2 + scale f(q) )``, in
    float64 (exact on integer voxel sizes; :func:`_min_plus_lanes`, the block's rows of
    ``w`` voxels as lanes). ``out`` (uint16, same shape)
    gets ``floor(min(sqrt(D2), cap) / step)``, 0 outside the phase (``f == 0``). Returns
    the largest ``sqrt(D2)`` of a phase voxel (-1 when there is none, inf when no slice
    has an outside voxel).
    """
    nz, h, w = f.shape
    a = sz * sz
    g = np.empty((nz, w), np.float64)  # one row of columns: (z, x)
    d = np.empty((nz, w), np.float64)
    env = np.empty((w, nz), np.float64)
    have = np.zeros(w, np.bool_)
    v = np.empty(nz, np.int64)
    zb = np.empty(nz + 1, np.float64)
    col = np.empty(nz, np.float64)
    ecol = np.empty(nz, np.float64)
    dmax = -1.0
    for y in range(h):
        for q in range(nz):
            for x in range(w):
                g[q, x] = scale * f[q, y, x]
        for l0 in range(0, w, _LANES):
            _min_plus_lanes(g, a, d, l0, min(l0 + _LANES, w), env, have, v, zb, col, ecol)
        for q in range(nz):
            for x in range(w):
                if g[q, x] == 0:
                    out[q, y, x] = 0
                    continue
                dq = math.sqrt(d[q, x])
                if dq > dmax:
                    dmax = dq
                if dq > cap:
                    dq = cap
                out[q, y, x] = int(dq / step)
    return dmax


#: columns per tile of the painting's row-skipping structure (one 64-bit word of unfilled
#: voxels per tile-row; per plane and tile, one bit per row that still has some)
_PAINT_TILE = 32


def _range_masks() -> np.ndarray:
    """``m[lo, hi]``: the uint64 with bits ``lo..hi`` set (``lo <= hi < 64``)."""
    m = np.zeros((64, 64), np.uint64)
    for lo in range(64):
        for hi in range(lo, 64):
            m[lo, hi] = np.uint64(sum(1 << b for b in range(lo, hi + 1)))
    return m


_RANGE = _range_masks()

#: value of a phase voxel that is not a ball centre in the centre map
NOT_A_CENTRE = 65535


def neighbour_offsets(spacing, reach: int, near: int | None = None) -> np.ndarray:
    """The offsets ``(dz, dy, dx)`` with every component in ``[-reach, reach]`` but the
    origin, nearest (in nm) first: the neighbours a centre is tested against. With
    ``near``, those of the ``[-near, near]`` cube come first (nearest first), then the
    others: a prefix of the list is then the smaller cube."""
    r = np.arange(-reach, reach + 1)
    o = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    o = o[np.any(o != 0, axis=1)]
    d = np.sqrt(((o * np.asarray(spacing, np.float64)) ** 2).sum(1))
    far = np.zeros(len(o), bool) if near is None else np.abs(o).max(1) > near
    return np.ascontiguousarray(o[np.lexsort((o[:, 2], o[:, 1], o[:, 0], d, far))], np.int64)


@numba.njit(cache=True, nogil=True)
def _half_width(rem, sx):
    """Largest ``w`` with ``(w sx)^2 < rem`` (-1 when none): the half-width of a ball row."""
    if rem <= 0:
        return -1
    w = int(math.sqrt(rem) / sx)
    while w >= 0 and (w * sx) ** 2 >= rem:
        w -= 1
    while ((w + 1) * sx) ** 2 < rem:
        w += 1
    return w


@numba.njit(cache=True, nogil=True)
def containment_table(kmax, spacing, step, offs):
    """``need[k, j]``: the smallest radius index ``k'`` for which the voxel ball of index
    ``k`` (the voxel centres ``p`` with ``|p| < k step``) lies inside the voxel ball of
    index ``k'`` centred on offset ``offs[j]``.

    Exact on the lattice: the farthest voxel of a ball from an offset point is at one end
    of one of its rows, so the rows' ends are all that is checked. On anisotropic voxels
    this prunes far more centres than the continuous test ``t' >= t + |offset|`` (a
    neighbour along z, 50 nm away on 30 nm pixels, needs one more radius step, not two).
    """
    m = offs.shape[0]
    sz, sy, sx = spacing[0], spacing[1], spacing[2]
    need = np.zeros((kmax + 1, m), np.int64)
    far = np.empty(m, np.float64)
    for k in range(1, kmax + 1):
        t = k * step
        t2 = t * t
        rz = int(t / sz) + 1
        ry = int(t / sy) + 1
        for j in range(m):
            far[j] = 0.0
        for dz in range(-rz, rz + 1):
            for dy in range(-ry, ry + 1):
                w = _half_width(t2 - (dz * sz) ** 2 - (dy * sy) ** 2, sx)
                if w < 0:
                    continue
                for j in range(m):
                    ez = (dz - offs[j, 0]) * sz
                    ey = (dy - offs[j, 1]) * sy
                    ex = (w + abs(offs[j, 2])) * sx
                    d2 = ez * ez + ey * ey + ex * ex
                    if d2 > far[j]:
                        far[j] = d2
        for j in range(m):
            kk = int(math.sqrt(far[j]) / step)
            while (kk * step) ** 2 <= far[j]:
                kk += 1
            while kk > 1 and ((kk - 1) * step) ** 2 > far[j]:
                kk -= 1
            need[k, j] = kk
    return need


@numba.njit(cache=True, nogil=True)
def mark_centres(kw, core_lo, core_hi, offs, need, n_near, k_far, out=None):
    """The centre map of a core: ``k`` where the voxel's ball is a centre to paint,
    ``NOT_A_CENTRE`` for the other phase voxels, 0 outside the phase (into ``out``, uint16
    of the core's shape, when given).

    ``kw`` (uint16) is the window of radius indices ``floor(EDT / step)`` with a halo of
    the offsets' reach. A ball contained in the ball of a voxel at one of the offsets
    ``offs`` (``need``, from :func:`containment_table`) adds nothing to what the larger
    balls paint, so it is not a centre; containment raises the index, so every pruned ball
    lies in a centre's ball. Balls of index below ``k_far`` are tested against the first
    ``n_near`` offsets only, larger ones against all.

    Where the distance gradient is off the lattice axes, the nearest neighbours often miss
    a containing ball (the binning loses up to one radius step); farther offsets find
    more. Offsets up to 2 voxels away leave 19 % fewer centres than the 26 neighbours on
    the phantom's active material. The painting's cost is the large balls, so those are
    also tested against offsets up to 4 voxels away: on a (250, 512, 512) window of a
    predicted active material, 3.37 M centres instead of 4.54 M and a quarter less
    painting time (1.78 -> 1.33 s per core), for ~1.6 s more marking of the window.

    Balls of index 1 are kept as centres without a test: no ball of index 1 is painted
    (:func:`paint_listed` gives 1 to what the larger balls leave), so the test would
    change nothing. On the NMC electrode's pores (45 % of the volume) that is marking in
    0.088 s instead of 0.148 (2 threads, whole 256^3 volume).

    A ball that is a centre is tested against every offset, so thin phases, where most
    balls are small and many are centres, cost the most per voxel. For balls of index
    below ``k_far`` the near offsets are cut where no later one can contain the ball: past
    some offset every one needs a larger index than any voxel within reach has (at most
    the largest of its 2^3 block and the 26 blocks around it, :func:`_block_bound`). The
    centres are the same. Marking a whole 256^3 volume, one thread, best of 7 (the 4^3
    blocks and balls below index 8 before): the TauFactor NMC electrode's NMC 0.297 s
    instead of 0.369, its pores 0.316 instead of 0.555, its binder 0.085 instead of 0.101,
    the phantom's electrolyte 0.195 instead of 0.285, its active material (128, 256, 256)
    0.642 instead of 0.620 (its balls are mostly past ``k_far``).
    """
    m = offs.shape[0]
    wz, wy, wx = kw.shape
    # the bound over the core and the near offsets' reach around it only (a thread marking
    # a slab of a volume held whole would otherwise bound the whole volume)
    lo0, lo1, lo2 = max(core_lo[0] - 2, 0), max(core_lo[1] - 2, 0), max(core_lo[2] - 2, 0)
    bound = _block_bound(kw[lo0:min(core_hi[0] + 2, wz), lo1:min(core_hi[1] + 2, wy),
                            lo2:min(core_hi[2] + 2, wx)])
    upto = _near_counts(need, n_near, int(bound.max()), offs)
    if out is None:  # every voxel of the core is written below
        out = np.empty((core_hi[0] - core_lo[0], core_hi[1] - core_lo[1],
                        core_hi[2] - core_lo[2]), np.uint16)
    for z in range(core_lo[0], core_hi[0]):
        for y in range(core_lo[1], core_hi[1]):
            brow = bound[(z - lo0) >> 1, (y - lo1) >> 1]
            for x in range(core_lo[2], core_hi[2]):
                k = int(kw[z, y, x])
                if k <= 1:  # outside (0), or a ball of index 1: kept untested
                    out[z - core_lo[0], y - core_lo[1], x - core_lo[2]] = k
                    continue
                n = upto[k, brow[(x - lo2) >> 1]] if k < k_far else m
                mark = k
                for j in range(n):
                    zz = z + offs[j, 0]
                    yy = y + offs[j, 1]
                    xx = x + offs[j, 2]
                    if zz < 0 or yy < 0 or xx < 0 or zz >= wz or yy >= wy or xx >= wx:
                        continue
                    if int(kw[zz, yy, xx]) >= need[k, j]:
                        mark = NOT_A_CENTRE
                        break
                out[z - core_lo[0], y - core_lo[1], x - core_lo[2]] = mark
    return out


@numba.njit(cache=True, nogil=True)
def _block_bound(kw):
    """Per 2^3 block of ``kw``, the largest value in the block and the 26 around it: a bound
    on the indices within 2 voxels (the near offsets' reach) of any voxel of the block.
    The 3^3 block maximum is taken one axis at a time (9 reads per block, not 27)."""
    nz, ny, nx = kw.shape
    bz, by, bx = (nz + 1) >> 1, (ny + 1) >> 1, (nx + 1) >> 1
    bm = np.zeros((bz, by, bx), np.uint16)
    for z in range(nz):
        for y in range(ny):
            row = bm[z >> 1, y >> 1]
            for x in range(nx):
                if kw[z, y, x] > row[x >> 1]:
                    row[x >> 1] = kw[z, y, x]
    # the 3^3 block maximum, one axis at a time (along y and z: the middle axis of a view)
    t = np.empty_like(bm)
    for z in range(bz):  # along x: bm -> t
        for y in range(by):
            for x in range(bx):
                v = bm[z, y, x]
                if x > 0 and bm[z, y, x - 1] > v:
                    v = bm[z, y, x - 1]
                if x < bx - 1 and bm[z, y, x + 1] > v:
                    v = bm[z, y, x + 1]
                t[z, y, x] = v
    _max3_middle(t, bm)  # along y
    _max3_middle(bm.reshape(1, bz, by * bx), t.reshape(1, bz, by * bx))  # along z
    return t


@numba.njit(cache=True, nogil=True)
def _max3_middle(src, dst):
    """``dst[a, b, c]``: the largest of ``src[a, b - 1 : b + 2, c]`` (clipped at the ends)."""
    na, nb, nc = src.shape
    for a in range(na):
        for b in range(nb):
            lo = max(b - 1, 0)
            hi = min(b + 1, nb - 1)
            for c in range(nc):
                v = src[a, lo, c]
                for q in range(lo + 1, hi + 1):
                    if src[a, q, c] > v:
                        v = src[a, q, c]
                dst[a, b, c] = v


@numba.njit(cache=True, nogil=True)
def _near_counts(need, n_near, top, offs):
    """``upto[k, L]``: how many of the first ``n_near`` offsets a ball of index ``k`` must be
    tested against when no voxel within their reach has an index above ``L``: after it,
    every offset needs more (``need[k, j:n_near].min() > L``). All ``n_near`` when those
    offsets reach past 2 voxels (beyond what :func:`_block_bound` bounds)."""
    kmax = need.shape[0] - 1
    upto = np.full((kmax + 1, top + 1), n_near, np.int64)
    reach = 0
    for j in range(n_near):
        for a in range(3):
            reach = max(reach, abs(offs[j, a]))
    if reach > 2:
        return upto
    tail = np.empty(n_near + 1, np.int64)
    for k in range(kmax + 1):
        tail[n_near] = 1 << 62
        for j in range(n_near - 1, -1, -1):
            tail[j] = min(tail[j + 1], need[k, j])
        j = 0
        for L in range(top + 1):
            while j < n_near and tail[j] <= L:
                j += 1
            upto[k, L] = j
    return upto


@numba.njit(cache=True, nogil=True)
def collect_centres(block, origin, core_shape, spacing, step, cand, n, kmax):
    """Append to ``cand`` (rows ``z, y, x, k``, int32; doubled when full) the centres of
    ``block`` of index 2 or more whose ball reaches the core ``[0, core_shape)``;
    ``origin`` is the block's first voxel in core coordinates (negative in the halo).
    Returns ``(cand, n, kmax)``:
    the list, its length and the largest ``k`` so far. A window can be fed block by block
    (a few stored chunks at a time), so it is never held whole."""
    bz, by, bx = block.shape
    nz, ny, nx = core_shape[0], core_shape[1], core_shape[2]
    for i in range(bz):
        z = origin[0] + i
        ddz = max(-z, z - (nz - 1), 0) * spacing[0]
        for j in range(by):
            y = origin[1] + j
            ddy = max(-y, y - (ny - 1), 0) * spacing[1]
            for q in range(bx):
                k = int(block[i, j, q])
                if k <= 1 or k == NOT_A_CENTRE:
                    continue  # index 1: :func:`paint_listed` gives it to what is left
                t = k * step
                x = origin[2] + q
                ddx = max(-x, x - (nx - 1), 0) * spacing[2]
                if ddz * ddz + ddy * ddy + ddx * ddx >= t * t:
                    continue  # the ball does not reach the core
                if n == cand.shape[0]:
                    grown = np.empty((2 * n, 4), np.int32)
                    grown[:n] = cand
                    cand = grown
                cand[n, 0] = z
                cand[n, 1] = y
                cand[n, 2] = x
                cand[n, 3] = k
                n += 1
                if k > kmax:
                    kmax = k
    return cand, n, kmax


@numba.njit(cache=True, nogil=True)
def paint_balls(cw, core_lo, core_hi, reg_lo, reg_hi, spacing, step, out=None):
    """Radius index ``k`` (radius ``k * step``) of the largest covering ball, per core voxel.

    ``cw`` is a window of the centre map (:func:`mark_centres`); ``core_lo``/``core_hi``
    bound the core (the output), ``reg_lo``/``reg_hi`` the centres whose ball may reach the
    core (:func:`collect_centres`, then :func:`paint_listed`). ``out`` (uint16, the core's
    shape), when given, receives the result (and is returned).
    """
    core = cw[core_lo[0]:core_hi[0], core_lo[1]:core_hi[1], core_lo[2]:core_hi[2]]
    origin = np.empty(3, np.int64)
    for a in range(3):
        origin[a] = reg_lo[a] - core_lo[a]
    cand, n, kmax = collect_centres(
        cw[reg_lo[0]:reg_hi[0], reg_lo[1]:reg_hi[1], reg_lo[2]:reg_hi[2]], origin,
        np.array(core.shape, np.int64), spacing, step, np.empty((1 << 16, 4), np.int32), 0, 0)
    return paint_listed(core, cand[:n], kmax, spacing, step, out)


@numba.njit(cache=True, nogil=True)
def paint_listed(core, cand, kmax, spacing, step, out=None):
    """Radius index ``k`` (radius ``k * step``) of the largest covering ball, per voxel of
    the core, from the listed centres (:func:`collect_centres`).

    ``core`` is the core's part of the centre map (non-zero in the phase). A voxel ``p`` is
    covered by centre ``c`` when ``|p - c| < t(c)``; the result is the largest such ``k``
    (0 outside the phase). Balls are painted from the largest radius down, each voxel
    written once (64-bit words of unfilled voxels per tile-row, and per plane and tile a
    bit per row that still has some, skip what is painted); what is left at the end has
    index 1. Into ``out`` (uint16, the core's shape) when given.
    """
    sz, sy, sx = spacing[0], spacing[1], spacing[2]
    nz, ny, nx = core.shape
    if out is None:
        out = np.zeros((nz, ny, nx), np.uint16)
    else:
        out[:] = 0
    ncand = cand.shape[0]
    candk = cand[:, 3]

    # 1. counting sort, largest radius first
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

    # 2. per tile-row (_PAINT_TILE columns of a core row), a word of its unfilled voxels
    # (voxels outside the phase start filled); per plane and tile, one bit per row whose
    # word is not empty (64 rows to a word). A ball plane visits only the rows of its tiles
    # that still have unfilled voxels, a few bit scans where larger balls painted it all
    # (most of it, on thick or noisy phases), and a row segment is painted by masking its
    # word.
    tw = _PAINT_TILE
    nt = (nx + tw - 1) // tw
    nyb = (ny + 63) // 64
    rng = _RANGE
    words = np.zeros(nz * ny * nt, np.uint64)
    ybits = np.zeros(nz * nt * nyb, np.uint64)
    one = np.uint64(1)
    for z in range(nz):
        for y in range(ny):
            wb = (z * ny + y) * nt
            for x in range(nx):
                if core[z, y, x] != 0:
                    words[wb + x // tw] |= one << np.uint64(x % tw)
            for t in range(nt):
                if words[wb + t] != 0:
                    ybits[(z * nt + t) * nyb + y // 64] |= one << np.uint64(y % 64)

    # 3. paint; centres come grouped by radius, so the half-width of each row of the
    # ball is tabulated once per radius, and per plane and distance ``dx`` from the centre
    # column the half-height of the part of its disc at least ``dx`` wide
    cur_k = -1
    rz = 0
    ry = 0
    wtab = np.empty((1, 1), np.int64)
    htab = np.empty((1, 1), np.int64)
    for i in range(ncand):
        ci = order[i]
        k = candk[ci]
        if k == 1:
            break  # balls of index 1: see below
        if k != cur_k:
            cur_k = k
            t = k * step
            t2 = t * t
            rz = int(t / sz) + 1
            ry = int(t / sy) + 1
            wtab = np.full((2 * rz + 1, 2 * ry + 1), -1, np.int64)
            rx = int(t / sx) + 1
            htab = np.full((2 * rz + 1, rx + 1), -1, np.int64)
            for dz in range(-rz, rz + 1):
                remz = t2 - (dz * sz) ** 2
                if remz <= 0:
                    continue
                for dy in range(-ry, ry + 1):
                    wtab[dz + rz, dy + ry] = _half_width(remz - (dy * sy) ** 2, sx)
                h = ry  # the half-width falls away from the centre row
                for dx in range(wtab[dz + rz, ry] + 1):
                    while wtab[dz + rz, ry + h] < dx:
                        h -= 1
                    htab[dz + rz, dx] = h
        z = cand[ci, 0]
        yc = cand[ci, 1]
        xc = cand[ci, 2]
        # only the planes of the ball that lie in the core
        for dz in range(max(-rz, -z), min(rz, nz - 1 - z) + 1):
            zc = z + dz
            wz = wtab[dz + rz]
            hz = htab[dz + rz]
            hy = hz[0]
            if hy < 0 or yc + hy < 0 or yc - hy > ny - 1:
                continue
            wmax = wz[ry]  # the widest row of this plane is the centre's
            a0 = max(xc - wmax, 0)
            b0 = min(xc + wmax, nx - 1)
            if a0 > b0:
                continue
            for tt in range(a0 // tw, b0 // tw + 1):
                tlo = tt * tw
                thi = min(tlo + tw, nx) - 1
                h = hz[max(tlo - xc, xc - thi, 0)]  # the disc's rows that reach the tile
                ylo = max(yc - h, 0)
                yhi = min(yc + h, ny - 1)
                if ylo > yhi:
                    continue
                yb = (zc * nt + tt) * nyb
                for blk in range(ylo >> 6, (yhi >> 6) + 1):
                    bits = ybits[yb + blk]
                    if bits == 0:
                        continue
                    base = blk << 6
                    bits &= rng[max(ylo - base, 0), min(yhi - base, 63)]
                    while bits != 0:
                        r = trailing_zeros(bits)
                        bits &= bits - one
                        yr = base + r
                        w = wz[yr - yc + ry]
                        wi = (zc * ny + yr) * nt + tt
                        m = words[wi] & rng[max(xc - w, tlo) - tlo, min(xc + w, thi) - tlo]
                        if m == 0:
                            continue
                        words[wi] ^= m
                        while m != 0:
                            out[zc, yr, tlo + trailing_zeros(m)] = k
                            m &= m - one
                        if words[wi] == 0:
                            ybits[yb + blk] &= ~(one << np.uint64(r))

    # 4. balls of index 1 (radius one step, the smallest side) hold their centre voxel
    # only. Every phase voxel lies in some centre's ball (its own, or one that contains
    # it, of a larger index), so a voxel that no ball of index 2 or more covered has 1:
    # the voxels still unfilled get 1, and those centres are not painted one by one
    # (on the NMC electrode's pores, 1.9 M of its 3.1 M centres).
    for wi in range(words.shape[0]):
        m = words[wi]
        if m == 0:
            continue
        zc = wi // (ny * nt)
        yr = (wi // nt) % ny
        tlo = (wi % nt) * tw
        while m != 0:
            out[zc, yr, tlo + trailing_zeros(m)] = 1
            m &= m - one
    return out


@numba.njit(cache=True, nogil=True)
def count_levels(values, two_s, counts):
    """Add to ``counts[k]`` the values equal to ``k * two_s`` (computed in their float type,
    as the painting writes them); False as soon as one is not such a level or lies past
    ``counts`` (the caller then counts another way)."""
    n = counts.shape[0]
    for i in range(values.shape[0]):
        v = values[i]
        if v == 0:
            continue
        k = int(round(v / two_s))
        if k < 1 or k >= n or values.dtype.type(k) * two_s != v:
            return False
        counts[k] += 1
    return True
