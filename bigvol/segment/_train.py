"""Training the SegNet from a few labelled slices (dense labels or sparse scribbles).

Not a lazy stage: training reads the few labelled slices into memory (a handful of
slices, never the volume) and runs PyTorch on them. Inference over the whole stack is the
lazy stage (:mod:`bigvol.segment.infer`).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._version import __version__
from ..conventions import DEFAULT_PHASES, UNLABELLED, available_cores
from ..errors import ConfigError, InputError
from ..meter import format_duration
from ..store import fault_point
from .model import Model

log = logging.getLogger(__name__)

#: epochs of ``steps_per_epoch`` (default 50) steps that ``train(epochs=None)`` runs, by
#: device type: a GPU takes 2000 steps in a few minutes; on 2 CPU cores the slim SegNet
#: takes 0.3-0.45 s per step of 8 crops of 224 px (k = 5 / k = 1), so 600 steps take 3-5
#: minutes instead of the 10-15 (or an hour on a loaded machine) of 2000.
DEFAULT_EPOCHS = {"cuda": 40, "cpu": 12}

#: steps timed (after one warm-up step) for the log line that says how long training takes
_ESTIMATE_AFTER = 4


# -- inputs ------------------------------------------------------------------------------
def _read_label_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"label file {path} does not exist")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(str(path))
        else:  # PNG and the other formats painting programs write
            import imageio.v3 as iio

            arr = iio.imread(str(path))
    except Exception as e:
        raise InputError(f"cannot read label file {path}: {e}") from None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and path.suffix.lower() not in (".tif", ".tiff"):
        # An RGB(A) export of a gray label image: accept it when the channels agree.
        if not (arr[..., 0] == arr[..., 1]).all() or not (arr[..., 0] == arr[..., 2]).all():
            raise InputError(
                f"label file {path} is a colour image; save the labels as a gray image whose "
                "values are the class codes (0, 1, 2, ...) and 255 for unlabelled"
            )
        arr = arr[..., 0]
    return arr


def _as_label_list(labels) -> tuple[list[np.ndarray], list[str]]:
    """Labels as a list of 2D arrays, with a name for each (for messages)."""
    if isinstance(labels, (str, os.PathLike)):
        arr = _read_label_file(Path(labels))
        arrs = [arr] if arr.ndim == 2 else list(arr)
        return arrs, [f"{labels}[{i}]" if arr.ndim == 3 else str(labels) for i in range(len(arrs))]
    if hasattr(labels, "ndim") and hasattr(labels, "shape"):
        arr = np.asarray(labels)
        if arr.ndim == 2:
            return [arr], ["labels"]
        if arr.ndim == 3:
            return list(arr), [f"labels[{i}]" for i in range(arr.shape[0])]
        raise InputError(f"labels must be 2D slices or an (n, y, x) array, got shape {arr.shape}")
    out, names = [], []
    for i, item in enumerate(labels):
        if isinstance(item, (str, os.PathLike)):
            arr = _read_label_file(Path(item))
            name = str(item)
        else:
            arr = np.asarray(item)
            name = f"labels[{i}]"
        if arr.ndim != 2:
            raise InputError(f"{name} must be a 2D label slice, got shape {arr.shape}")
        out.append(arr)
        names.append(name)
    if not out:
        raise InputError("no label slices given")
    return out, names


_LABEL_SUFFIXES = (".tif", ".tiff", ".png")


def read_labels(source, slices: Sequence[int] | None = None) -> np.ndarray:
    """Label slices painted in an image program, as an ``(n, y, x)`` uint8 array.

    Parameters
    ----------
    source : path or list of paths
        One multi-page TIFF (one page per labelled slice), a folder of TIFF / PNG images
        (one per labelled slice, taken in sorted file-name order), or a list of image files.
        Values are class codes, 255 = unlabelled.
    slices : sequence of int, optional
        The slice indices the labels belong to. With one image per slice only their number
        is checked; a multi-page TIFF with more pages than the largest index is a label
        stack of the whole volume, and the pages at ``slices`` are taken.

    Examples
    --------
    >>> labels = read_labels("labels/", slices=[8, 24, 40, 56])   # doctest: +SKIP
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        files = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in _LABEL_SUFFIXES)
        if not files:
            raise InputError(f"label folder {source} holds no TIFF or PNG image")
        source = files
    labs, names = _as_label_list(source)
    if slices is not None and len(labs) != len(slices):
        if len(labs) > max(int(s) for s in slices) >= 0 and min(int(s) for s in slices) >= 0:
            # a label stack of the whole volume (one page per slice): take the given slices
            labs = [labs[int(s)] for s in slices]
            names = [names[int(s)] for s in slices]
        else:
            raise InputError(f"{len(labs)} label images in {names[0]}... but {len(slices)} slices "
                             "given (give one image per slice, or a label stack of the whole "
                             "volume)")
    shapes = {lab.shape for lab in labs}
    if len(shapes) > 1:
        raise InputError(f"label images of different shapes: {sorted(shapes)}")
    return np.stack([np.asarray(lab) for lab in labs])


def _check_labels(labs: list[np.ndarray], names: list[str], n_classes: int) -> list[np.ndarray]:
    allowed = set(range(n_classes)) | {UNLABELLED}
    out = []
    for lab, name in zip(labs, names):
        if lab.dtype.kind not in "biu" and not (
            lab.dtype.kind == "f" and np.array_equal(lab, np.round(lab))
        ):
            raise InputError(f"{name}: labels must be integer class codes, got dtype {lab.dtype}")
        values = np.unique(lab)
        bad = [v for v in values.tolist() if int(v) not in allowed]
        if bad:
            raise InputError(
                f"{name} holds codes {bad[:10]} that are neither a class "
                f"(0..{n_classes - 1}) nor 255 (unlabelled)"
            )
        out.append(lab.astype(np.uint8))
    if all((lab == UNLABELLED).all() for lab in out):
        raise InputError("the labels mark no pixel (every value is 255 = unlabelled)")
    return out


def _contexts(images, n_labels: int, slices, k: int) -> list[np.ndarray]:
    """Per labelled slice, the ``(k, y, x)`` float32 input: the slice and its neighbours."""
    d = (k - 1) // 2
    if slices is None:
        if k != 1:
            raise ConfigError(
                f"k={k} feeds adjacent slices: pass the whole stack and the indices of the "
                "labelled slices, train(stack, labels, slices=[...], k=...)"
            )
        if hasattr(images, "ndim") and hasattr(images, "shape"):
            if images.ndim == 2:
                imgs = [np.asarray(images)]
            elif images.ndim == 3:
                imgs = [np.asarray(images[i]) for i in range(images.shape[0])]
            else:
                raise InputError(
                    f"images must be 2D slices or an (n, y, x) array, got shape {images.shape}"
                )
        else:
            imgs = [np.asarray(im) for im in images]
        if len(imgs) != n_labels:
            raise InputError(f"{len(imgs)} image slices but {n_labels} label slices")
        for i, im in enumerate(imgs):
            if im.ndim != 2:
                raise InputError(f"images[{i}] must be a 2D slice, got shape {im.shape}")
        return [im[None].astype(np.float32) for im in imgs]
    if not (hasattr(images, "ndim") and images.ndim == 3):
        raise InputError("with slices=[...], images must be the (z, y, x) stack")
    slices = [int(s) for s in slices]
    if len(slices) != n_labels:
        raise InputError(f"{len(slices)} slice indices but {n_labels} label slices")
    nz = images.shape[0]
    out = []
    for s in slices:
        if not 0 <= s < nz:
            raise InputError(f"slice index {s} is outside the stack (0..{nz - 1})")
        idx = np.clip(np.arange(s - d, s + d + 1), 0, nz - 1)  # edges: nearest slice
        lo, hi = int(idx.min()), int(idx.max()) + 1
        block = np.asarray(images[lo:hi])
        out.append(block[idx - lo].astype(np.float32))
    return out


def _check_dtype(ctxs):
    for c in ctxs:
        if c.dtype.kind not in "biuf":
            raise InputError(f"images must be numeric gray values, got dtype {c.dtype}")


def _training_data(images, labels, slices, k: int, n_classes: int):
    """Checked labels and their ``(k, y, x)`` image contexts, with the mean and standard
    deviation of the labelled slices' gray values (the input normalization); shared by the
    SegNet's and the forest's training."""
    labs, names = _as_label_list(labels)
    labs = _check_labels(labs, names, n_classes)
    ctxs = _contexts(images, len(labs), slices, k)
    _check_dtype(ctxs)
    for ctx, lab, name in zip(ctxs, labs, names):
        if ctx.shape[1:] != lab.shape:
            raise InputError(
                f"{name} has shape {lab.shape} but its image slice has shape {ctx.shape[1:]}"
            )
    centre = (k - 1) // 2
    vals = np.concatenate([c[centre].ravel() for c in ctxs]).astype(np.float64)
    mean, std = float(vals.mean()), float(vals.std())
    return ctxs, labs, names, (mean, std if std > 0 else 1.0)


# -- augmentation ------------------------------------------------------------------------
def _augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """SEM-suited augmentation of a normalized ``(k, h, w)`` crop and its labels.

    Flips and 90-degree rotations in the slice plane (the BSE image has no preferred
    in-plane orientation once curtaining is removed), brightness / contrast jitter (slice
    to slice drift left after normalization) and Gaussian noise (detector noise). The slice
    order (k axis) is never flipped: shine-through comes from behind the slice face.
    """
    if rng.random() < 0.5:
        x, y = x[:, ::-1], y[::-1]
    if rng.random() < 0.5:
        x, y = x[:, :, ::-1], y[:, ::-1]
    r = int(rng.integers(4))
    if r and x.shape[1] == x.shape[2]:
        x, y = np.rot90(x, r, axes=(1, 2)), np.rot90(y, r)
    x = x * rng.uniform(0.85, 1.15) + rng.uniform(-0.15, 0.15)
    sigma = rng.uniform(0.0, 0.1)
    if sigma > 0:
        x = x + rng.normal(0.0, sigma, size=x.shape).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)


# -- training ----------------------------------------------------------------------------
def _soft_dice_loss(logits, target, n_classes: int):
    """``1 - mean_c Dice_c`` of the softmax over the labelled pixels of the batch.

    .. math:: D_c = \\frac{2 \\sum_i p_{ic} y_{ic} + s}{\\sum_i p_{ic} + \\sum_i y_{ic} + s}

    summed over every labelled pixel of the batch ("batch Dice"), ``s = 1e-5``, averaged
    over the classes present in the batch's labels. Added to the cross-entropy as in
    nnU-Net (Isensee et al., Nature Methods 18, 2021): the Dice term weighs each class by
    its own size, so thin or rare classes (membranes, binder) count as much as large ones,
    and it rewards overlap (IoU) rather than per-pixel accuracy.
    """
    import torch

    mask = target != UNLABELLED
    t = torch.where(mask, target, 0)
    onehot = torch.nn.functional.one_hot(t, n_classes).permute(0, 3, 1, 2).float()
    m = mask[:, None].float()
    p = logits.softmax(1) * m
    onehot = onehot * m
    inter = (p * onehot).sum((0, 2, 3))
    size_t = onehot.sum((0, 2, 3))
    dice = (2 * inter + 1e-5) / (p.sum((0, 2, 3)) + size_t + 1e-5)
    present = size_t > 0
    return 1 - dice[present].mean()


def _load_checkpoint(path, key: str):
    """The saved training state, or None (no file, another key, or an unreadable file)."""
    import torch

    if path is None or not Path(path).is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)  # tensors and plain types only
    except Exception:  # a file cut short by the kill: start again
        return None
    return state if state.get("key") == key else None


def _save_checkpoint(path, state) -> None:
    import torch

    tmp = Path(f"{path}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill leaves the previous checkpoint or this one, whole


def _lr_factor(schedule: str, p: float) -> float:
    """Learning-rate factor at training progress ``p`` in [0, 1]."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * p))
    warm = 0.15
    if p < warm:
        return 0.04 + 0.96 * p / warm
    return 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * (p - warm) / (1 - warm)))


def _amp_choice(amp, device):
    """(enabled, dtype) of the autocast used for training and CPU inference."""
    import torch

    dev = str(device).split(":")[0]
    if dev == "cuda":
        # bfloat16 only: float16 training would need loss scaling.
        ok = torch.cuda.is_bf16_supported()
        return (ok if amp is None else bool(amp) and ok), torch.bfloat16
    if amp is None:
        try:
            amp = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # pragma: no cover - old or exotic builds
            amp = False
    return bool(amp), torch.bfloat16


def _say_estimate(per_step, total_steps, done, device, n_threads, time_limit, progress):
    """Log (and with ``progress`` print to stderr) how long the rest of training takes."""
    left = per_step * (total_steps - done)
    if time_limit is not None:
        left = min(left, float(time_limit))
    where = f"{device} with {n_threads} threads" if device == "cpu" else str(device)
    msg = (f"train: {per_step:.2f} s/step on {where}; {total_steps} steps take about "
           f"{format_duration(per_step * total_steps)} ({format_duration(left)} left; "
           "early stopping may end sooner)")
    log.info(msg)
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(msg, file=sys.stderr)


def train(
    images,
    labels,
    *,
    slices: Sequence[int] | None = None,
    k: int | None = None,
    preset: str = "slim",
    widths: Sequence[int] | None = None,
    convs: Sequence[int] | None = None,
    skips: bool | None = None,
    classes: Sequence[str] | None = None,
    crop: int = 224,
    batch_size: int = 8,
    epochs: int | None = None,
    steps_per_epoch: int = 50,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    schedule: str = "onecycle",
    amp: bool | None = None,
    validation: float | Sequence[int] | None = 0.15,
    patience: int | None = 8,
    class_weights: str | Sequence[float] | None = None,
    loss: str = "ce+dice",
    augment: bool = True,
    seed: int = 0,
    threads: int | None = None,
    device: str = "auto",
    time_limit: float | None = None,
    clock: str = "wall",
    progress: bool = True,
    init: Model | str | os.PathLike | None = None,
    callback=None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_key: str = "",
) -> Model:
    """Train a SegNet on a few labelled slices.

    Random ``crop x crop`` patches of the labelled slices, augmented (flips, 90-degree
    rotations, brightness / contrast jitter, noise), are fed in batches to the network,
    which minimizes the cross-entropy plus the soft Dice loss (as nnU-Net does)

    .. math:: L = -\\frac{1}{N}\\sum_i \\log p_{y_i}(x_i)
              \\;+\\; 1 - \\frac{1}{C}\\sum_c
              \\frac{2 \\sum_i p_{ic} [y_i = c]}{\\sum_i p_{ic} + \\sum_i [y_i = c]}

    over labelled pixels only (label 255 = unlabelled is ignored, so sparse scribbles
    work; ``class_weights`` weighs the cross-entropy, ``loss="ce"`` drops the Dice term),
    with AdamW and a one-cycle
    (or cosine) learning-rate schedule. After every epoch the pixel accuracy on held-out
    validation pixels is measured; training stops early when it has not improved for
    ``patience`` epochs, and the best epoch's weights are kept.

    Parameters
    ----------
    images : array or list of 2D arrays
        With ``slices=None``: the labelled gray slices themselves, a list of 2D arrays or an
        ``(n, y, x)`` array (``k`` must be 1). With ``slices``: the whole ``(z, y, x)``
        stack (NumPy, Dask or Zarr; only the needed slices are read), from which slice
        ``slices[i]`` and its ``k - 1`` neighbours are taken (the nearest slice is repeated
        at the ends of the stack).
    labels : array, list of 2D arrays, or paths
        Class codes ``0 .. n_classes-1`` per pixel, 255 = unlabelled: an ``(n, y, x)``
        array, a list of 2D arrays, or TIFF / PNG file paths (one 2D image per slice, or one
        multi-page TIFF).
    slices : sequence of int, optional
        Indices in ``images`` (the stack) of the labelled slices, in the order of ``labels``.
    k : int, optional
        Adjacent slices fed as input channels (odd; 1 = 2D as in the paper, 3 = 2.5D).
        Default 1, or the ``init`` model's.
    preset : {"slim", "paper", "tiny"}
        Architecture: "paper" = VGG16 widths 64-512 over 5 levels (29.4 M parameters);
        "slim" = widths 16-128 over 4 levels (0.96 M, the CPU default).
    widths, convs : sequence of int, optional
        Explicit channels and conv blocks per level (override ``preset``).
    skips : bool, optional
        U-SegNet: concatenate each encoder level's features to the unpooled decoder input
        (:class:`~bigvol.segment.segnet.SegNet`). Default True, or the ``init`` model's.
        Index unpooling alone puts class edges only to within the pooling cells: on an
        untuned phantom with blur (phantom-b) 23 % of the pixels within 1.5 px of an edge
        were wrong without skips, 16 % with them (the forest: 18 %). At 600 steps, accuracy
        / mean IoU on held-out slices (benchmarks/README.md) with and without skips:
        phantom-b 0.9802 / 0.928 and 0.9693 / 0.892, nano-CT 0.8498 / 0.616 and 0.8449 /
        0.601, ISBI 0.9080 / 0.781 and 0.9057 / 0.776, EPFL mitochondria 0.9868 / 0.914
        and 0.9853 / 0.906. Each training step costs ~25 % more.
    classes : sequence of str, optional
        Class names, index = code (default pore, SE, AM, or the ``init`` model's).
    crop, batch_size, epochs, steps_per_epoch : int
        Training patches are ``crop x crop`` (clipped to the slice), ``batch_size`` per
        step, ``steps_per_epoch`` steps per epoch, at most ``epochs`` epochs. ``epochs=None``
        (default) sizes training to the device: :data:`DEFAULT_EPOCHS` -- 40 epochs (2000
        steps) on a GPU, 12 (600 steps, about 3-5 minutes of the slim SegNet on 2 CPU cores)
        on the CPU. The number depends on the device type only, never on a clock, so the same
        inputs give the same model. After a few steps a log line (and, with ``progress``, a
        line on stderr) says how long training will take.
    lr, weight_decay : float
        AdamW peak learning rate and weight decay.
    schedule : {"onecycle", "cosine", "constant"}
        One cycle: linear warm-up over the first 15 % of training to ``lr``, then cosine
        decay to ``lr / 1000`` (Smith 2018); cosine: decay from the start; constant.
        Progress is counted in steps, or in time when ``time_limit`` comes first, so a
        time-limited run still anneals.
    amp : bool, optional
        Mixed precision (bfloat16 autocast) for the forward pass. Default: on where the
        CPU has native bfloat16 (AVX512-BF16 / AMX; 2-3x faster here) and on CUDA; the
        weights and the loss stay float32.
    validation : float or sequence of int or None
        A fraction ``f``: the last ``f`` of the columns of every labelled slice are held out
        (never cropped for training) and scored each epoch. A list of indices (into
        ``labels``): those slices are held out whole. None: no validation, no early stop.
    patience : int or None
        Epochs without validation improvement before stopping; None = never stop early.
    class_weights : "balanced", "sqrt", sequence of float or None
        Cross-entropy weight per class: "balanced" = inverse class frequency among the
        training labels, :math:`w_c = N / (C N_c)` (favours the recall of rare classes such
        as pores); "sqrt" = its square root; None (default) = unweighted, the Dice term of
        ``loss`` already weighs each class by its own size.
    loss : {"ce+dice", "ce"}
        "ce+dice" (default): the cross-entropy plus the soft Dice loss of the batch,
        :math:`1 - \\mathrm{mean}_c D_c` (``_soft_dice_loss``), as nnU-Net trains; "ce":
        the cross-entropy alone. Measured at 600 steps, seed 0, 4 labelled slices, scored
        on held-out slices (benchmarks/README.md), accuracy / mean IoU: EPFL mitochondria
        0.9853 / 0.906 against 0.9830 / 0.899 for "ce" with "sqrt" weights (the previous
        default), ISBI membranes 0.9057 / 0.776 against 0.9006 / 0.771, nano-CT 0.8449 /
        0.601 against 0.8394 / 0.597, phantom-b 0.9693 / 0.892 against 0.9692 / 0.891;
        "ce+dice" with "sqrt" weights was no better than either.
    augment : bool
    seed : int
        Seeds the crop sampler, the augmentation and the network initialization. On the
        CPU, the same seed and inputs give the same model, bit for bit (unless
        ``time_limit`` cuts training short).
    threads : int, optional
        Torch threads (default: the cores available to this process).
    device : {"auto", "cpu", "cuda"}
        "auto": CUDA when available, else the CPU.
    clock : {"wall", "cpu"}
        How ``time_limit`` is measured: wall-clock seconds, or "cpu": this process's CPU
        seconds divided by ``threads``, i.e. the wall time the same work takes on a machine
        whose ``threads`` cores are not shared (for budgets on a shared machine).
    time_limit : float, optional
        Stop after this many seconds (checked after each step).
    progress : bool
        Show a tqdm progress bar with the loss and the validation accuracy.
    init : Model or path, optional
        Fine-tune this model instead of starting from random weights: its architecture,
        classes, ``k`` and input normalization are kept (explicit ones that differ are an
        error). This is the interactive loop of pixel-classification tools: train on a few
        scribbles, look at the prediction, paint corrections where it is wrong, and train
        on with all the labels; or adapt a model to a new volume from a few labels.
    callback : callable, optional
        Called after every step with ``{"step", "steps", "epoch", "loss"}``; a true return
        value stops training after that step (the viewer's progress bar and stop button).
        The model keeps the best epoch's weights, as after early stopping.
    checkpoint : path, optional
        A file that holds the whole training state (weights, optimizer, schedule, random
        generators, history) after every epoch. If it exists with the same
        ``checkpoint_key`` (the caller's hash of the inputs and options; the train stage
        passes its fingerprint), training resumes after its last epoch, and the model ends
        bit-identical to an uninterrupted training (with a step budget; a ``time_limit``
        counts wall or CPU seconds and is not reproducible). Removed when training ends.

    Returns
    -------
    Model
        With the input normalization (mean and standard deviation of the training images)
        and the training record (options, per-epoch loss and validation accuracy, time).

    References
    ----------
    V. Badrinarayanan, A. Kendall, R. Cipolla, "SegNet: A Deep Convolutional
    Encoder-Decoder Architecture for Image Segmentation", IEEE TPAMI 39(12), 2017.

    Examples
    --------
    >>> model = bv.segment.train(stack, truth_slices, slices=[8, 24, 40, 56], k=3,
    ...                          epochs=20)                          # doctest: +SKIP
    >>> model.save("segnet.safetensors")                             # doctest: +SKIP
    """
    import torch
    from tqdm.auto import tqdm

    from .segnet import PRESETS, SegNet

    # ---- options ------------------------------------------------------------------------
    init_model = None
    if init is not None:
        # Fine-tuning: the architecture, classes, k and input normalization are the model's.
        init_model = init if isinstance(init, Model) else Model.load(init)
        if init_model.config.get("architecture") == "forest":
            raise ConfigError(
                f"init: {init_model.path or 'the model'} is a random forest, which cannot be "
                "fine-tuned; train a SegNet without init, or train the forest again "
                "(bigvol.segment.train_forest) on all labels")
        src = init_model.path or "the init model"
        if k is not None and k != init_model.k:
            raise ConfigError(
                f"k={k!r}, but {src} takes k={init_model.k} slices; leave k out to fine-tune it"
            )
        if classes is not None and [str(c) for c in classes] != init_model.classes:
            raise ConfigError(f"classes {list(classes)} differ from {src}'s {init_model.classes}")
        for key, v in (("widths", widths), ("convs", convs)):
            if v is not None and [int(x) for x in v] != init_model.config[key]:
                raise ConfigError(f"{key} {list(v)} differ from {src}'s {init_model.config[key]}")
        k, classes = init_model.k, init_model.classes
        if skips is not None and bool(skips) != bool(init_model.config.get("skips", False)):
            raise ConfigError(f"skips={skips!r} differs from {src}'s architecture")
        widths, convs = init_model.config["widths"], init_model.config["convs"]
        skips = bool(init_model.config.get("skips", False))
        preset = init_model.record.get("options", {}).get("preset", "custom")
    k = 1 if k is None else k
    skips = True if skips is None else bool(skips)
    classes = [str(c) for c in (DEFAULT_PHASES if classes is None else classes)]
    n_classes = len(classes)
    if n_classes < 2:
        raise ConfigError(f"classes: need at least 2 classes, got {classes}")
    if not (isinstance(k, (int, np.integer)) and k >= 1 and k % 2 == 1):
        raise ConfigError(f"k must be an odd positive integer (1, 3, 5, ...), got {k!r}")
    if widths is None:
        if preset not in PRESETS:
            raise ConfigError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        widths, default_convs = PRESETS[preset]
        convs = default_convs if convs is None else convs
    widths = [int(w) for w in widths]
    convs = [int(c) for c in (convs if convs is not None else [2] * len(widths))]
    if len(convs) != len(widths) or min(widths) < 1 or min(convs) < 1:
        raise ConfigError(f"widths {widths} and convs {convs} must be positive and of equal length")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if epochs is None:
        epochs = DEFAULT_EPOCHS["cpu" if str(device) == "cpu" else "cuda"]
    for name, v in (
        ("crop", crop), ("batch_size", batch_size), ("epochs", epochs),
        ("steps_per_epoch", steps_per_epoch),
    ):
        if int(v) < 1:
            raise ConfigError(f"{name} must be >= 1, got {v!r}")
    if clock not in ("wall", "cpu"):
        raise ConfigError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    if loss not in ("ce", "ce+dice"):
        raise ConfigError(f"loss must be 'ce' or 'ce+dice', got {loss!r}")
    if schedule not in ("onecycle", "cosine", "constant"):
        raise ConfigError(f"schedule must be 'onecycle', 'cosine' or 'constant', got {schedule!r}")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")

    # ---- data ---------------------------------------------------------------------------
    ctxs, labs, names, (mean, std) = _training_data(images, labels, slices, int(k), n_classes)
    if init_model is not None:
        mean, std = (float(init_model.normalization[key]) for key in ("mean", "std"))
    ctxs = [((c - mean) / std).astype(np.float32) for c in ctxs]

    # Validation split: a band of columns of every slice, or whole slices.
    n = len(labs)
    train_items: list[tuple[int, int]] = []  # (slice, usable width)
    val_items: list[tuple[int, int]] = []  # (slice, first validation column)
    if validation is None or (
        isinstance(validation, (float, int)) and not isinstance(validation, bool)
        and validation == 0
    ):
        train_items = [(i, lab.shape[1]) for i, lab in enumerate(labs)]
    elif isinstance(validation, (float, int)) and not isinstance(validation, bool):
        if not 0 < validation < 0.5:
            raise ConfigError(
                f"validation must be a fraction in (0, 0.5) or slice indices, got {validation!r}"
            )
        for i, lab in enumerate(labs):
            w = lab.shape[1]
            band = max(1, int(math.ceil(validation * w)))
            train_items.append((i, w - band))
            val_items.append((i, w - band))
    else:
        held = sorted({int(v) for v in validation})
        if any(not 0 <= v < n for v in held) or len(held) >= n:
            raise ConfigError(
                f"validation slices {held} must be indices into the {n} label slices, "
                "leaving one to train on"
            )
        train_items = [(i, labs[i].shape[1]) for i in range(n) if i not in held]
        val_items = [(i, 0) for i in held]
    train_items = [
        (i, w) for i, w in train_items if w >= 1 and (labs[i][:, :w] != UNLABELLED).any()
    ]
    if not train_items:
        raise InputError("no labelled pixel is left for training after the validation split")
    val_items = [(i, x0) for i, x0 in val_items if (labs[i][:, x0:] != UNLABELLED).any()]

    counts = np.zeros(n_classes, np.int64)
    for i, w in train_items:
        counts += np.bincount(labs[i][:, :w].ravel(), minlength=256)[:n_classes]
    if isinstance(class_weights, str) and class_weights.lower() == "none":  # from the CLI
        class_weights = None
    if (counts == 0).any():  # the model could never learn to predict it
        missing = [classes[c] for c in np.flatnonzero(counts == 0)]
        raise InputError(f"the training labels hold no pixel of class {missing}; label some")
    if isinstance(class_weights, str) and class_weights in ("balanced", "sqrt"):
        cw = counts.sum() / (n_classes * counts.astype(np.float64))
        if class_weights == "sqrt":
            cw = np.sqrt(cw)
        cw = np.clip(cw, 0.05, 50.0)
    elif isinstance(class_weights, str):
        raise ConfigError(f"class_weights must be 'balanced', 'sqrt', None or {n_classes} "
                          f"numbers, got {class_weights!r}")
    elif class_weights is None:
        cw = np.ones(n_classes)
    else:
        cw = np.asarray(class_weights, dtype=np.float64)
        if cw.shape != (n_classes,) or (cw < 0).any():
            raise ConfigError(f"class_weights must be 'balanced', 'sqrt', None or {n_classes} "
                              "non-negative numbers")

    # ---- torch setup ----------------------------------------------------------------------
    rng = np.random.default_rng(seed)
    cpu0 = time.process_time()
    prev_threads = torch.get_num_threads()
    n_threads = int(threads) if threads else available_cores()
    torch.set_num_threads(n_threads)
    try:
        torch.manual_seed(seed)
        net = SegNet(k, n_classes, widths, convs, skips=skips)
        if init_model is not None:
            net.load_state_dict(
                {kk: torch.from_numpy(v.copy()) for kk, v in init_model.weights.items()}
            )
        net = net.to(device)
        use_amp, amp_dtype = _amp_choice(amp, device)
        # channels_last lets oneDNN (CPU) and cuDNN (GPU) pick their fast convolutions.
        net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        total_steps = int(epochs) * int(steps_per_epoch)
        # The schedule is a function of training progress p in [0, 1]: the step count over
        # the planned steps, or the time used over ``time_limit`` when that comes first.
        # Written by hand (not OneCycleLR) because torch's schedulers only count steps.
        progress_at = {"p": 0.0}
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda _s: _lr_factor(schedule, progress_at["p"])
        )
        loss_fn = torch.nn.CrossEntropyLoss(
            weight=torch.tensor(cw, dtype=torch.float32, device=device), ignore_index=UNLABELLED
        )
        probs = np.array([(labs[i][:, :w] != UNLABELLED).sum() for i, w in train_items], np.float64)
        probs /= probs.sum()

        def sample():
            xs, ys = [], []
            while len(xs) < batch_size:
                for _attempt in range(20):
                    j = int(rng.choice(len(train_items), p=probs))
                    i, w = train_items[j]
                    h = labs[i].shape[0]
                    c = min(int(crop), h, w)
                    y0 = int(rng.integers(0, h - c + 1))
                    x0 = int(rng.integers(0, w - c + 1))
                    lab = labs[i][y0 : y0 + c, x0 : x0 + c]
                    if (lab != UNLABELLED).any():
                        break
                x = ctxs[i][:, y0 : y0 + c, x0 : x0 + c]
                if augment:
                    x, lab = _augment(x, lab, rng)
                xs.append(x)
                ys.append(lab)
            # Crops of different slices may differ in size when slices are small: pad to
            # the largest with unlabelled pixels.
            hh = max(x.shape[1] for x in xs)
            ww = max(x.shape[2] for x in xs)
            xb = np.zeros((len(xs), k, hh, ww), np.float32)
            yb = np.full((len(xs), hh, ww), UNLABELLED, np.int64)
            for b, (x, lab) in enumerate(zip(xs, ys)):
                xb[b, :, : x.shape[1], : x.shape[2]] = x
                yb[b, : lab.shape[0], : lab.shape[1]] = lab
            xt = torch.from_numpy(xb).to(device).contiguous(memory_format=torch.channels_last)
            return xt, torch.from_numpy(yb).to(device)

        def validate() -> float | None:
            if not val_items:
                return None
            net.eval()
            correct = total = 0
            margin = 64  # context columns left of the band, so the band sees its neighbourhood
            with torch.inference_mode():
                for i, x0 in val_items:
                    xa = max(0, x0 - margin)
                    x = torch.from_numpy(np.ascontiguousarray(ctxs[i][None, :, :, xa:])).to(device)
                    pred = net(x).argmax(1)[0, :, x0 - xa :].cpu().numpy()
                    lab = labs[i][:, x0:]
                    m = lab != UNLABELLED
                    correct += int((pred[m] == lab[m]).sum())
                    total += int(m.sum())
            net.train()
            return correct / total if total else None

        history = []
        best_acc, best_state, best_epoch, bad = -1.0, None, None, 0
        stopped = "epochs"
        n_steps = 0
        t0 = time.perf_counter()
        if clock == "cpu":
            c0 = time.process_time()

            def used():
                return (time.process_time() - c0) / n_threads
        else:

            def used():
                return time.perf_counter() - t0
        bar = tqdm(
            total=total_steps, desc="train SegNet", unit="step", disable=not progress, leave=False
        )
        start_epoch = 0
        state = _load_checkpoint(checkpoint, checkpoint_key)
        if state is not None:
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            progress_at["p"] = state["p"]
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            history, n_steps, start_epoch = state["history"], state["n_steps"], state["epoch"]
            best_acc, best_state = state["best_acc"], state["best_state"]
            best_epoch, bad = state["best_epoch"], state["bad"]
            bar.update(n_steps)
        net.train()
        first_step, t_warm = n_steps, None
        log.info("training %d steps (%d epochs x %d) of %d crops of %d px, k=%d, on %s%s",
                 total_steps, int(epochs), int(steps_per_epoch), int(batch_size), int(crop),
                 int(k), device, f" with {n_threads} threads" if device == "cpu" else "")
        for epoch in range(start_epoch, int(epochs)):
            losses = []
            for _step in range(int(steps_per_epoch)):
                xb, yb = sample()
                opt.zero_grad(set_to_none=True)
                with torch.autocast(
                    device_type=str(device).split(":")[0], dtype=amp_dtype, enabled=use_amp
                ):
                    logits = net(xb)
                logits = logits.float()  # bf16 under autocast: the losses in float32, cast once
                step_loss = loss_fn(logits, yb)
                if loss == "ce+dice":
                    step_loss = step_loss + _soft_dice_loss(logits, yb, n_classes)
                step_loss.backward()
                opt.step()
                progress_at["p"] = min(1.0, max(
                    (n_steps + 1) / total_steps,
                    used() / time_limit if time_limit else 0.0,
                ))
                sched.step()
                losses.append(float(step_loss.detach()))
                n_steps += 1
                bar.update(1)
                if n_steps - first_step == 1:
                    t_warm = time.perf_counter()
                elif n_steps - first_step == _ESTIMATE_AFTER + 1:
                    per_step = (time.perf_counter() - t_warm) / _ESTIMATE_AFTER
                    _say_estimate(per_step, total_steps, n_steps, device, n_threads,
                                  time_limit, progress)
                if time_limit is not None and used() > time_limit:
                    stopped = "time_limit"
                    break
                if callback is not None and callback(
                        {"step": n_steps, "steps": total_steps, "epoch": epoch + 1,
                         "loss": losses[-1]}):
                    stopped = "stopped"
                    break
            acc = validate()
            rec = {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "val_accuracy": acc,
                "lr": float(opt.param_groups[0]["lr"]),
                "elapsed_s": round(time.perf_counter() - t0, 2),
            }
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", val_acc="-" if acc is None else f"{acc:.4f}")
            if acc is not None and acc > best_acc + 1e-4:
                best_acc, best_epoch, bad = acc, epoch + 1, 0
                best_state = copy.deepcopy(net.state_dict())
            elif acc is not None:
                bad += 1
            if checkpoint is not None and stopped == "epochs":
                _save_checkpoint(checkpoint, {
                    "key": checkpoint_key, "epoch": epoch + 1, "n_steps": n_steps,
                    "net": net.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "p": progress_at["p"],
                    "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                    "history": history, "best_acc": best_acc, "best_state": best_state,
                    "best_epoch": best_epoch, "bad": bad})
                fault_point("train", epoch + 1)
            if stopped in ("time_limit", "stopped"):
                break
            if patience is not None and acc is not None and bad >= patience:
                stopped = "early_stopping"
                break
        bar.close()
        if checkpoint is not None:
            Path(checkpoint).unlink(missing_ok=True)
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        weights = {kk: v.detach().cpu().numpy().copy() for kk, v in net.state_dict().items()}
    finally:
        torch.set_num_threads(prev_threads)

    record = {
        "options": {
            "k": int(k), "preset": preset, "crop": int(crop), "batch_size": int(batch_size),
            "epochs": int(epochs), "steps_per_epoch": int(steps_per_epoch), "lr": lr,
            "weight_decay": weight_decay, "schedule": schedule, "amp": bool(use_amp),
            "validation": (
                validation if not isinstance(validation, (list, tuple)) else list(validation)
            ),
            "patience": patience, "augment": bool(augment), "loss": loss, "seed": int(seed),
            "time_limit": time_limit, "clock": clock,
            "class_weights": (
                class_weights if isinstance(class_weights, (str, type(None)))
                else list(map(float, class_weights))
            ),
        },
        "slices": None if slices is None else [int(s) for s in slices],
        "init": None if init_model is None else {
            "path": None if init_model.path is None else str(init_model.path),
            "digest": init_model.digest,
        },
        "label_sources": names,
        "class_pixel_counts": counts.tolist(),
        "class_loss_weights": [float(c) for c in cw],
        "history": history,
        "best_epoch": best_epoch,
        "resumed_at_epoch": start_epoch,
        "best_val_accuracy": None if best_epoch is None else best_acc,
        "stopped": stopped,
        "steps": n_steps,
        "elapsed_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(time.process_time() - cpu0, 2),
        "threads": n_threads,
        "device": str(device),
        "torch_version": torch.__version__,
        "bigvol_version": __version__,
    }
    config = {
        "architecture": "segnet",
        "in_channels": int(k),
        "k": int(k),
        "n_classes": n_classes,
        "classes": classes,
        "widths": widths,
        "convs": convs,
        "skips": bool(skips),
        "normalization": {"method": "mean_std", "mean": mean, "std": std},
        "training": record,
    }
    return Model(config, weights)
