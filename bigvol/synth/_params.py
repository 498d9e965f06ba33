"""The phantom's parameters and constants: gray levels, microstructure and imaging constants,
the random stream keys, the validated parameter record :class:`_Params` and the checks that
build it (:func:`_make_params`), with the halo sizes derived from the parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from ..errors import ConfigError

# gray levels (fraction of the dtype's range)
I_PORE, I_SE, I_AM = 0.10, 0.48, 0.70
SE_TEXTURE = 0.03
Q_SMALL = 0.10  # fraction of the electrolyte carved into small pores
SE_W1, SE_W2 = 0.8, 0.6  # coarse and fine octave of the electrolyte field (0.8^2 + 0.6^2 = 1)
KAPPA = 0.85
SIGMA_LN = 0.35
CRACK_WIDTH_NM = 60.0
GAP_PARTICLE_FRACTION = 0.15
EDGE_SIGMA_PX = 1.2
WALL_FACTOR = 1.0
TRUNCATE = 3.0
N_MC = 40_000

# hash stream keys (one per random field)
_K_F1, _K_F2, _K_CURT1, _K_CURT2, _K_NOISE, _K_F3 = 11, 12, 13, 14, 15, 16
# numpy Generator streams
_S_PARTICLES, _S_DRIFT, _S_BRIGHT = 1, 2, 3


# -- parameters -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Params:
    shape: tuple
    seed: int
    voxel_size: tuple
    dtype: str
    am_fraction: float
    am_d50_um: float
    am_gradient: float
    crack_fraction: float
    se_fraction: float
    se_size_um: float
    small_pores: bool
    contact_gaps: bool
    shine_through: bool
    edge_brightening: bool
    noise: bool
    blur: bool
    curtaining: float
    brightness_drift: float
    xy_drift_px: float
    shine_amplitude: float
    shine_depth_nm: float
    shine_blur_px: float
    edge_amplitude: float
    psf_sigma_px: float
    noise_level: float

    def asdict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # derived geometry of the imaging halos
    @property
    def depth_slices(self) -> int:
        if not self.shine_through or self.shine_amplitude == 0:
            return 0
        return int(math.ceil(3.0 * self.shine_depth_nm / self.voxel_size[0]))

    @property
    def shine_bins(self) -> list[tuple[int, int, float]]:
        """(first depth, last depth, sigma px) of every depth bin: {1, 2}, {3..D}."""
        D = self.depth_slices
        out = []
        for lo, hi in ((1, 2), (3, D)):
            hi = min(hi, D)
            if lo <= hi:
                out.append((lo, hi, self.shine_blur_px * math.sqrt(math.sqrt(lo * hi))))
        return out

    @property
    def halo_xy(self) -> int:
        r1 = 0
        if self.depth_slices:
            r1 = max(_radius(s) for _, _, s in self.shine_bins)
        if self.edge_brightening and self.edge_amplitude:
            r1 = max(r1, _radius(EDGE_SIGMA_PX))
        r2 = _radius(self.psf_sigma_px) if self.blur else 0
        return r1 + r2


def _radius(sigma: float) -> int:
    return int(TRUNCATE * float(sigma) + 0.5) if sigma > 0 else 0


def _check_fraction(name, v, lo=0.0, hi=1.0):
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {v!r}") from None
    if not (np.isfinite(v) and lo <= v <= hi):
        raise ConfigError(f"{name} must be between {lo:g} and {hi:g}, got {v!r}")
    return v


def _check_positive(name, v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {v!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise ConfigError(f"{name} must be a positive number, got {v!r}")
    return v


def _check_triple(name, v, integer):
    try:
        vals = tuple(v)
    except TypeError:
        raise ConfigError(f"{name} must be three numbers (z, y, x), got {v!r}") from None
    if len(vals) != 3:
        raise ConfigError(f"{name} must be three numbers (z, y, x), got {v!r}")
    out = []
    for x in vals:
        if integer:
            if isinstance(x, bool) or not float(x).is_integer() or int(x) < 1:
                raise ConfigError(f"{name} must be three positive integers (z, y, x), got {v!r}")
            out.append(int(x))
        else:
            out.append(_check_positive(name, x))
    return tuple(out)


def _make_params(shape, seed, voxel_size, dtype, **kw) -> _Params:
    shape = _check_triple("shape", shape, integer=True)
    voxel_size = _check_triple("voxel_size", voxel_size, integer=False)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise ConfigError(f"seed must be an integer, got {seed!r}") from None
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    dt = str(np.dtype(dtype)) if dtype in ("uint8", "uint16", np.uint8, np.uint16) else None
    if dt is None:
        try:
            dt = str(np.dtype(dtype))
        except TypeError:
            dt = repr(dtype)
        if dt not in ("uint8", "uint16"):
            raise ConfigError(f"dtype must be 'uint8' or 'uint16', got {dtype!r}")
    am = _check_fraction("am_fraction", kw["am_fraction"], 0.0, 0.7)
    se = _check_fraction("se_fraction", kw["se_fraction"])
    if am + se > 0.97:
        raise ConfigError(
            f"am_fraction + se_fraction must leave room for pores (<= 0.97), got {am} + {se}"
        )
    g = _check_fraction("am_gradient", kw["am_gradient"], -1.0, 1.0)
    if am - abs(g) / 2 < 0 or am + abs(g) / 2 > 0.7:
        raise ConfigError(
            f"am_gradient={g}: the active-material fraction am_fraction +- am_gradient/2 "
            f"must stay within [0, 0.7] (am_fraction={am})"
        )
    if se > 0 and (am + abs(g) / 2) + se / (1 - Q_SMALL) > 0.995:
        raise ConfigError(
            "se_fraction too large for the space the active material leaves "
            f"(am_fraction={am}, am_gradient={g}, se_fraction={se})"
        )
    p = {
        "am_fraction": am,
        "am_gradient": g,
        "se_fraction": se,
        "crack_fraction": _check_fraction("crack_fraction", kw["crack_fraction"]),
        "am_d50_um": _check_positive("am_d50_um", kw["am_d50_um"]),
        "se_size_um": _check_positive("se_size_um", kw["se_size_um"]),
        "curtaining": _check_fraction("curtaining", kw["curtaining"], 0.0, 0.5),
        "brightness_drift": _check_fraction("brightness_drift", kw["brightness_drift"], 0.0, 0.5),
        "xy_drift_px": _check_fraction("xy_drift_px", kw["xy_drift_px"], 0.0, 100.0),
        "shine_amplitude": _check_fraction("shine_amplitude", kw["shine_amplitude"]),
        "shine_depth_nm": _check_positive("shine_depth_nm", kw["shine_depth_nm"]),
        "shine_blur_px": _check_fraction("shine_blur_px", kw["shine_blur_px"], 0.0, 20.0),
        "edge_amplitude": _check_fraction("edge_amplitude", kw["edge_amplitude"]),
        "psf_sigma_px": _check_fraction("psf_sigma_px", kw["psf_sigma_px"], 0.0, 20.0),
        "noise_level": _check_fraction("noise_level", kw["noise_level"], 0.0, 20.0),
    }
    for name in (
        "small_pores", "contact_gaps", "shine_through", "edge_brightening", "noise", "blur"
    ):
        v = kw[name]
        if not isinstance(v, (bool, np.bool_)):
            raise ConfigError(f"{name} must be True or False, got {v!r}")
        p[name] = bool(v)
    return _Params(shape=shape, seed=seed, voxel_size=voxel_size, dtype=dt, **p)
