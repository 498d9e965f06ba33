"""Segmentation quality: confusion matrices, pixel accuracy, per-slice accuracy, recall, IoU.

All measures come from one streaming reduction: a per-slice confusion table of shape
``(n_slices, n_classes, n_classes)`` (rows = true class, columns = predicted class), built
chunk by chunk with ``bincount`` and summed over the y/x chunks. Truth pixels equal to
``ignore`` (255, "unlabelled") are left out everywhere.

The paper's Table 1 is ``confusion_matrix(truth, pred, normalize="true")``: each row
divided by the number of pixels of that true class, so the diagonal is the per-class
recall.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from .conventions import UNLABELLED
from .errors import InputError


def _check_pair(truth, pred, n_classes):
    if int(n_classes) != n_classes or n_classes < 1:
        raise InputError(f"n_classes must be a positive integer, got {n_classes!r}")
    if tuple(truth.shape) != tuple(pred.shape):
        raise InputError(
            f"truth shape {tuple(truth.shape)} != prediction shape {tuple(pred.shape)}"
        )
    for name, a in (("truth", truth), ("prediction", pred)):
        if np.dtype(a.dtype).kind not in "ui":
            raise InputError(f"{name} must hold integer phase codes, got dtype {a.dtype}")
    if truth.ndim < 2:
        raise InputError(f"expected (z, y, x) or (y, x) arrays, got {truth.ndim} dimension(s)")


def _block_table(t, p, n, ignore):
    t = t.astype(np.int64, copy=False)
    p = p.astype(np.int64, copy=False)
    valid = t != ignore
    bad_t = valid & ((t < 0) | (t >= n))
    if bad_t.any():
        raise InputError(
            f"truth holds phase code {int(t[bad_t][0])}, outside 0..{n - 1} (and not {ignore})"
        )
    bad_p = valid & ((p < 0) | (p >= n))
    if bad_p.any():
        raise InputError(f"prediction holds phase code {int(p[bad_p][0])}, outside 0..{n - 1}")
    nz = t.shape[0]
    z = np.broadcast_to(np.arange(nz)[:, None, None], t.shape)
    code = (z * n + t) * n + p
    table = np.bincount(code[valid], minlength=nz * n * n).reshape(nz, n, n)
    return table[:, None, None, :, :]


def slice_confusion(truth, pred, *, n_classes: int = 3, ignore: int = UNLABELLED) -> da.Array:
    """Per-slice confusion counts, a lazy ``(n_slices, n_classes, n_classes)`` int64 array.

    ``[z, i, j]`` counts pixels of slice ``z`` whose true class is ``i`` and predicted
    class ``j``.
    """
    _check_pair(truth, pred, n_classes)
    truth = da.asarray(truth)
    pred = da.asarray(pred)
    if truth.ndim == 2:
        truth, pred = truth[None], pred[None]
    if truth.ndim != 3:
        raise InputError(f"expected (z, y, x) arrays, got {truth.ndim} dimensions")
    pred = pred.rechunk(truth.chunks)
    n = int(n_classes)
    per_block = da.map_blocks(
        _block_table, truth, pred, n, ignore,
        new_axis=[3, 4],
        chunks=(
            truth.chunks[0], (1,) * len(truth.chunks[1]), (1,) * len(truth.chunks[2]), (n,), (n,)
        ),
        dtype=np.int64,
        meta=np.empty((0, 0, 0, 0, 0), dtype=np.int64),
    )
    return per_block.sum(axis=(1, 2))


def _normalize_rows(cm: np.ndarray) -> np.ndarray:
    rows = cm.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, cm / rows, np.nan)


def confusion_matrix(truth, pred, *, n_classes: int = 3, normalize=None, ignore: int = UNLABELLED):
    """Confusion matrix of a segmentation, rows = true class, columns = predicted class.

    Parameters
    ----------
    truth, pred : dask or numpy arrays of phase codes, same shape
        ``truth`` pixels equal to ``ignore`` (255) are not counted.
    n_classes : int
    normalize : None or "true"
        None: pixel counts (int64). "true": each row divided by its total, so row ``i``
        holds the fractions of true class ``i`` predicted as each class (the paper's
        Table 1); a class absent from the truth gives a row of NaN.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[[0, 0, 1, 2]]]); p = np.array([[[0, 1, 1, 2]]])
    >>> confusion_matrix(t, p)
    array([[1, 1, 0],
           [0, 1, 0],
           [0, 0, 1]])
    >>> confusion_matrix(t, p, normalize="true")[0]
    array([0.5, 0.5, 0. ])
    """
    if normalize not in (None, "true"):
        raise InputError(f'normalize must be None or "true", got {normalize!r}')
    cm = np.asarray(
        slice_confusion(truth, pred, n_classes=n_classes, ignore=ignore).sum(axis=0).compute()
    )
    return _normalize_rows(cm) if normalize == "true" else cm


def accuracy_per_slice(truth, pred, *, n_classes: int = 3, ignore: int = UNLABELLED) -> np.ndarray:
    """Pixel accuracy of every slice (NaN for a slice without labelled pixels)."""
    table = np.asarray(slice_confusion(truth, pred, n_classes=n_classes, ignore=ignore).compute())
    return _accuracy_of(table)


def _accuracy_of(table: np.ndarray) -> np.ndarray:
    total = table.sum(axis=(-2, -1)).astype(np.float64)
    correct = np.trace(table, axis1=-2, axis2=-1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / total, np.nan)


def scores_from_confusion(cm: np.ndarray) -> dict:
    """Accuracy, per-class recall, precision and IoU from a confusion count matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    true_n = cm.sum(axis=1)
    pred_n = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(true_n > 0, tp / true_n, np.nan)
        precision = np.where(pred_n > 0, tp / pred_n, np.nan)
        union = true_n + pred_n - tp
        iou = np.where(union > 0, tp / union, np.nan)
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "recall": recall,
        "precision": precision,
        "iou": iou,
    }


def evaluate(truth, pred, *, n_classes: int = 3, ignore: int = UNLABELLED) -> dict:
    """Every quality measure from one pass over the data.

    Returns a dict: ``confusion`` (counts), ``confusion_normalized`` (rows = true class),
    ``accuracy``, ``recall``, ``precision``, ``iou`` (per class), ``accuracy_per_slice``.
    """
    table = np.asarray(slice_confusion(truth, pred, n_classes=n_classes, ignore=ignore).compute())
    cm = table.sum(axis=0)
    out = {"confusion": cm, "confusion_normalized": _normalize_rows(cm)}
    out.update(scores_from_confusion(cm))
    out["accuracy_per_slice"] = _accuracy_of(table)
    return out


def format_confusion(cm_norm: np.ndarray, names=("pore", "electrolyte", "active")) -> str:
    """A row-normalized confusion matrix as a text table (the paper's Table 1 form)."""
    n = cm_norm.shape[0]
    names = list(names)[:n] + [str(i) for i in range(len(names), n)]
    w = max(len(s) for s in names) + 6
    head = " " * w + "".join(f"{'pred ' + s:>{w}}" for s in names)
    rows = [
        f"{'true ' + names[i]:<{w}}" + "".join(f"{cm_norm[i, j]:>{w}.3f}" for j in range(n))
        for i in range(n)
    ]
    return "\n".join([head, *rows])
