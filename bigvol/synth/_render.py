"""The BSE renderer: the slice drift and brightness drift curves, the geometry of a region
(truth and clean render from the particles and the electrolyte fields) and the imaging
(shine-through, edge brightening, PSF, curtaining, brightness, noise) of one chunk and its
halos (:func:`_render_block`)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

from ._fields import _GOLD, _field_2d, _key, _LatticeField, _mix
from ._params import (
    _K_CURT1,
    _K_CURT2,
    _K_F1,
    _K_F2,
    _K_F3,
    _K_NOISE,
    _S_BRIGHT,
    _S_DRIFT,
    CRACK_WIDTH_NM,
    EDGE_SIGMA_PX,
    I_AM,
    I_PORE,
    I_SE,
    Q_SMALL,
    SE_TEXTURE,
    SE_W1,
    SE_W2,
    TRUNCATE,
    WALL_FACTOR,
    _Params,
)
from ._placement import _Particles


# -- drift --------------------------------------------------------------------------------
def _shifts(nz, seed, s):
    out = np.zeros((nz, 2))
    if s > 0 and nz > 1:
        rng = np.random.default_rng([seed, _S_DRIFT])
        out[1:] = np.cumsum(rng.normal(0, s, (nz - 1, 2)), axis=0)
    return out


def _shifts_at(prm: _Params, zs: np.ndarray) -> np.ndarray:
    """Shifts for global slice indices ``zs`` (the last one holds beyond the stack)."""
    s = _shifts(prm.shape[0], prm.seed, prm.xy_drift_px)
    return s[np.clip(zs, 0, prm.shape[0] - 1)]


def _brightness(prm: _Params) -> tuple[np.ndarray, np.ndarray]:
    """Smooth gain ``1 + B u(z)`` and offset ``0.3 B v(z)`` for every slice."""
    nz = prm.shape[0]
    if prm.brightness_drift == 0:
        return np.ones(nz), np.zeros(nz)
    rng = np.random.default_rng([prm.seed, _S_BRIGHT])
    t = (np.arange(nz) + 0.5) / nz
    out = []
    for _ in range(2):
        f = sum(
            rng.uniform(0.3, 1)
            * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 2 * np.pi))
            for _ in range(2)
        )
        m = np.abs(f).max()
        out.append(f / m if m > 0 else f)
    B = prm.brightness_drift
    return 1.0 + B * out[0], 0.3 * B * out[1]


# -- geometry -------------------------------------------------------------------------------
def _geometry(prm: _Params, P: _Particles, z0, z1, y0, y1, x0, x1):
    """Truth and clean render of the region ``[z0, z1) x [y0, y1) x [x0, x1)`` (global)."""
    vz, vy, vx = prm.voxel_size
    nz, ny, nx = z1 - z0, y1 - y0, x1 - x0
    zs = np.arange(z0, z1)
    sh = _shifts_at(prm, zs)
    drift = bool(np.any(sh))
    # physical coordinates, nm; y and x per slice when the slices drift
    Zc = zs * vz
    yi = np.arange(y0, y1, dtype=np.float64)
    xi = np.arange(x0, x1, dtype=np.float64)
    if drift:
        Yc = (yi[None, :] - sh[:, 0:1]) * vy  # (nz, ny)
        Xc = (xi[None, :] - sh[:, 1:2]) * vx
    else:
        Yc = (yi * vy)[None, :]  # (1, ny)
        Xc = (xi * vx)[None, :]
    amv = np.zeros((nz, ny, nx), np.float32)  # AM brightness (0 = not AM)
    excl = np.zeros((nz, ny, nx), bool)  # particles, cracks and gaps: no electrolyte
    lo = np.array([Zc.min(), Yc.min(), Xc.min()])
    hi = np.array([Zc.max(), Yc.max(), Xc.max()])
    n = len(P.r)
    if n:
        # half extent of the particle or of its gap shell (scaled by 1 + w_g / r_mean)
        reach = P.ext * (1.0 + P.gap_w / P.rmean)[:, None]
        box = P.box
        kmin = np.floor((lo - box) / box).astype(int)
        kmax = np.ceil(hi / box).astype(int)
        for kz in range(kmin[0], kmax[0] + 1):
            for ky in range(kmin[1], kmax[1] + 1):
                for kx in range(kmin[2], kmax[2] + 1):
                    off = np.array([kz, ky, kx]) * box
                    c = P.centre + off
                    hit = np.all((c + reach >= lo) & (c - reach <= hi), axis=1)
                    for i in np.flatnonzero(hit):
                        _render_particle(P, i, c[i], reach[i], Zc, Yc, Xc, drift, amv, excl)
    truth = np.zeros((nz, ny, nx), np.uint8)
    render = np.empty((nz, ny, nx), np.float32)
    se_sp = _se_spacing(prm)
    t1 = _se_threshold(prm, P)
    t2 = float(ndtri(1 - Q_SMALL)) if prm.small_pores else np.inf
    k1, k2, k3 = _key(prm.seed, _K_F1), _key(prm.seed, _K_F2), _key(prm.seed, _K_F3)
    if drift:
        yf, xf = yi[None, :] - sh[:, 0:1], xi[None, :] - sh[:, 1:2]
    else:
        yf, xf = yi[None, :], xi[None, :]
    if prm.se_fraction > 0:
        F1 = _LatticeField(k1, se_sp, zs, yf, xf)
        F2 = _LatticeField(k2, tuple(s / 3 for s in se_sp), zs, yf, xf)
        if prm.small_pores:
            F3 = _LatticeField(k3, tuple(s / 5 for s in se_sp), zs, yf, xf)
    w1, w2 = np.float32(SE_W1), np.float32(SE_W2)
    for k in range(nz):
        a = amv[k]
        isam = a > 0
        tr = truth[k]
        rd = render[k]
        rd[...] = I_PORE
        if prm.se_fraction > 0:
            f2 = F2.slice(k)
            f = F1.slice(k)
            f *= w1
            f += w2 * f2
            se = (f > t1) & ~excl[k]
            del f
            if prm.small_pores:
                se &= F3.slice(k) <= t2
            tr[se] = 1
            tex = f2
            tex *= I_SE * SE_TEXTURE
            tex += I_SE
            np.copyto(rd, tex, where=se)
        tr[isam] = 2
        np.multiply(a, I_AM, out=rd, where=isam)
    return truth, render


def _se_spacing(prm):
    return tuple(prm.se_size_um * 1000.0 / v for v in prm.voxel_size)


def _se_threshold(prm: _Params, P: _Particles) -> float:
    if prm.se_fraction <= 0:
        return np.inf
    q = Q_SMALL if prm.small_pores else 0.0
    am = prm.am_fraction
    p = prm.se_fraction / ((1 - q) * (1 - am))
    p = min(p, 1 - 1e-6)
    return float(ndtri(1 - p))


def _render_particle(P: _Particles, i, c, reach, Zc, Yc, Xc, drift, amv, excl):
    """Rasterize particle ``i`` (centre ``c`` of this periodic image) into the region.

    The quadratic form is split into 2-D parts (float64) summed in float32 in 3-D, always in
    the same order, so a voxel gets the same value in any region.
    """
    z = np.flatnonzero(np.abs(Zc - c[0]) <= reach[0])
    if not len(z):
        return
    za, zb = z[0], z[-1] + 1
    Yr = Yc[za:zb] if drift else Yc
    Xr = Xc[za:zb] if drift else Xc
    yy = np.flatnonzero(np.any(np.abs(Yr - c[1]) <= reach[1], axis=0))
    xx = np.flatnonzero(np.any(np.abs(Xr - c[2]) <= reach[2], axis=0))
    if not len(yy) or not len(xx):
        return
    ya, yb, xa, xb = yy[0], yy[-1] + 1, xx[0], xx[-1] + 1
    dz = (Zc[za:zb] - c[0])[:, None]  # (Z, 1)
    dy = Yr[:, ya:yb] - c[1]  # (1|Z, Y)
    dx = Xr[:, xa:xb] - c[2]  # (1|Z, X)
    M = P.M[i]
    f32 = np.float32
    Pzy = (M[0, 0] * dz * dz + M[1, 1] * dy * dy + 2 * M[0, 1] * dz * dy).astype(f32)
    Qzx = (M[2, 2] * dx * dx + 2 * M[0, 2] * dz * dx).astype(f32)
    Ryx = ((2 * M[1, 2]) * dy[:, :, None] * dx[:, None, :]).astype(f32)  # (1|Z, Y, X)
    q = np.add(Pzy[:, :, None], Qzx[:, None, :])
    q += Ryx
    sub_am = amv[za:zb, ya:yb, xa:xb]
    sub_ex = excl[za:zb, ya:yb, xa:xb]
    gw = P.gap_w[i]
    if gw > 0:
        rho_max = 1.0 + gw / P.rmean[i]
        shell = (q > 1.0) & (q <= f32(rho_max * rho_max))
        if shell.any():
            u = P.gap_u[i]
            ud = _sum3(u[0] * dz, u[1] * dy, u[2] * dx)
            nrm2 = _sum3(dz * dz, dy * dy, dx * dx)
            cs = f32(P.gap_cos[i])
            ud2 = ud * ud
            nrm2 *= cs * cs
            if cs >= 0:
                cap = (ud >= 0) & (ud2 >= nrm2)
            else:
                cap = (ud >= 0) | (ud2 <= nrm2)
            sub_ex |= shell & cap
    inside = q <= 1.0
    if not inside.any():
        return
    sub_ex |= inside
    solid = inside
    for j in range(2):
        n = P.crack_n[i, j]
        if not n.any():
            continue
        s = _sum3(n[0] * dz, n[1] * dy, n[2] * dx)
        s -= f32(P.crack_o[i, j])
        crack = (np.abs(s) < f32(CRACK_WIDTH_NM / 2)) & (q < f32(0.64))
        solid = solid & ~crack
    np.copyto(sub_am, f32(P.gain[i]), where=solid)


def _sum3(a, b, c):
    """``a[z] + b[(z,) y] + c[(z,) x]`` broadcast to 3-D in float32 (fixed order)."""
    f32 = np.float32
    s = np.add(a.astype(f32)[:, :, None], b.astype(f32)[:, :, None])
    return np.add(s, c.astype(f32)[:, None, :])


# -- imaging ------------------------------------------------------------------------------
def _gauss2d(img, sigma):
    if sigma <= 0:
        return img
    return ndimage.gaussian_filter(img, sigma, truncate=TRUNCATE, mode="nearest")


def _render_block(prm: _Params, P: _Particles, gain, offset, zr, yr, xr):
    """One output block: ``(2, z, y, x)`` of the output dtype, [image, truth]."""
    (z0, z1), (y0, y1), (x0, x1) = zr, yr, xr
    D = prm.depth_slices
    # The slices behind a pore are seen in the imaged slice's frame: slice k + d is moved by
    # t = s(k) - s(k + d) (the drift between them), so the region holds |t| more pixels.
    sh = _shifts_at(prm, np.arange(z0, z1 + D)) if D else np.zeros((1, 2))
    m = 0
    if D and np.any(sh):
        m = int(math.ceil(max(np.abs(sh[k + 1 : k + D + 1] - sh[k]).max() for k in range(z1 - z0))))
    h = prm.halo_xy + m
    truth, render = _geometry(prm, P, z0, z1 + D, y0 - h, y1 + h, x0 - h, x1 + h)
    nz, ny, nx = z1 - z0, y1 - y0, x1 - x0
    dt = np.dtype(prm.dtype)
    maxval = float(np.iinfo(dt).max)
    out = np.empty((2, nz, ny, nx), dt)
    out[1] = truth[:nz, h:h + ny, h:h + nx]
    vz = prm.voxel_size[0]
    lam = prm.shine_depth_nm
    pore = truth == 0
    bins = prm.shine_bins if D else []
    blurred = {}  # (bin, slice) -> blurred clean render of that slice

    def layer(b, s):
        key = (b, s)
        if key not in blurred:
            blurred[key] = _gauss2d(render[s], bins[b][2])
        return blurred[key]

    drifting = bool(D and np.any(sh))
    if D and not drifting:  # one backward recursion for all slices
        depth = np.zeros(truth.shape, np.int16)
        for k in range(truth.shape[0] - 2, -1, -1):
            nxt = depth[k + 1]
            d = np.where(nxt > 0, nxt + 1, 0).astype(np.int16)
            d[d > D] = 0
            d[~pore[k + 1]] = 1
            d[~pore[k]] = 0  # only pore voxels shine through
            depth[k] = d

    def depth_map(k):
        """Depth (slices) of the first solid voxel behind each pore voxel of slice k, in
        slice k's frame (integer-rounded drift), 0 = none within D or not a pore."""
        if not drifting:
            return depth[k]
        dm = np.zeros(pore.shape[1:], np.int16)
        todo = pore[k].copy()
        for d in range(1, D + 1):
            solid = ~_translate_int(pore[k + d], sh[k] - sh[k + d], fill=True)
            hit = todo & solid
            dm[hit] = d
            todo &= ~hit
        return dm

    curt = None
    if prm.curtaining > 0:
        zs = np.arange(z0, z1, dtype=np.float64)
        xs = np.arange(x0, x1, dtype=np.float64)
        curt = 0.6 * _field_2d(_key(prm.seed, _K_CURT1), (16.0, 3.0), zs, xs)
        curt += 0.8 * _field_2d(_key(prm.seed, _K_CURT2), (16.0, 12.0), zs, xs)
        curt *= np.float32(prm.curtaining)  # 0.6^2 + 0.8^2 = 1: unit variance
    # the solid behind a pore is a free surface: it shows the full edge effect
    wall = np.float32(WALL_FACTOR * prm.edge_amplitude if prm.edge_brightening else 0.0)
    for k in range(nz):
        img = render[k].copy()
        pk = pore[k]
        if D:
            dk = depth_map(k)
            flat = np.flatnonzero(dk)  # pore voxels with solid within D slices
            if len(flat):
                dd = dk.ravel()[flat]
                imf = img.reshape(-1)
                for b, (lo, hi, _s) in enumerate(bins):
                    for d in range(lo, hi + 1):
                        sel = flat[dd == d]
                        if len(sel):
                            att = np.float32(prm.shine_amplitude * math.exp(-d * vz / lam))
                            v = _sample_shifted(layer(b, k + d), sel, sh[k] - sh[k + d])
                            imf[sel] = np.float32(I_PORE) + att * (v - np.float32(I_PORE - wall))
            for key in [key for key in blurred if key[1] <= k + 1]:
                del blurred[key]
        if prm.edge_brightening and prm.edge_amplitude > 0:
            e = _gauss2d(pk.astype(np.float32), EDGE_SIGMA_PX)
            e *= np.float32(prm.edge_amplitude)
            e[pk] = 0
            img += e
        if prm.blur:
            img = _gauss2d(img, prm.psf_sigma_px)
        img = img[h:h + ny, h:h + nx]
        if curt is not None:
            img += curt[k][None, :]
        g = np.float32(gain[z0 + k])
        o = np.float32(offset[z0 + k])
        if g != 1 or o != 0:
            img *= g
            img += o
        if prm.noise and prm.noise_level > 0:
            img = _add_noise(prm, img, z0 + k, y0, x0)
        img *= np.float32(maxval)
        np.rint(img, out=img)
        np.clip(img, 0, maxval, out=img)
        out[0, k] = img.astype(dt)
    return out


def _translate_int(a: np.ndarray, t, fill) -> np.ndarray:
    """``out[y, x] = a[y - ty, x - tx]`` with ``t`` rounded to whole pixels; ``fill`` outside."""
    ty, tx = (int(round(float(v))) for v in t)
    if ty == 0 and tx == 0:
        return a
    out = np.full_like(a, fill)
    H, W = a.shape
    ys, yd = (slice(0, H - ty), slice(ty, H)) if ty >= 0 else (slice(-ty, H), slice(0, H + ty))
    xs, xd = (slice(0, W - tx), slice(tx, W)) if tx >= 0 else (slice(-tx, W), slice(0, W + tx))
    out[yd, xd] = a[ys, xs]
    return out


def _sample_shifted(img: np.ndarray, flat: np.ndarray, t) -> np.ndarray:
    """Values at the flat indices ``flat`` of ``img`` translated by ``t = (ty, tx)`` pixels:
    ``img(y - ty, x - tx)``, bilinear (the layers are blurred by the shine PSF, so linear
    interpolation is accurate), clamped at the region's edge (the halo covers ``|t|``)."""
    ty, tx = float(t[0]), float(t[1])
    H, W = img.shape
    y, x = np.divmod(flat, W)
    if ty == 0 and tx == 0:
        return img.reshape(-1)[flat]
    py, px = -ty, -tx
    iy, ix = math.floor(py), math.floor(px)
    wy, wx = np.float32(py - iy), np.float32(px - ix)
    y0 = np.clip(y + iy, 0, H - 1)
    y1 = np.clip(y + iy + 1, 0, H - 1)
    x0 = np.clip(x + ix, 0, W - 1)
    x1 = np.clip(x + ix + 1, 0, W - 1)
    top = (1 - wx) * img[y0, x0] + wx * img[y0, x1]
    bot = (1 - wx) * img[y1, x0] + wx * img[y1, x1]
    return (1 - wy) * top + wy * bot


def _add_noise(prm: _Params, img, z, y0, x0):
    Z, Y, X = prm.shape
    ny, nx = img.shape
    with np.errstate(over="ignore"):
        idx = (np.uint64(z) * np.uint64(Y) + np.arange(y0, y0 + ny, dtype=np.uint64))[:, None]
        idx = idx * np.uint64(X) + np.arange(x0, x0 + nx, dtype=np.uint64)[None, :]
        h = _mix(idx ^ _key(prm.seed, _K_NOISE))
        h = _mix(h + _GOLD)
    m16 = np.uint64(0xFFFF)
    s = (h & m16).astype(np.float32)
    for sh in (16, 32, 48):
        s += ((h >> np.uint64(sh)) & m16).astype(np.float32)
    # Irwin-Hall: sum of 4 U(0,1) has mean 2, variance 1/3
    n = (s * np.float32(1 / 65536.0) - np.float32(2.0)) * np.float32(math.sqrt(3.0))
    nl2 = prm.noise_level**2
    var = np.maximum(img, 0) * np.float32(1.6e-3 * nl2) + np.float32(2e-4 * nl2)
    return img + np.sqrt(var) * n
