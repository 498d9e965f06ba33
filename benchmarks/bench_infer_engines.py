"""CPU forward-pass engines for the slim SegNet: what each candidate of issue 16 buys.

Issue 16 asks to measure ONNX Runtime, OpenVINO, channels_last, bf16 / int8 and
``torch.compile`` for CPU inference, and to keep the fastest that installs from the package
registry, with the same predictions. ``bench_infer.py`` times ``predict`` end to end; this
script isolates the network: the same batch of tiles (the CPU default of ``predict``: 2
tiles of 384 x 384 px, ``k`` = 5 slices) through each engine, on the same threads, in one
process. Engines:

- ``torch-baseline``: the network as ``predict`` ran it before issue 16 (BatchNorm not
  folded, NCHW);
- ``torch``: bigvol's inference module (:meth:`Model.module`: BatchNorm folded,
  channels_last), the reference of the identity column;
- ``torch-bf16``: the same under bfloat16 autocast (``predict(amp=True)``);
- ``torch-compile``: ``torch.compile`` (inductor) of it; the compilation time is printed;
- ``torch-int8``: post-training static quantization (``torch.ao`` FX, ``x86`` backend) of
  every conv block, calibrated on tiles of the training volume; pooling and unpooling stay
  in float;
- ``onnxruntime``: ``torch.onnx.export`` (dynamo) then an ORT CPU session (skipped when
  ``onnxruntime`` / ``onnxscript`` are not installed);
- ``openvino``: ``openvino.convert_model`` of the ``torch.export`` program, float32
  precision hint (skipped when ``openvino`` is not installed).

The model: ``--model PATH`` (a saved bigvol model), else the model of ``bench_infer.py``
(slim, k = 5, no skips, 200 steps on the 64 x 512 x 512 phantom, seed 0). Tiles: the
held-out phantom of ``bench_infer.py`` (seed 7), ``--slices`` slices of 1152 x 1152 px, 9
tiles per slice. Prints per engine the best of ``--repeat`` timed batches (after one
warm-up), MPx/s, the ratio to ``torch-baseline``, and over all tiles the fraction of pixels
whose class (argmax) equals ``torch``'s. Usage::

    pip install onnxruntime onnxscript openvino    # optional engines
    python benchmarks/bench_infer_engines.py [--model m.safetensors] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

TILE = 384


def trained_model(steps: int):
    """The model of bench_infer.py (slim, k = 5, no skips, cross-entropy)."""
    import bigvol as bv

    img, truth = bv.synth.phantom((64, 512, 512), seed=0)
    norm = np.asarray(bv.normalize.match_histograms(img))
    slices = [8, 24, 40, 56]
    model = bv.segment.train(norm, np.asarray(truth)[slices], slices=slices, k=5,
                             epochs=max(1, steps // 50), steps_per_epoch=min(50, steps),
                             progress=False, skips=False, loss="ce", class_weights="sqrt")
    return model, norm


def tiles_of(vol: np.ndarray, model, zs) -> np.ndarray:
    """Tiles (n, k, TILE, TILE), normalized as predict does, around slices ``zs``."""
    norm = model.normalization
    d = (model.k - 1) // 2
    out = []
    for z in zs:
        idx = np.clip(np.arange(z - d, z + d + 1), 0, vol.shape[0] - 1)
        for y in range(0, vol.shape[1] - TILE + 1, TILE):
            for x in range(0, vol.shape[2] - TILE + 1, TILE):
                out.append(vol[idx, y:y + TILE, x:x + TILE])
    t = np.stack(out).astype(np.float32)
    return (t - float(norm["mean"])) / float(norm["std"])


class _Traceable:
    """The SegNet's forward without ``output_size`` in the unpooling (exporters trace a
    tensor comparison there); equal for tiles whose sides are multiples of 2^levels."""

    def __new__(cls, net):
        import torch
        import torch.nn.functional as F

        class Fwd(torch.nn.Module):
            def __init__(self, n):
                super().__init__()
                self.n = n

            def forward(self, x):
                idx = []
                for enc in self.n.encoders:
                    x, i = F.max_pool2d(enc(x), 2, 2, return_indices=True)
                    idx.append(i)
                for dec, i in zip(self.n.decoders, reversed(idx)):
                    x = dec(F.max_unpool2d(x, i, 2, 2))
                return self.n.classifier(x)

        return Fwd(net).eval()


def engines(model, calib: np.ndarray, batch: np.ndarray, threads: int) -> dict:
    """name -> (forward callable on a float32 numpy batch returning logits, setup seconds)."""
    import torch

    from bigvol.segment.segnet import build

    cl = torch.channels_last
    out = {}
    base = build(model.config)
    base.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.weights.items()})
    base.eval()
    out["torch-baseline"] = (lambda x: base(torch.from_numpy(x)), 0.0)
    net = model.module("cpu")
    out["torch"] = (lambda x: net(torch.from_numpy(x).contiguous(memory_format=cl)), 0.0)

    def bf16(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(torch.from_numpy(x).contiguous(memory_format=cl)).float()

    out["torch-bf16"] = (bf16, 0.0)

    t = time.perf_counter()
    comp = torch.compile(net)
    with torch.inference_mode():
        comp(torch.from_numpy(batch).contiguous(memory_format=cl))
    out["torch-compile"] = (lambda x: comp(torch.from_numpy(x).contiguous(memory_format=cl)),
                            time.perf_counter() - t)

    t = time.perf_counter()
    out["torch-int8"] = (_int8(net, calib), time.perf_counter() - t)

    example = torch.from_numpy(batch)
    try:
        import onnxruntime as ort

        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"segnet_{os.getpid()}.onnx")
        t = time.perf_counter()
        torch.onnx.export(_Traceable(net), (example,), path, dynamo=True,
                          dynamic_shapes=None)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        out["onnxruntime"] = (lambda x: sess.run(None, {name: x})[0], time.perf_counter() - t)
    except ImportError as e:
        print(f"# onnxruntime skipped: {e}")
    try:
        import openvino as ov

        t = time.perf_counter()
        om = ov.convert_model(torch.export.export(_Traceable(net), (example,)))
        cm = ov.Core().compile_model(om, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                 "INFERENCE_NUM_THREADS": threads})
        req = cm.create_infer_request()
        out["openvino"] = (lambda x: req.infer({0: x})[0], time.perf_counter() - t)
    except ImportError as e:
        print(f"# openvino skipped: {e}")
    return out


def _int8(net, calib: np.ndarray):
    """Static int8 quantization of each conv block (torch.ao FX, x86 backend), calibrated on
    ``calib``; pooling, unpooling and the classifier stay float32."""
    import copy

    import torch
    import torch.nn.functional as F
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    qmap = get_default_qconfig_mapping("x86")
    net = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        x = torch.from_numpy(calib)
        enc_in, idx = [], []
        for enc in net.encoders:
            enc_in.append(x)
            x, i = F.max_pool2d(enc(x), 2, 2, return_indices=True)
            idx.append(i)
        dec_in = []
        for dec, i in zip(net.decoders, reversed(idx)):
            x = F.max_unpool2d(x, i, 2, 2)
            dec_in.append(x)
            x = dec(x)

    def quantize(seq, ex):
        p = prepare_fx(seq, qmap, (ex[:1],))
        with torch.no_grad():
            for j in range(0, ex.shape[0], 2):
                p(ex[j:j + 2])
        return convert_fx(p)

    qenc = [quantize(e, ex) for e, ex in zip(net.encoders, enc_in)]
    qdec = [quantize(d, ex) for d, ex in zip(net.decoders, dec_in)]

    def forward(xn):
        x = torch.from_numpy(xn)
        idx = []
        for e in qenc:
            x, i = F.max_pool2d(e(x), 2, 2, return_indices=True)
            idx.append(i)
        for d, i in zip(qdec, reversed(idx)):
            x = d(F.max_unpool2d(x, i, 2, 2))
        return net.classifier(x)

    return forward


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a saved bigvol model; when the file does not exist, "
                    "bench_infer's model is trained and saved there")
    ap.add_argument("--steps", type=int, default=200, help="training steps without --model")
    ap.add_argument("--slices", type=int, default=3, help="held-out slices to cut tiles from")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    import torch

    import bigvol as bv

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    if args.model and os.path.exists(args.model):
        model = bv.segment.Model.load(args.model)
        train_vol, _ = bv.synth.phantom((64, 512, 512), seed=0)
        train_vol = np.asarray(bv.normalize.match_histograms(train_vol))
    else:
        model, train_vol = trained_model(args.steps)
        if args.model:
            model.save(args.model)
    print(f"# model ready in {time.perf_counter() - t:.0f} s; {args.threads} threads; load "
          f"average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    calib = tiles_of(train_vol, model, range(2, train_vol.shape[0] - 2, 6))[:8]
    img, _ = bv.synth.phantom((args.slices + 4, 3 * TILE, 3 * TILE), seed=7)
    held = tiles_of(np.asarray(bv.normalize.match_histograms(img)), model,
                    range(2, 2 + args.slices))
    held = held[: len(held) // 2 * 2]  # whole batches (the exported graphs have fixed shapes)
    batch = np.ascontiguousarray(held[:2])
    px = batch.shape[0] * TILE * TILE

    rows = []
    ref_classes = None
    with torch.inference_mode():
        for name, (fwd, setup) in engines(model, calib, batch, args.threads).items():
            np.asarray(fwd(batch))  # warm-up
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                fwd(batch)
                times.append(time.perf_counter() - t)
            classes = np.concatenate([np.asarray(fwd(np.ascontiguousarray(held[j:j + 2])))
                                      .argmax(1) for j in range(0, len(held), 2)])
            if name == "torch":
                ref_classes = classes
            rows.append((name, min(times), setup, classes))
    t_base = rows[0][1]
    print(f"\n{'engine':15s} {'ms/batch':>9s} {'MPx/s':>7s} {'x baseline':>10s} "
          f"{'identical':>10s} {'setup s':>8s}")
    for name, dt, setup, classes in rows:
        same = (classes == ref_classes).mean()
        print(f"{name:15s} {dt * 1e3:9.1f} {px / dt / 1e6:7.2f} {t_base / dt:10.2f} "
              f"{same:10.5f} {setup:8.1f}")
    print(f"\n(batch: 2 tiles of {TILE} px, k = {model.k}; identity over {len(held)} held-out "
          f"tiles against 'torch')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
