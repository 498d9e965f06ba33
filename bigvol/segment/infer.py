"""Tiled SegNet inference over a whole stack, as a lazy Dask graph.

Tiling (MONAI's ``sliding_window_inference`` scheme, made chunk-exact):

- Every slice is covered by a **global grid of tiles** of ``tile x tile`` pixels with step
  ``tile - overlap``; the last tile of a row/column is aligned to the image edge. The grid
  depends on the image size only, never on the chunking.
- The class probabilities of overlapping tiles are blended with Gaussian weights
  (``sigma = tile / 8``, as MONAI's ``mode="gaussian"``) normalized by the accumulated
  weight: ``p(x) = sum_t w_t(x) p_t(x) / sum_t w_t(x)``. Tile borders, where the zero
  padding of the convolutions spoils the output, get little weight.
- By default (``blocks="auto"``) a Dask task gets a few **whole slices** (up to 8 slices and
  2^23 pixels) plus ``(k - 1) / 2`` slices in z (the nearest slice is repeated at the ends of
  the stack, as in training): every tile is computed once. The result is rechunked to the
  stack's chunks afterwards. Storage chunks split slices into xy blocks (256 x 256 is
  common); running the network per xy block would compute every tile that straddles a
  block edge again in each block it touches: 2.56x the work on 1024 x 1024 slices with
  256-pixel chunks and tiles, 4x on the demo's 320 x 320 slices with 160-pixel chunks.
- With ``blocks="chunks"`` (and for slices over 2^26 pixels) a task gets one chunk plus a
  halo of ``tile - 1`` pixels in y and x, so that every grid tile that touches the chunk lies
  inside it, and runs the tiles that touch its chunk. Either way the tiles run in batches in
  grid order and the result is the same whatever the chunking.

The model is shipped to workers as a small reference (its file path and SHA-256 digest when
it was saved or loaded, else the model data in one graph key) and loaded once per worker
process into a module-level cache keyed by the digest, never once per task.

This module imports :mod:`dask` and :mod:`torch` inside its functions only, so that its
block function runs with NumPy and PyTorch alone (``benchmarks/gpu_check.py``).
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict

import numpy as np

from ..conventions import available_cores
from ..errors import ConfigError, InputError
from .model import Model

_CACHE: OrderedDict[str, Model] = OrderedDict()  # digest -> Model, per process
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4
#: Models loaded from files or unpickled in this process (tests check "once per worker").
_LOADS = {"count": 0}


class _ModelRef:
    """What Dask tasks receive instead of the model: its digest and path, or its data.

    Pickled (sent to a worker process) it carries only the path when the model lives in a
    file, else the whole model; :meth:`get` returns the process's cached copy.
    """

    def __init__(self, model: Model):
        self.digest = model.digest
        self.path = None if model.path is None else str(model.path)
        self.model = model

    def __getstate__(self):
        return {
            "digest": self.digest, "path": self.path, "model": None if self.path else self.model,
        }

    def __setstate__(self, state):
        self.__dict__.update(state)

    def get(self) -> Model:
        with _CACHE_LOCK:
            m = _CACHE.get(self.digest)
            if m is None:
                m = self.model if self.model is not None else Model.load(self.path)
                _LOADS["count"] += 1
                if m.digest != self.digest:
                    raise InputError(
                        f"model file {self.path} changed while the segmentation was running"
                    )
                _CACHE[self.digest] = m
                while len(_CACHE) > _CACHE_SIZE:
                    _CACHE.popitem(last=False)
            else:
                _CACHE.move_to_end(self.digest)
            return m


def _task_threads(threads: int | None) -> int:
    """Torch threads for one task: the cores shared by the tasks running at once.

    In a Dask worker with ``n`` threads, ``n`` tasks run at once: each gets
    ``cores // n`` torch threads, capped by ``OMP_NUM_THREADS`` when set (Dask's nanny
    sets it to 1 in every worker process of a multi-process cluster).
    """
    if threads:
        return int(threads)
    cores = available_cores()
    n = None
    try:
        from distributed import get_worker

        n = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        try:
            import dask
        except ImportError:  # torch + numpy only (benchmarks/gpu_check.py): one task at a time
            n = 1
        else:
            sched = dask.config.get("scheduler", None)
            if sched in ("sync", "synchronous", "single-threaded"):
                n = 1
            else:
                n = dask.config.get("num_workers", None) or cores
    t = max(1, cores // max(1, int(n)))
    omp = os.environ.get("OMP_NUM_THREADS")
    if omp and omp.isdigit() and int(omp) > 0:
        t = min(t, int(omp))
    return t


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but PyTorch sees no CUDA device here")
    return str(device)


def _starts(n: int, t: int, step: int) -> list[int]:
    """Tile starts along an axis of ``n`` pixels: every ``step``, the last one at ``n - t``."""
    if n <= t:
        return [0]
    s = list(range(0, n - t, step))
    s.append(n - t)
    return sorted(set(s))


#: Test-time augmentation: the (quarter turns, mirror in x) of each view, for ``tta`` views.
#: 4 = the mirrorings in y, x and both (nnU-Net's default); 8 = the whole dihedral group
#: (the four rotations, each also mirrored). Phases in a FIB-SEM slice have no preferred
#: in-plane orientation, and training augments with the same transforms.
TTA_VIEWS = {
    1: ((0, False),),
    2: ((0, False), (0, True)),
    4: ((0, False), (0, True), (2, False), (2, True)),
    8: tuple((r, f) for f in (False, True) for r in range(4)),
}


def _check_tta(tta) -> int:
    if isinstance(tta, bool) or tta not in TTA_VIEWS:
        raise ConfigError(f"tta must be one of {sorted(TTA_VIEWS)} views, got {tta!r}")
    return int(tta)


def _probabilities(net, xt, tta: int, autocast, memory_format):
    """Softmax class probabilities of a batch ``(n, k, y, x)``, averaged over ``tta`` views.

    Each view is the batch turned by quarter turns and/or mirrored in x; its output is
    turned back before averaging, so the result is equivariant under those transforms.
    """
    import torch

    acc = None
    for r, flip in TTA_VIEWS[tta]:
        xi = torch.rot90(xt, r, (2, 3)) if r else xt
        if flip:
            xi = torch.flip(xi, (3,))
        with autocast():
            logits = net(xi.contiguous(memory_format=memory_format))
        p = torch.softmax(logits.float(), dim=1)
        if flip:
            p = torch.flip(p, (3,))
        if r:
            p = torch.rot90(p, -r, (2, 3))
        acc = p if acc is None else acc + p
    return acc if tta == 1 else acc / tta


def _gaussian(n: int) -> np.ndarray:
    """1D Gaussian weights over ``n`` pixels, sigma = n / 8 (MONAI), floored at 1e-3."""
    i = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    sigma = max(n * 0.125, 1e-6)
    g = np.exp(-0.5 * (i / sigma) ** 2)
    return np.maximum(g / g.max(), 1e-3)


def _segment_block(
    block: np.ndarray,
    model: Model,
    *,
    z_pad: int,
    origin: tuple[int, int],
    core: tuple[slice, slice],
    image_shape: tuple[int, int],
    tile: int | tuple[int, int],
    overlap: int,
    device: str,
    batch_size: int,
    threads: int | None,
    probabilities: bool,
    amp: bool | None = None,
    tta: int = 1,
) -> np.ndarray:
    """Class probabilities (or codes) of the core of one block, from the global tile grid.

    ``block`` is ``(z + 2 * z_pad, y_ext, x_ext)``, its pixel ``[.., 0, 0]`` at global
    ``origin``; ``core`` selects the output pixels inside it. Works with NumPy and PyTorch
    only.
    """
    import torch

    dev = _resolve_device(device)
    if dev == "cpu":
        torch.set_num_threads(_task_threads(threads))
    with _CACHE_LOCK:
        net = model.module(dev)
    norm = model.normalization
    mean, std = float(norm["mean"]), float(norm["std"])
    k = model.k
    nz = block.shape[0] - 2 * z_pad
    Y, X = image_shape
    oy, ox = origin
    cy, cx = core
    # Global grid tiles that touch the core, in grid order.
    ty, tx = (tile, tile) if np.isscalar(tile) else tile
    ty, tx = min(int(ty), Y), min(int(tx), X)
    gy0, gy1 = oy + cy.start, oy + cy.stop
    gx0, gx1 = ox + cx.start, ox + cx.stop
    ys = [s - oy for s in _starts(Y, ty, max(1, ty - overlap)) if s < gy1 and s + ty > gy0]
    xs = [s - ox for s in _starts(X, tx, max(1, tx - overlap)) if s < gx1 and s + tx > gx0]
    if (
        ys and (ys[0] < 0 or ys[-1] + ty > block.shape[1])
        or xs and (xs[0] < 0 or xs[-1] + tx > block.shape[2])
    ):
        raise RuntimeError(  # pragma: no cover
            "internal error: the halo does not contain the tiles"
        )
    tiles = [(z, y0, x0) for z in range(nz) for y0 in ys for x0 in xs]
    wmap = torch.from_numpy(np.outer(_gaussian(ty), _gaussian(tx)).astype(np.float32)).to(dev)

    # Accumulate over the region the tiles cover only.
    ry0, rx0 = ys[0], xs[0]
    ry1, rx1 = ys[-1] + ty, xs[-1] + tx
    acc = torch.zeros((model.n_classes, nz, ry1 - ry0, rx1 - rx0), dtype=torch.float32, device=dev)
    wsum = torch.zeros((ry1 - ry0, rx1 - rx0), dtype=torch.float32, device=dev)
    for y0 in ys:
        for x0 in xs:
            wsum[y0 - ry0 : y0 - ry0 + ty, x0 - rx0 : x0 - rx0 + tx] += wmap

    cuda = dev.startswith("cuda")
    if cuda:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        use_amp = True if amp is None else bool(amp)
    else:
        amp_dtype, use_amp = torch.bfloat16, bool(amp)
    with torch.inference_mode():
        for b0 in range(0, len(tiles), batch_size):
            chunk = tiles[b0 : b0 + batch_size]
            xb = np.empty((len(chunk), k, ty, tx), np.float32)
            for j, (z, y0, x0) in enumerate(chunk):
                xb[j] = block[z : z + k, y0 : y0 + ty, x0 : x0 + tx]
            xb -= mean
            xb /= std
            xt = torch.from_numpy(xb)
            if cuda:
                xt = xt.pin_memory().to(dev, non_blocking=True)
            p = _probabilities(
                net, xt, tta,
                lambda: torch.autocast(dev.split(":")[0], dtype=amp_dtype, enabled=use_amp),
                torch.channels_last,
            ) * wmap
            for j, (z, y0, x0) in enumerate(chunk):
                acc[:, z, y0 - ry0 : y0 - ry0 + ty, x0 - rx0 : x0 - rx0 + tx] += p[j]
    sy = slice(cy.start - ry0, cy.stop - ry0)
    sx = slice(cx.start - rx0, cx.stop - rx0)
    out = acc[:, :, sy, sx] / wsum[sy, sx]
    if probabilities:
        return out.to(torch.float16).cpu().numpy()
    return _argmax0(out).cpu().numpy()


def _argmax0(p):
    """``p.argmax(0)`` as uint8 (first maximum wins), by one comparison per class.

    torch's argmax over the leading axis of a strided (classes, z, y, x) view took 1.5 s of
    an 8.8 s CPU predict; a running maximum over the few classes is memory-bound and ~10x
    faster, with the same tie rule.
    """
    import torch

    best = p[0].clone()
    codes = torch.zeros(best.shape, dtype=torch.uint8, device=p.device)
    for c in range(1, p.shape[0]):
        better = p[c] > best
        codes[better] = c
        torch.maximum(best, p[c], out=best)
    return codes


#: ``blocks="auto"`` segments whole slices up to this size (8192 x 8192) ...
_WHOLE_SLICE_MAX_PX = 2**26
#: ... a few slices per task (at most this many, and about this many pixels), so that the
#: tasks spread over the workers and one task's probabilities stay ~100 MB.
_SLICES_PER_TASK = 8
_TASK_PX = 2**23


#: default largest tile side (pixels)
_TILE = 512
#: pixels per forward pass on the CPU (``batch_size=None``)
_CPU_BATCH_PX = 2**18
#: default overlap of neighbouring tiles on the CPU (pixels; on CUDA ``tile // 4``)
_CPU_OVERLAP = 64


def even_tile(n: int, tile_max: int, overlap: int, multiple: int = 16) -> int:
    """The tile side along an axis of ``n`` pixels: the fewest tiles of at most ``tile_max``
    that cover it with ``overlap``, made just large enough (a multiple of ``multiple``).

    Tiles overlap by at least ``overlap``; the network work per pixel is then about
    ``n_tiles * tile / n`` per axis. A fixed 256 px tile with 64 px overlap computes 1.92x
    the pixels of a 3000 x 2000 slice; even 512-max tiles compute 1.34x.

    >>> even_tile(1024, 512, 64), even_tile(2000, 512, 64), even_tile(300, 512, 64)
    (384, 464, 300)
    """
    if n <= tile_max:
        return n
    k = math.ceil((n - overlap) / (tile_max - overlap))
    t = math.ceil((n + (k - 1) * overlap) / k)
    return min(tile_max, -(-t // multiple) * multiple)


def predict(
    stack,
    model,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    device: str = "auto",
    probabilities: bool = False,
    batch_size: int | None = None,
    threads: int | None = None,
    amp: bool | None = None,
    blocks: str = "auto",
    tta: int = 1,
):
    """Segment every slice of a stack with a trained SegNet: a lazy Dask graph.

    Parameters
    ----------
    stack : dask.array.Array, zarr.Array or ndarray, shape (z, y, x)
        Gray values (normalized stack: the model applies its own ``(v - mean) / std``).
        Read it from Zarr in pipelines: a NumPy array is put inside the graph.
    model : Model or path
        A trained model, or the path of a saved one. A random-forest model
        (:func:`~bigvol.segment.train_forest`) runs on a few whole slices per task; the
        tile, overlap, device, batch, amp and tta options are the SegNet's and do not
        apply to it.
    tile : int, optional
        Tile side in pixels. Default: tiles of at most 512 px sized to cover the slice
        evenly (:func:`even_tile`; a 1024 px side takes three 384 px tiles), so little work
        is spent on overlaps; with ``device="cuda"``, 512.
    overlap : int, optional
        Overlap of neighbouring tiles in pixels, ``0 <= overlap < tile`` (default 64 on the
        CPU without ``tile``, else ``tile // 4``). Tiles are blended with Gaussian weights,
        so the overlap hides the tile borders.
    device : {"auto", "cpu", "cuda"}
        "auto": CUDA when the worker has it (bf16/fp16 autocast, channels_last, pinned
        host memory, batched tiles), else the CPU with torch threads matched to the
        worker's threads. With "cuda" (or "auto" on a cluster whose workers declare a
        ``GPU`` resource) the tasks carry the Dask annotation ``resources={"GPU": 1}``.
    probabilities : bool
        Return the blended class probabilities, float16 ``(c, z, y, x)``, instead of codes.
    batch_size : int, optional
        Tiles per forward pass (default 16 on CUDA; on the CPU about 2^18 pixels, e.g. 2
        tiles of 384 px, 4 of 256 px).
    threads : int, optional
        Torch threads per task on CPU (default: cores / concurrent tasks).
    amp : bool, optional
        bfloat16/float16 autocast. Default: on for CUDA, off on the CPU (float32, so that
        results do not depend on the CPU's bfloat16 support); ``amp=True`` on a CPU with
        AVX512-BF16/AMX is several times faster (benchmarks/bench_infer.py).
    blocks : {"auto", "slices", "chunks"}
        What one task segments: a few whole slices ("slices"; "auto" when a slice has at
        most 2^26 pixels), or one chunk of ``stack`` with a ``tile - 1`` pixel halo in y and
        x ("chunks"), which repeats the tiles that straddle chunk edges. Same result.
    tta : {1, 2, 4, 8}
        Test-time augmentation: average the class probabilities over this many views of
        every tile (:data:`TTA_VIEWS`: 4 = mirrored in y, x and both, as nnU-Net; 8 = also
        turned by quarter turns), at ``tta`` times the cost. On the default phantom 8 views
        lifted the accuracy by 0.004, 4 views nearly as much (benchmarks/README.md).

    Returns
    -------
    dask.array.Array
        uint8 class codes ``(z, y, x)`` (0 pore, 1 solid electrolyte, 2 active material) with
        the chunks of ``stack``, or float16 probabilities ``(c, z, y, x)``.

    Notes
    -----
    Halo: ``(k - 1) // 2`` slices in z, and ``tile - 1`` pixels in y and x with
    ``blocks="chunks"``. The result does not
    depend on the chunking, and matches the model run on whole slices on >= 99.9 % of
    pixels (tests/test_infer.py).

    Examples
    --------
    >>> seg = bv.segment.predict(run.read("normalized"), "segnet.safetensors")  # doctest: +SKIP
    >>> run.write("segmentation", seg)                                         # doctest: +SKIP
    """
    import dask
    import dask.array as da

    from .forest import ForestModel

    if not isinstance(model, Model):
        model = Model.load(model)
    if isinstance(model, ForestModel):
        given = {name: v for name, v, default in (
            ("tile", tile, None), ("overlap", overlap, None), ("device", device, "auto"),
            ("batch_size", batch_size, None), ("threads", threads, None), ("amp", amp, None),
            ("blocks", blocks, "auto"), ("tta", tta, 1)) if v != default}
        if given:
            raise ConfigError(
                "segment options " + ", ".join(f"{k}={v!r}" for k, v in given.items())
                + " apply to the SegNet; a random-forest model takes none")
    if isinstance(stack, da.Array):
        x = stack
    elif hasattr(stack, "shape") and hasattr(stack, "chunks") and not isinstance(stack, np.ndarray):
        x = da.from_zarr(stack) if type(stack).__module__.startswith("zarr") else da.asarray(stack)
    else:
        x = da.asarray(np.asarray(stack))
    if x.ndim != 3:
        raise InputError(f"predict: the stack must be 3D (z, y, x), got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise InputError(f"predict: the stack must hold gray values, got dtype {x.dtype}")
    if device not in ("auto", "cpu") and not str(device).startswith("cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    even = tile is None and not str(device).startswith("cuda")
    tile = _TILE if tile is None else int(tile)
    if tile < 8:
        raise ConfigError(f"tile must be >= 8 pixels, got {tile}")
    if overlap is None:
        overlap = _CPU_OVERLAP if even else tile // 4
    overlap = int(overlap)
    if not 0 <= overlap < tile:
        raise ConfigError(f"overlap must be in [0, tile) = [0, {tile}), got {overlap}")
    if batch_size is not None and int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if blocks not in ("auto", "slices", "chunks"):
        raise ConfigError(f"blocks must be 'auto', 'slices' or 'chunks', got {blocks!r}")
    tta = _check_tta(tta)

    d = (model.k - 1) // 2
    z_short = max(0, d - x.shape[0])
    if z_short:
        # fewer slices than the z halo (dask's overlap cannot): repeat the last slice, which
        # is what the "nearest" boundary does, and drop the extra slices from the output
        x = da.pad(x, ((0, z_short), (0, 0), (0, 0)), mode="edge")
    Z, Y, X = x.shape
    if isinstance(model, ForestModel):
        out = _predict_forest(x, model, d, probabilities)
        return out[..., : Z - z_short, :, :] if z_short else out
    if even:
        tiles = (even_tile(Y, tile, overlap), even_tile(X, tile, overlap))
    else:
        tiles = (min(tile, Y), min(tile, X))
    if batch_size is None:
        # CPU: about 2^18 pixels per forward pass (two 384 px tiles), small enough for the
        # feature maps to stay in cache: 1.75 MPx/s against 1.50 with four such tiles.
        cpu_batch = max(1, round(_CPU_BATCH_PX / (tiles[0] * tiles[1])))
        batch_size = 16 if str(device).startswith("cuda") else cpu_batch
    batch_size = int(batch_size)
    out_chunks = x.chunks
    if blocks == "slices" or (blocks == "auto" and Y * X <= _WHOLE_SLICE_MAX_PX):
        zw = max(1, min(max(x.chunks[0]), _SLICES_PER_TASK, _TASK_PX // max(1, Y * X)))
        x = x.rechunk((zw, Y, X))
        hy = hx = 0
    else:
        hy, hx = tiles[0] - 1, tiles[1] - 1
    depth = {0: d, 1: hy, 2: hx}
    # dask's overlap needs every chunk at least as large as the halo.
    from dask.array.overlap import ensure_minimum_chunksize

    work_chunks = tuple(
        ensure_minimum_chunksize(depth[a], c) if depth[a] and min(c) < depth[a] else c
        for a, c in enumerate(x.chunks)
    )
    if work_chunks != x.chunks:
        x = x.rechunk(work_chunks)
    xo = da.overlap.overlap(x, depth=depth, boundary={0: "nearest", 1: "none", 2: "none"})
    offs = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in work_chunks]
    nblocks = [len(c) for c in work_chunks]

    ref = _ModelRef(model)
    ref_d = dask.delayed(ref, name=f"segnet-model-{model.digest[:16]}", pure=True, traverse=False)

    def run(block, mref, block_id=None):
        _bz, by, bx = block_id[-3:]
        top = hy if by > 0 else 0
        left = hx if bx > 0 else 0
        cy = slice(top, top + int(work_chunks[1][by]))
        cx = slice(left, left + int(work_chunks[2][bx]))
        origin = (int(offs[1][by]) - top, int(offs[2][bx]) - left)
        return _segment_block(
            block, mref.get(), z_pad=d, origin=origin, core=(cy, cx), image_shape=(Y, X),
            tile=tiles, overlap=overlap, device=device, batch_size=batch_size,
            threads=threads, probabilities=probabilities, amp=amp, tta=tta,
        )

    annotate = str(device).startswith("cuda") or (device == "auto" and _cluster_has_gpus())
    ctx = dask.annotate(resources={"GPU": 1}) if annotate else _null()
    with ctx:
        if probabilities:
            out = da.map_blocks(
                run, xo, ref_d, dtype=np.float16, new_axis=0,
                chunks=((model.n_classes,),) + work_chunks,
                meta=np.empty((0, 0, 0, 0), np.float16), name="segnet-proba",
            )
        else:
            out = da.map_blocks(
                run, xo, ref_d, dtype=np.uint8, chunks=work_chunks,
                meta=np.empty((0, 0, 0), np.uint8), name="segnet-segment",
            )
    del nblocks
    target = ((model.n_classes,),) + out_chunks if probabilities else out_chunks
    if out.chunks != target:
        out = out.rechunk(target)
    return out[..., : Z - z_short, :, :] if z_short else out


def _predict_forest(x, model, d: int, probabilities: bool):
    """The random forest over whole slices: its features are computed in strips of the
    whole slice, so no xy halo is needed.

    The tree walk is most of the work, so the stack is cut into a multiple of the cores'
    count of equal blocks of at most 8 slices (a stack of a few dozen slices in blocks of 4
    left one of two cores idle for a round). A task gets its block and ``d`` slices of halo
    each side, and computes every slice's features once.
    """
    import dask
    import dask.array as da

    from .forest import forest_block

    Z, Y, X = x.shape
    out_chunks = x.chunks
    cores = available_cores()
    n_tasks = cores * math.ceil(Z / (cores * _SLICES_PER_TASK))
    zw = max(1, math.ceil(Z / n_tasks))
    x = x.rechunk((zw, Y, X))
    if d:
        # each task reads its block and d slices each side (the nearest slice repeated at the
        # ends), whatever d is against the block size (dask's overlap needs blocks >= d)
        pad = da.pad(x, ((d, d), (0, 0), (0, 0)), mode="edge")
        z0 = np.concatenate([[0], np.cumsum(x.chunks[0])]).astype(int)
        xo = da.concatenate([pad[a : b + 2 * d].rechunk((b - a + 2 * d, Y, X))
                             for a, b in zip(z0[:-1], z0[1:])], axis=0)
    else:
        xo = x
    ref = _ModelRef(model)
    ref_d = dask.delayed(ref, name=f"forest-model-{model.digest[:16]}", pure=True,
                         traverse=False)

    def run(block, mref):
        return forest_block(block, mref.get(), z_pad=d, probabilities=probabilities)

    if probabilities:
        out = da.map_blocks(run, xo, ref_d, dtype=np.float16, new_axis=0,
                            chunks=((model.n_classes,),) + x.chunks,
                            meta=np.empty((0, 0, 0, 0), np.float16), name="forest-proba")
        target = ((model.n_classes,),) + out_chunks
    else:
        out = da.map_blocks(run, xo, ref_d, dtype=np.uint8, chunks=x.chunks,
                            meta=np.empty((0, 0, 0), np.uint8), name="forest-segment")
        target = out_chunks
    return out if out.chunks == target else out.rechunk(target)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _cluster_has_gpus() -> bool:
    """Whether a distributed client is active and one of its workers declares a GPU."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return False
    try:
        info = client.scheduler_info()
        return any("GPU" in (w.get("resources") or {}) for w in info.get("workers", {}).values())
    except Exception:  # pragma: no cover - a client that cannot be asked
        return False


def whole_slices(
    stack, model: Model, *, device: str = "cpu", probabilities: bool = False, tta: int = 1
) -> np.ndarray:
    """The model applied to whole slices at once (no tiles), in memory: the reference.

    For tests and small stacks only: each slice (with its ``k - 1`` neighbours) goes
    through the network in one piece (float32, ``tta`` views as in :func:`predict`).
    """
    import torch

    tta = _check_tta(tta)
    a = np.asarray(stack)
    dev = _resolve_device(device)
    net = model.module(dev)
    d = (model.k - 1) // 2
    norm = model.normalization
    out = []
    with torch.inference_mode():
        for z in range(a.shape[0]):
            idx = np.clip(np.arange(z - d, z + d + 1), 0, a.shape[0] - 1)
            xin = (a[idx].astype(np.float32) - norm["mean"]) / norm["std"]
            p = _probabilities(net, torch.from_numpy(xin[None]).to(dev), tta, _null,
                               torch.contiguous_format)[0]
            out.append(
                p.cpu().numpy() if probabilities else p.argmax(0).to(torch.uint8).cpu().numpy()
            )
    return np.stack(out, axis=1 if probabilities else 0)
