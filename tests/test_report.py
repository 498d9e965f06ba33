"""The HTML report: every figure present and rendered, metrics shown, only slices read."""

from __future__ import annotations

import base64
import html.parser
import io
import json
import os
import shutil
import socket
import subprocess
import sys

import edt
import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore, WrapperStore

import bigvol
from bigvol import evaluate as ev
from bigvol.compare import flatten_metrics
from bigvol.errors import BigvolError, InputError
from bigvol.report import write_report
from bigvol.store import Run

SHAPE = (20, 48, 64)
CHUNKS = (7, 20, 25)  # uneven on purpose
VS = (50.0, 30.0, 30.0)
PHASES = ["pore", "solid electrolyte", "active material"]


# -- a small run store like the pipeline writes --------------------------------------------
def _phantom(seed=0):
    """Active-material spheres in an electrolyte matrix, with pores; (truth, raw, normalized)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    truth = np.ones(SHAPE, np.uint8)
    for _ in range(14):
        c = rng.uniform((0, 0, 0), SHAPE)
        r = rng.uniform(4, 9)
        truth[((z - c[0]) * 50 / 30) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r * r] = 2
    for _ in range(10):
        c = rng.uniform((0, 0, 0), SHAPE)
        r = rng.uniform(2, 5)
        truth[((z - c[0]) * 50 / 30) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r * r] = 0
    levels = np.array([40.0, 110.0, 190.0])
    clean = levels[truth] + rng.normal(0, 12, SHAPE)
    drift = np.linspace(-25, 25, SHAPE[0])[:, None, None]  # brightness drift over the stack
    raw = np.clip(clean + drift, 0, 255).astype(np.uint8)
    normalized = np.clip(clean, 0, 255).astype(np.uint8)
    return truth, raw, normalized


def _classify(img):
    return np.digitize(img, [75, 150]).astype(np.uint8)


def make_run(tmp_path, *, name="cellA", arrays=("raw", "normalized", "segmentation", "truth",
                                                "threshold", "thickness")):
    truth, raw, normalized = _phantom()
    seg = _classify(normalized)
    thr = _classify(raw)
    run = Run.create(tmp_path / f"{name}.zarr", voxel_size=VS)
    for key, a in (("raw", raw), ("normalized", normalized), ("segmentation", seg),
                   ("truth", truth), ("threshold", thr)):
        if key in arrays:
            run.write(key, a, chunks=CHUNKS)
    se = seg == 1
    thick = (2.0 * edt.edt(se, anisotropy=VS)).astype(np.float32)  # a diameter-like map, nm
    if "thickness" in arrays:
        run.write("thickness/solid electrolyte", thick, chunks=CHUNKS)
    run.record_stage("segment", parameters={"method": "threshold", "classes": 3},
                     fingerprint="0123456789abcdef", outputs=["segmentation"])

    vals = thick[se]
    edges = np.linspace(0, vals.max(), 11)
    hist = np.histogram(vals, edges)[0] / vals.size
    evaluation = {}
    for method, pred in (("segnet", seg), ("threshold", thr)):
        r = ev.evaluate(truth, pred)
        evaluation[method] = {
            "accuracy": float(r["accuracy"]), "recall": r["recall"].tolist(),
            "iou": r["iou"].tolist(), "confusion_normalized": r["confusion_normalized"].tolist(),
            "accuracy_per_slice": r["accuracy_per_slice"].tolist(),
        }
    metrics = {
        "run": str(run.path),
        "shape": list(SHAPE),
        "voxel_size_nm": list(VS),
        "phases": PHASES,
        "volume_fractions": {p: float((seg == i).mean()) for i, p in enumerate(PHASES)},
        "isolated_fraction": {"active material": 0.074, "pore": 0.4125},
        "percolation": {"phase": [0, 0, 2, 2], "axis": [0, 1, 0, 1],
                        "connected_fraction": [0.25, 0.5, 0.9, 0.926],
                        "isolated_fraction": [0.75, 0.5, 0.1, 0.074],
                        "n_components": [12, 12, 5, 5]},
        "thickness": {"solid electrolyte": {
            "mean_nm": float(vals.mean()), "median_nm": float(np.median(vals)),
            "p10_nm": float(np.percentile(vals, 10)), "p90_nm": float(np.percentile(vals, 90)),
            "hist_edges_nm": edges.tolist(), "hist_volume_fraction": hist.tolist()}},
        "tortuosity": {"solid electrolyte": {"tau": 1.834, "eff_ratio": 0.2917}},
        "interfaces": {"solid electrolyte/active material_um-1": 1.2345,
                       "tpb_length_per_volume_um-2": 3.5, "volume_um3": 1.44},
        "evaluation": evaluation,
        "normalization": {
            "method": "histogram", "reference": SHAPE[0] // 2,
            "mean_before": raw.mean(axis=(1, 2)).tolist(),
            "mean_after": normalized.mean(axis=(1, 2)).tolist(),
            "p1_before": np.percentile(raw, 1, axis=(1, 2)).tolist(),
            "p99_before": np.percentile(raw, 99, axis=(1, 2)).tolist(),
            "p1_after": np.percentile(normalized, 1, axis=(1, 2)).tolist(),
            "p99_after": np.percentile(normalized, 99, axis=(1, 2)).tolist()},
        "timings_s": {"segment": 12.5, "analyze": 3.25},
    }
    return run, metrics


# -- parsing the page ----------------------------------------------------------------------
class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.figures, self.rows, self.links = [], [], {}, []
        self._fig = None
        self._row = None
        self._cell = None
        self.text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self._fig = a.get("id")
            self.figures.append(self._fig)
        elif tag == "img":
            self.imgs.append((self._fig, a.get("src", "")))
        elif tag == "tr" and "data-key" in a:
            self._row = a["data-key"]
            self.rows[self._row] = []
        elif tag in ("td",) and self._row is not None:
            self._cell = []
        for k in ("href", "src"):
            if k in a and not a[k].startswith("data:"):
                self.links.append(a[k])
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.links.append(tag)

    def handle_endtag(self, tag):
        if tag == "figure":
            self._fig = None
        elif tag == "td" and self._cell is not None:
            self.rows[self._row].append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(path):
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def decode_png(src):
    import matplotlib.image as mpimg

    assert src.startswith("data:image/png;base64,")
    return mpimg.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")


FULL_FIGURES = {
    "fig-ortho-raw", "fig-ortho-normalized", "fig-ortho-segmentation", "fig-ortho-threshold",
    "fig-ortho-truth", "fig-brightness", "fig-histograms", "fig-accuracy-per-slice",
    "fig-confusion", "fig-3d-phases", "fig-thickness-solid-electrolyte",
    "fig-thickness-hist-solid-electrolyte", "fig-thickness-3d-solid-electrolyte",
}


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    run, metrics = make_run(tmp)
    mpath = tmp / "cellA.metrics.json"
    mpath.write_text(json.dumps(metrics))
    before = {p.name: p.stat().st_mtime_ns for p in (tmp / "cellA.zarr").rglob("*")}
    out = write_report(tmp / "cellA.zarr")  # default paths: metrics and html beside the store
    after = {p.name: p.stat().st_mtime_ns for p in (tmp / "cellA.zarr").rglob("*")}
    return out, metrics, before == after


def test_every_figure_present_and_not_blank(full_report):
    out, _, _ = full_report
    assert out.name == "cellA.report.html"
    page = parse(out)
    assert set(page.figures) == FULL_FIGURES
    assert len(page.imgs) == len(FULL_FIGURES)
    for fid, src in page.imgs:
        img = decode_png(src)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, fid
        # not blank: many distinct colours, not one flat fill
        rgb = (img[..., :3] * 255).astype(np.uint32)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        assert rgb.std() > 10, fid
        assert len(np.unique(packed)) > 20, fid


def test_self_contained_and_store_untouched(full_report):
    out, _, untouched = full_report
    page = parse(out)
    assert page.links == []  # no external resource, no script
    assert untouched  # the report opens the store read-only


def test_metrics_table_shows_every_value(full_report):
    out, metrics, _ = full_report
    page = parse(out)
    flat = flatten_metrics(metrics)
    assert set(flat) <= set(page.rows)
    for k, v in flat.items():
        shown, _unit = page.rows[k][0], page.rows[k][1]
        assert float(shown) == pytest.approx(v, rel=1e-3, abs=1e-12), k
    assert page.rows["isolated_fraction_active_material"] == ["0.074", "fraction (0-1)"]
    assert page.rows["thickness_solid_electrolyte_mean_nm"][1] == "nm"
    assert page.rows["interfaces_solid_electrolyte_active_material_um-1"] == ["1.234", "µm⁻¹"]
    assert page.rows["timings_segment_s"] == ["12.5", "s"]
    assert page.rows["interfaces_tpb_length_per_volume_um-2"] == ["3.5", "µm⁻²"]
    assert page.rows["interfaces_volume_um3"] == ["1.44", "µm³"]
    assert page.rows["volume_fraction_pore"][1] == "fraction (0-1)"


def test_header_and_confusion_tables(full_report):
    out, metrics, _ = full_report
    text = out.read_text(encoding="utf-8")
    assert str((out.parent / "cellA.zarr").resolve()) in text
    assert "20 × 48 × 64" in text
    assert "50 × 30 × 30 nm (z, y, x)" in text
    assert f"bigvol {bigvol.__version__}" in text
    assert "0123456789abcdef" in text  # the stage provenance record
    for method in ("segnet", "threshold"):
        assert f'data-method="{method}"' in text
        cm = np.asarray(metrics["evaluation"][method]["confusion_normalized"])
        for v in np.diag(cm):
            assert f"<td class=diag>{float(v):.4g}</td>" in text


def test_missing_arrays_are_reported(tmp_path):
    run, metrics = make_run(tmp_path, arrays=("raw", "segmentation"))
    del metrics["evaluation"], metrics["normalization"], metrics["thickness"]
    out = write_report(run.path, metrics, tmp_path / "sub" / "r.html")
    page = parse(out)
    assert set(page.figures) == {"fig-ortho-raw", "fig-ortho-segmentation", "fig-3d-phases"}
    text = out.read_text(encoding="utf-8")
    for name in ("normalized", "truth", "threshold", "thickness/solid electrolyte"):
        assert f"<b>{name}</b> (absent)" in text
    assert "No evaluation against ground truth" in text


def test_incomplete_array_is_not_shown(tmp_path):
    run, metrics = make_run(tmp_path, arrays=("raw", "segmentation"))
    run = Run.open(run.path, mode="r+")
    run.create_array("normalized", shape=SHAPE, dtype="u1", chunks=CHUNKS)  # never completed
    out = write_report(run.path, {}, tmp_path / "r.html")
    assert "fig-ortho-normalized" not in parse(out).figures
    assert "<b>normalized</b> (incomplete" in out.read_text(encoding="utf-8")


def test_pipeline_schema_variants(tmp_path):
    """The metrics module's spellings: nested before/after statistics, histogram_edges_nm."""
    run, metrics = make_run(tmp_path, arrays=("thickness",))
    norm = metrics["normalization"]
    metrics["normalization"] = {
        "method": "histogram", "reference": None,
        "before": {"mean": norm["mean_before"], "p1": norm["p1_before"], "p99": norm["p99_before"]},
        "after": {"mean": norm["mean_after"], "p1": norm["p1_after"], "p99": norm["p99_after"]},
    }
    # the real outputs of the metrics modules, as the pipeline stores them
    from bigvol.metrics import percolation, thickness_summary
    from bigvol.record import jsonable

    seg = _classify(_phantom()[2])
    metrics["percolation"] = jsonable(percolation(seg))
    metrics["thickness"] = {"solid electrolyte": jsonable(thickness_summary(
        run.read("thickness/solid electrolyte"), voxel_size=VS))}
    assert "histogram_edges_nm" in metrics["thickness"]["solid electrolyte"]
    out = write_report(run.path, metrics, tmp_path / "r.html")
    page = parse(out)
    assert set(page.figures) == {
        "fig-brightness", "fig-accuracy-per-slice", "fig-confusion",
        "fig-thickness-solid-electrolyte", "fig-thickness-hist-solid-electrolyte"}
    flat = flatten_metrics(metrics)
    assert set(flat) <= set(page.rows)
    assert flat["thickness_solid_electrolyte_median_nm"] > 0
    assert page.rows["thickness_solid_electrolyte_volume_um3"][1] == "µm³"
    assert flat["percolation_active_material_y_connected_fraction"] == pytest.approx(
        metrics["percolation"]["connected_fraction"][
            [i for i, (p, a) in enumerate(zip(metrics["percolation"]["phase"],
                                              metrics["percolation"]["axis"]))
             if (p, a) == (2, 1)][0]])
    sd = float(np.std(norm["mean_before"]))
    assert flat["normalization_slice_mean_sd_before_gray"] == pytest.approx(sd)


class _CountingStore(WrapperStore):
    """A real local store that records the keys read through it."""

    def __init__(self, store, log):
        super().__init__(store)
        self.log = log

    def _with_store(self, store):
        return type(self)(store, self.log)

    async def get(self, key, prototype, byte_range=None):
        self.log.append(key)
        return await super().get(key, prototype, byte_range)


@pytest.mark.slow
def test_reads_only_the_drawn_slices(tmp_path):
    run, metrics = make_run(tmp_path)
    log: list[str] = []
    store = _CountingStore(LocalStore(str(run.path), read_only=True), log)
    counted = Run(zarr.open_group(store, mode="r"), run.path)
    write_report(counted, metrics, tmp_path / "r.html", mesh_size=8, hist_slices=1)
    nz, ny, nx = (-(-s // c) for s, c in zip(SHAPE, CHUNKS))
    total = nz * ny * nx
    for name in ("raw", "normalized", "segmentation", "truth", "threshold"):
        read = {k for k in log if k.startswith(f"{name}/c/")}
        assert read, name
        # the 3 planes through the centre touch at most ny*nx + nz*nx + nz*ny - overlaps;
        # the 3D crop of the segmentation (16^3 voxels at the centre) a few more
        assert len(read) < total, (name, len(read), total)
    raw_chunks = {k for k in log if k.startswith("raw/c/")}
    # xy plane: 1 z-chunk row (ny*nx chunks), xz: nz*nx, yz: nz*ny; 1 histogram slice
    assert len(raw_chunks) <= ny * nx + nz * nx + nz * ny + ny * nx


def test_bad_input(tmp_path):
    run, metrics = make_run(tmp_path, arrays=("segmentation",))
    with pytest.raises(InputError, match="no metrics file .*nope.json"):
        write_report(run.path, tmp_path / "nope.json", tmp_path / "r.html")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        write_report(run.path, bad, tmp_path / "r.html")
    with pytest.raises(BigvolError, match="no run store"):
        write_report(tmp_path / "missing.zarr", {}, tmp_path / "r.html")
    with pytest.raises(InputError, match="mesh_size"):
        write_report(run.path, {}, tmp_path / "r.html", mesh_size=0)


def test_unwritable_output(tmp_path):
    run, _ = make_run(tmp_path, arrays=("raw",))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(InputError, match="cannot write the report .*not-a-folder"):
        write_report(run.path, {}, blocker / "r.html")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # (root ignores permissions)
            with pytest.raises(InputError, match="cannot write the report"):
                write_report(run.path, {}, ro / "r.html")
    finally:
        ro.chmod(0o700)


def test_cli_report(tmp_path, capsys):
    from bigvol.cli import main

    run, metrics = make_run(tmp_path, arrays=("raw", "segmentation"))
    (tmp_path / "cellA.metrics.json").write_text(json.dumps(metrics))
    assert main(["report", str(run.path)]) == 0
    out = tmp_path / "cellA.report.html"
    assert str(out) in capsys.readouterr().out
    assert "fig-3d-phases" in parse(out).figures
    assert main(["report", str(run.path), "--metrics", str(tmp_path / "x.json")]) == 2
    assert "no metrics file" in capsys.readouterr().err


# -- a real browser ------------------------------------------------------------------------
def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("Chromium is not installed and cannot be installed here (needs root "
                    "and apt-get)")
    try:
        socket.create_connection(("deb.debian.org", 80), timeout=5).close()
    except OSError as e:
        pytest.skip(f"Chromium is not installed and deb.debian.org is unreachable ({e})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:
            pytest.skip(f"could not install Chromium ({' '.join(cmd)}): {r.stderr[-300:]}")
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("apt-get installed chromium but no chromium executable was found")
    return exe


def _run_chromium(exe, tmp_path, *args):
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_every_image_renders_in_chromium(full_report, tmp_path):
    exe = _chromium()
    out, _, _ = full_report
    # A copy with a probe script that writes each image's decoded size into the DOM (the
    # report itself has no script).
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load',()=>{const d=document.createElement('pre');"
              "d.id='probe';d.textContent=JSON.stringify([...document.images].map("
              "i=>[i.closest('figure').id,i.complete,i.naturalWidth,i.naturalHeight,"
              "i.getBoundingClientRect().width]));document.body.appendChild(d);});</script>")
    probe.write_text(out.read_text(encoding="utf-8").replace("</body>", script + "</body>"),
                     encoding="utf-8")
    r = _run_chromium(exe, tmp_path, "--dump-dom", probe.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    start = r.stdout.index('<pre id="probe">') + len('<pre id="probe">')
    import html as _html

    rendered = json.loads(_html.unescape(r.stdout[start: r.stdout.index("</pre>", start)]))
    assert {fid for fid, *_ in rendered} == FULL_FIGURES
    for fid, complete, w, h, shown_w in rendered:
        assert complete and w > 100 and h > 100 and shown_w > 100, (fid, w, h, shown_w)

    # and the page itself, screenshotted, is not blank
    shot = tmp_path / "shot.png"
    r = _run_chromium(exe, tmp_path, f"--screenshot={shot}", "--window-size=1200,2400",
                      out.as_uri())
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    img = decode_png("data:image/png;base64," + base64.b64encode(shot.read_bytes()).decode())
    assert img[..., :3].std() > 0.05


@pytest.mark.slow
@pytest.mark.parametrize("chunks", [(4, 5, 6), (1, 1, 1), (11, 17, 23), (3, 17, 1)])
def test_chunkwise_read_equals_numpy_slicing(chunks):
    from bigvol.store import read_region as _read

    a = np.random.default_rng(1).integers(0, 255, (11, 17, 23)).astype(np.uint8)
    z = zarr.create_array(zarr.storage.MemoryStore(), shape=a.shape, chunks=chunks, dtype="u1")
    z[:] = a
    regions = [(5, slice(None), slice(None)), (slice(None), 16, slice(None)),
               (slice(None), slice(None), 0), (slice(2, 11, 3), slice(1, 17, 4), slice(0, 23, 5)),
               (slice(3, 4), slice(None, None, 2), -1), (slice(5, 5), 0, 0),
               (-1, slice(3, 17, 7), slice(22, 23))]
    regions += [(slice(a0, None, st), slice(a0, 17, st), slice(1, None, st))
                for st in (1, 2, 5) for a0 in (0, 3, 10)]
    for r in regions:
        np.testing.assert_array_equal(_read(z, r), a[r], err_msg=str(r))
