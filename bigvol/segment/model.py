"""The trained segmentation model: weights, architecture, classes, input normalization.

A :class:`Model` is plain data (a JSON-able config and a dict of NumPy weight arrays); the
PyTorch network is built from it only when inference or training needs it, so this module
does not import :mod:`torch`.

On disk a model is **one safetensors file**: the tensors are the network's ``state_dict``,
and the file's header metadata holds, under the key ``"bigvol_model"``, the JSON config::

    {"format": "bigvol-segnet", "format_version": 1, "architecture": "segnet",
     "in_channels": k, "k": k, "n_classes": 3, "classes": ["pore", ...],
     "widths": [...], "convs": [...],
     "normalization": {"method": "mean_std", "mean": m, "std": s},
     "training": {... options, per-epoch loss and validation accuracy ...}}

Loading never unpickles: safetensors stores raw tensors and a JSON header only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .._version import __version__
from ..conventions import DEFAULT_PHASES
from ..errors import InputError

FORMAT = "bigvol-segnet"
FORMAT_VERSION = 1
_META_KEY = "bigvol_model"


class Model:
    """A SegNet segmentation model: architecture, weights, classes and input normalization.

    Made by :func:`bigvol.segment.train`, written by :meth:`save`, read by :meth:`load`,
    used by :func:`bigvol.segment.predict`.

    Parameters
    ----------
    config : dict
        Architecture (``in_channels``, ``n_classes``, ``widths``, ``convs``), ``classes``,
        ``normalization`` (``mean``, ``std`` of the training images' gray values: the
        network sees ``(value - mean) / std``) and the ``training`` record.
    weights : dict of str to ndarray
        The network's ``state_dict`` as NumPy arrays.

    Examples
    --------
    >>> model = bv.segment.train(images, labels)                   # doctest: +SKIP
    >>> model.save("segnet.safetensors")                           # doctest: +SKIP
    >>> model = bv.segment.Model.load("segnet.safetensors")        # doctest: +SKIP
    >>> model.k, model.classes                                     # doctest: +SKIP
    (1, ['pore', 'solid electrolyte', 'active material'])
    """

    #: the ``format`` of the file's JSON header
    format = FORMAT

    def __init__(self, config: dict, weights: dict[str, np.ndarray], *, path=None):
        self.config = json.loads(json.dumps(config))  # a private, JSON-clean copy
        self.weights = {k: np.ascontiguousarray(v) for k, v in weights.items()}
        self.path = None if path is None else Path(path)
        self._digest: str | None = None
        self._modules: dict = {}

    # -- description ---------------------------------------------------------------------
    @property
    def k(self) -> int:
        """Number of adjacent slices the network takes as input channels (odd)."""
        return int(self.config["in_channels"])

    @property
    def n_classes(self) -> int:
        return int(self.config["n_classes"])

    @property
    def classes(self) -> list[str]:
        return list(self.config.get("classes", DEFAULT_PHASES[: self.n_classes]))

    @property
    def normalization(self) -> dict:
        return dict(self.config["normalization"])

    @property
    def record(self) -> dict:
        """The training record: options, per-epoch loss / validation accuracy, timing."""
        return dict(self.config.get("training", {}))

    @property
    def n_parameters(self) -> int:
        return int(
            sum(
                v.size for k, v in self.weights.items()
                if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
            )
        )

    @property
    def digest(self) -> str:
        """SHA-256 of the architecture and weights: the key of per-process model caches."""
        if self._digest is None:
            h = hashlib.sha256()
            h.update(json.dumps([self._architecture(), self.config["normalization"]],
                                sort_keys=True).encode())
            for name in sorted(self.weights):
                h.update(name.encode())
                h.update(self.weights[name].tobytes())
            self._digest = h.hexdigest()
        return self._digest

    def _architecture(self) -> dict:
        arch = {k: self.config[k] for k in ("in_channels", "n_classes", "widths", "convs")}
        if self.config.get("skips"):
            arch["skips"] = True
        return arch

    def __repr__(self) -> str:
        return (
            f"Model(segnet widths={tuple(self.config['widths'])}"
            + (", skips" if self.config.get("skips") else "")
            + f", k={self.k}, "
            f"classes={self.classes}, params={self.n_parameters:,}"
            + (f", path={str(self.path)!r}" if self.path else "")
            + ")"
        )

    def __getstate__(self):
        # Pickled (e.g. by a Dask scheduler): data only, never the torch modules.
        return {
            "config": self.config, "weights": self.weights, "path": self.path,
            "_digest": self._digest,
        }

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._modules = {}

    # -- torch ---------------------------------------------------------------------------
    def module(self, device="cpu"):
        """The PyTorch network on ``device`` for inference: eval mode, BatchNorm folded into
        the convolutions (:func:`~bigvol.segment.segnet.fuse_batchnorm`), channels_last;
        built once per device."""
        import torch

        from .segnet import build

        key = str(device)
        if key not in self._modules:
            net = build(self.config)
            net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self.weights.items()})
            self._modules[key] = _for_inference(net, device)
        return self._modules[key]

    # -- files ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to one safetensors file (weights + JSON config in its header).

        Returns the path written. The model remembers it, which lets
        :func:`~bigvol.segment.predict` ship only the path to Dask workers.
        """
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = dict(self.config, format=self.format, format_version=FORMAT_VERSION,
                      bigvol_version=__version__)
        tmp = path.with_name(path.name + ".tmp")
        save_file(
            self.weights, str(tmp), metadata={_META_KEY: json.dumps(config), "format": self.format}
        )
        os.replace(tmp, path)
        self.config = config
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Read a model written by :meth:`save`. Never unpickles anything.

        A random-forest file (``format: bigvol-forest``) gives a
        :class:`~bigvol.segment.forest.ForestModel`.

        Raises
        ------
        InputError
            The file is missing, is not a safetensors file, or was not written by bigvol.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise InputError(f"model file {path} does not exist")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                weights = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises several types for a corrupt header
            raise InputError(
                f"{path} is not a bigvol model file (expected a safetensors file written by "
                f"Model.save): {e}"
            ) from None
        if _META_KEY not in meta:
            raise InputError(
                f"{path} is a safetensors file but not a bigvol model (no {_META_KEY!r} "
                "metadata); write models with bigvol.segment.Model.save"
            )
        try:
            config = json.loads(meta[_META_KEY])
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: the model description is not valid JSON: {e}") from None
        forest = config.get("format") == "bigvol-forest"
        needed = ("in_channels", "n_classes", "normalization") + (
            ("features",) if forest else ("widths", "convs"))
        missing = [k for k in needed if k not in config]
        if config.get("format") not in (FORMAT, "bigvol-forest") or missing:
            raise InputError(f"{path}: not a {FORMAT} or bigvol-forest model "
                             f"(missing {missing or 'format'})")
        if int(config.get("format_version", 0)) > FORMAT_VERSION:
            raise InputError(
                f"{path} was written by a newer bigvol (format {config['format_version']}); "
                f"this one reads format {FORMAT_VERSION}"
            )
        if forest:
            from .forest import ForestModel

            model = ForestModel(config, weights, path=path)
            model.check()
            return model
        model = cls(config, weights, path=path)
        try:  # the weights must fit the architecture they claim
            import torch

            from .segnet import build

            net = build(config)
            net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise InputError(f"{path}: the weights do not match the architecture: {e}") from None
        model._modules["cpu"] = _for_inference(net, "cpu")
        return model


def _for_inference(net, device):
    """Eval mode, BatchNorm folded into the convolutions, channels_last, on ``device``.

    channels_last lets oneDNN (CPU) and cuDNN (GPU) pick their NHWC convolutions; folding
    the BatchNorm removes one pass over every feature map (benchmarks/bench_infer.py).
    """
    import torch

    from .segnet import fuse_batchnorm

    net = fuse_batchnorm(net.eval())
    return net.to(device).to(memory_format=torch.channels_last)
