"""``bigvol bench``: per-stage figures from a real run, projections, the peers, JSON."""

import json
import math

import pytest

from bigvol import cli
from bigvol.bench import bench, format_table, project
from bigvol.errors import ConfigError


def _result(stages, voxels=1_000_000):
    return {"shape": [100, 100, 100], "voxels": voxels, "chunks": [32, 64, 64],
            "scheduler": "threads", "machine": {"cores": 2, "memory_gib": 24, "processor": "x"},
            "stages": [{"stage": n, "seconds": s, "cpu_seconds": 2 * s, "peak_rss_bytes": 2**30,
                        "mvx_s": voxels / s / 1e6, "cpu_s_per_mvx": 2 * s, "scales": n != "train"}
                       for n, s in stages],
            "total_seconds": sum(s for _, s in stages)}


def test_projection_scales_the_chunked_stages_and_keeps_training():
    r = _result([("normalize", 2.0), ("train", 100.0), ("segment", 10.0), ("analyze", 8.0)])
    p = project(r, (200, 100, 100), workers=(1, 4))
    assert p["factor"] == 2.0
    assert p["stages"] == {"normalize": 4.0, "train": 100.0, "segment": 20.0, "analyze": 16.0}
    assert p["workers"] == {1: 140.0, 4: 100.0 + 40.0 / 4}
    text = format_table(r, p)
    assert "train" in text and "fixed" in text and "4 workers like this machine" in text
    with pytest.raises(ConfigError, match="3 positive integers"):
        project(r, (0, 10, 10))


def test_bench_measures_every_stage_of_a_real_run(tmp_path):
    res = bench(None, shape=(8, 64, 96), out=tmp_path / "b",
                overrides={"segment": {"method": "threshold"}})
    names = [r["stage"] for r in res["stages"]]
    for st in ("synth", "normalize", "threshold", "analyze"):
        assert st in names, names
    assert res["voxels"] == 8 * 64 * 96 and res["chunks"] == [32, 256, 256]
    for r in res["stages"]:
        assert r["seconds"] > 0 and r["peak_rss_bytes"] > 2**20
        assert r["cpu_seconds"] >= 0
        assert math.isclose(r["mvx_s"], res["voxels"] / r["seconds"] / 1e6)
    assert (tmp_path / "b" / "bench.zarr").exists()  # --out keeps the run
    # the same figures in the report's provenance table
    from bigvol.conventions import output_paths

    page = output_paths(tmp_path / "b" / "bench.zarr")["report"].read_text(encoding="utf-8")
    seg = next(r for r in res["stages"] if r["stage"] == "threshold")
    assert f"{seg['seconds']:.1f} s, {seg['mvx_s']:.1f} MVx/s" in page
    assert "CPU-s" in page and "GiB peak RSS" in page


def test_cli_bench_prints_a_projection_writes_json_and_compares_with_the_peers(tmp_path, capsys):
    pytest.importorskip("porespy")
    out = tmp_path / "bench.json"
    rc = cli.main(["bench", "--shape", "8", "48", "64", "--project", "80", "480", "640",
                   "--workers", "1", "2", "--compare", "--json", str(out), "--quiet",
                   "--set", "segment.method=threshold"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "projected for (80, 480, 640)" in text and "2 workers like this machine" in text
    doc = json.loads(out.read_text())
    assert doc["projection"]["factor"] == pytest.approx(1000.0)
    assert set(doc["projection"]["workers"]) == {"1", "2"}
    peers = {c["what"]: c for c in doc["compare"]}
    assert len(peers) == 3
    assert all(c["equal"] for c in peers.values()), peers  # same answers as the peers


def test_cli_bench_refuses_a_bad_shape(capsys):
    rc = cli.main(["bench", "--shape", "0", "10", "10", "--quiet"])
    assert rc == 2
    assert "shape must be 3 positive integers" in capsys.readouterr().err


def test_bench_on_the_users_own_stack(tmp_path):
    # a TIFF stack of the user's (here: a phantom written as TIFF) and their config
    import numpy as np
    import tifffile

    import bigvol.synth as synth

    img, _ = synth.phantom((6, 48, 64), seed=2)
    tifffile.imwrite(tmp_path / "stack.tif", np.asarray(img))
    cfg = {"run": str(tmp_path / "mine.zarr"),
           "input": {"source": str(tmp_path / "stack.tif"), "voxel_size": [50, 30, 30]},
           "segment": {"method": "threshold"}, "analyze": {"tortuosity": {"enabled": False}}}
    res = bench(cfg, own_input=True, out=tmp_path / "b")
    assert res["shape"] == [6, 48, 64] and res["input"] == str(tmp_path / "stack.tif")
    assert "ingest" in [r["stage"] for r in res["stages"]]
    assert not (tmp_path / "mine.zarr").exists()  # the user's run is never touched
    with pytest.raises(ConfigError, match="own-input needs a config"):
        bench(None, own_input=True)
