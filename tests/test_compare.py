"""Cell comparison (the paper's Table 2) and the flat metrics row."""

from __future__ import annotations

import base64
import csv
import io
import json
import math

import numpy as np
import pytest

from bigvol.cli import main
from bigvol.compare import (
    compare,
    flatten_metrics,
    pearson,
    pearson_p_value,
    run_name,
    write_metrics_csv,
)
from bigvol.errors import InputError

# The paper's Table 2: isolated active material and discharge capacities of cells A, B, C.
ISOLATED = {"A": 0.074, "B": 0.0005, "C": 0.002}  # 7.4 %, 0.05 %, 0.2 %
CAP_005C = {"A": 130.0, "B": 190.0, "C": 160.0}
CAP_5C = {"A": 2.0, "B": 26.0, "C": 85.0}
SE_MEAN_NM = {"A": 180.0, "B": 260.0, "C": 310.0}
PORE = {"A": 0.12, "B": 0.08, "C": 0.05}


def _metrics(cell):
    am = 0.55
    return {
        "run": f"/data/{cell}.zarr",
        "shape": [100, 300, 300],
        "voxel_size_nm": [50, 30, 30],
        "phases": ["pore", "solid electrolyte", "active material"],
        "volume_fractions": {"pore": PORE[cell], "solid electrolyte": 1 - am - PORE[cell],
                             "active material": am},
        "isolated_fraction": {"active material": ISOLATED[cell]},
        "percolation": {"phase": [2, 2], "axis": [1, 2],
                        "connected_fraction": [1 - ISOLATED[cell], 0.99],
                        "n_components": [40, 41]},
        "thickness": {"solid electrolyte": {"mean_nm": SE_MEAN_NM[cell],
                                            "hist_edges_nm": [0, 100, 200],
                                            "hist_volume_fraction": [0.5, 0.5]}},
        "tortuosity": {"solid electrolyte": {"tau": 2.0 + 10 * ISOLATED[cell],
                                             "eff_ratio": 0.2}},
        "interfaces": {"solid electrolyte/active material_um-1": 2.0},
        "timings_s": {"segment": 10.0 + len(cell)},
    }


def _write_runs(tmp_path, cells=("A", "B", "C"), as_store=True):
    runs = []
    for c in cells:
        (tmp_path / f"{c}.metrics.json").write_text(json.dumps(_metrics(c)))
        runs.append(tmp_path / (f"{c}.zarr" if as_store else f"{c}.metrics.json"))
    return runs


def _write_props(tmp_path, rows=None, header=("cell", "capacity_0.05C_mAh_g", "capacity_5C_mAh_g")):
    rows = rows if rows is not None else [[c, CAP_005C[c], CAP_5C[c]] for c in ("C", "A", "B")]
    p = tmp_path / "cells.csv"
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return p


def test_flatten_names_and_units():
    flat = flatten_metrics(_metrics("A"))
    assert flat["isolated_fraction_active_material"] == 0.074
    assert flat["volume_fraction_pore"] == 0.12
    assert flat["thickness_solid_electrolyte_mean_nm"] == 180.0
    assert flat["tortuosity_solid_electrolyte_tau"] == pytest.approx(2.74)
    assert flat["interfaces_solid_electrolyte_active_material_um-1"] == 2.0
    assert flat["percolation_active_material_y_connected_fraction"] == pytest.approx(0.926)
    assert flat["percolation_active_material_x_n_components"] == 41.0
    assert flat["shape_z"] == 100.0 and flat["voxel_size_x_nm"] == 30.0
    assert flat["timings_segment_s"] == 11.0
    assert not any("hist" in k for k in flat)  # lists are not columns
    assert all(isinstance(v, float) for v in flat.values())


def test_write_metrics_csv_roundtrip(tmp_path):
    m = _metrics("B")
    p = write_metrics_csv(m, tmp_path / "B.metrics.csv")
    rows = list(csv.DictReader(p.open()))
    assert len(rows) == 1
    assert rows[0]["run"] == "/data/B.zarr"
    flat = flatten_metrics(m)
    assert list(rows[0])[1:] == list(flat)
    for k, v in flat.items():
        assert float(rows[0][k]) == v  # repr() round-trips floats exactly


def test_run_names(tmp_path):
    assert run_name("x/cellA.zarr") == "cellA"
    assert run_name("x/cellA.metrics.json") == "cellA"
    assert run_name("x/cellA.json") == "cellA"
    assert run_name("runs/cellB/metrics.json", {"run": "/d/B2.zarr"}) == "B2"
    assert run_name(tmp_path / "cellC" / "metrics.json") == "cellC"


def test_table2_join_and_correlations(tmp_path):
    runs = _write_runs(tmp_path)
    props = _write_props(tmp_path)  # rows in another order than the runs
    out = tmp_path / "cmp"
    table = compare(runs, props, out=out)
    assert table["run"] == ["A", "B", "C"]
    assert table["isolated_fraction_active_material"] == [0.074, 0.0005, 0.002]
    assert table["capacity_0.05C_mAh_g"] == [130.0, 190.0, 160.0]
    assert table["capacity_5C_mAh_g"] == [2.0, 26.0, 85.0]
    assert table["thickness_solid_electrolyte_mean_nm"] == [180.0, 260.0, 310.0]

    # the joined CSV holds the same numbers
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [r["run"] for r in rows] == ["A", "B", "C"]
    for col in ("isolated_fraction_active_material", "capacity_5C_mAh_g",
                "volume_fraction_pore"):
        assert [float(r[col]) for r in rows] == table[col]

    # correlations equal numpy's corrcoef
    corr = list(csv.DictReader((out / "compare_correlations.csv").open()))
    got = {(r["metric"], r["property"]): float(r["pearson_r"]) for r in corr}
    for m in ("isolated_fraction_active_material", "thickness_solid_electrolyte_mean_nm",
              "volume_fraction_pore", "tortuosity_solid_electrolyte_tau"):
        for p in ("capacity_0.05C_mAh_g", "capacity_5C_mAh_g"):
            ref = np.corrcoef(table[m], table[p])[0, 1]
            assert got[(m, p)] == pytest.approx(ref, abs=1e-12), (m, p)
    # p-values equal scipy's
    from scipy.stats import pearsonr

    for r in corr:
        ref = pearsonr(table[r["metric"]], table[r["property"]])
        assert float(r["p_value"]) == pytest.approx(ref.pvalue, rel=1e-9), r
    # more isolated active material, less capacity at 0.05C (the paper's reading of Table 2)
    assert got[("isolated_fraction_active_material", "capacity_0.05C_mAh_g")] < -0.8
    # constant and non-structure columns are not correlated by default
    metrics_used = {r["metric"] for r in corr}
    assert "interfaces_solid_electrolyte_active_material_um-1" not in metrics_used
    assert not any(m.startswith(("timings_", "shape_")) for m in metrics_used)
    # sorted by |r|
    rs = [abs(float(r["pearson_r"])) for r in corr]
    assert rs == sorted(rs, reverse=True)

    # the figure and the page
    import matplotlib.image as mpimg

    img = mpimg.imread(out / "compare.png")
    assert img.shape[0] > 200 and img[..., :3].std() > 0.05
    page = (out / "compare.html").read_text()
    src = page.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(src) == (out / "compare.png").read_bytes()
    assert "http" not in page


def test_explicit_run_column_and_metrics_json(tmp_path):
    runs = _write_runs(tmp_path, as_store=False)
    props = _write_props(
        tmp_path, header=("cell", "run", "capacity_5C_mAh_g"),
        rows=[["cell A", "A", 2], ["cell B", "B", 26], ["cell C", "C", 85]])
    table = compare(runs, props, metrics=["isolated_fraction_active_material"])
    assert table["cell"] == ["cell A", "cell B", "cell C"]
    r, n = pearson(table["isolated_fraction_active_material"], table["capacity_5C_mAh_g"])
    assert n == 3
    assert r == pytest.approx(np.corrcoef([0.074, 0.0005, 0.002], [2, 26, 85])[0, 1])


def test_pearson_edge_cases():
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3])[0])
    assert math.isnan(pearson_p_value(0.5, 2)) and pearson_p_value(1.0, 3) == 0.0
    assert math.isnan(pearson([1], [2])[0])
    r, n = pearson([1, 2, np.nan, 4], [2, 4, 5, 8.5])
    assert n == 3 and r == pytest.approx(np.corrcoef([1, 2, 4], [2, 4, 8.5])[0, 1])


def test_errors(tmp_path):
    runs = _write_runs(tmp_path)
    # a property row with no run
    p = _write_props(tmp_path, rows=[[c, 1, 2] for c in ("A", "B", "C", "D")])
    with pytest.raises(InputError, match=r"row\(s\) \['D'\] of .*cells.csv"):
        compare(runs, p)
    # a run with no row
    p = _write_props(tmp_path, rows=[[c, 1, 2] for c in ("A", "B")])
    with pytest.raises(InputError, match=r"run\(s\) \['C'\] have no row in .*cells.csv"):
        compare(runs, p)
    # a non-numeric property column
    p = _write_props(tmp_path, rows=[["A", 1, 2], ["B", "high", 3], ["C", 1, 2]])
    with pytest.raises(InputError, match=r"column 'capacity_0.05C_mAh_g' is not numeric "
                                         r"\(line 3 holds 'high'\)"):
        compare(runs, p)
    # no key column
    p = _write_props(tmp_path, header=("name", "x"), rows=[["A", 1]])
    with pytest.raises(InputError, match="needs a 'run' or 'cell' column"):
        compare(runs, p)
    # duplicate rows
    p = _write_props(tmp_path, rows=[["A", 1, 2], ["A", 1, 2], ["B", 1, 2], ["C", 1, 2]])
    with pytest.raises(InputError, match=r"\['A'\] appear on several rows"):
        compare(runs, p)
    # a run without metrics
    p = _write_props(tmp_path)
    with pytest.raises(InputError, match=r"no metrics file .*D.metrics.json"):
        compare([*runs, tmp_path / "D.zarr"], p)
    with pytest.raises(InputError, match="no properties file"):
        compare(runs, tmp_path / "none.csv")
    with pytest.raises(InputError, match="not in the runs' metrics"):
        compare(runs, p, metrics=["nope"])


def test_one_run_warns_and_still_writes(tmp_path):
    runs = _write_runs(tmp_path, cells=("A",))
    p = _write_props(tmp_path, rows=[["A", 130, 2]])
    with pytest.warns(UserWarning, match="at least 2 runs"):
        table = compare(runs, p, out=tmp_path / "o")
    assert table["capacity_5C_mAh_g"] == [2.0]
    rows = list(csv.DictReader((tmp_path / "o" / "compare.csv").open()))
    assert rows[0]["isolated_fraction_active_material"] == "0.074"
    assert (tmp_path / "o" / "compare.html").exists()


def test_cli_compare(tmp_path, capsys):
    runs = _write_runs(tmp_path)
    p = _write_props(tmp_path)
    out = tmp_path / "cli"
    assert main(["compare", *map(str, runs), "--properties", str(p), "--out", str(out)]) == 0
    assert "3 runs joined" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO((out / "compare.csv").read_text())))
    assert [float(r["capacity_5C_mAh_g"]) for r in rows] == [2.0, 26.0, 85.0]
    bad = _write_props(tmp_path, rows=[["A", 1, 2]])
    assert main(["compare", *map(str, runs), "--properties", str(bad)]) == 2
    assert "have no row" in capsys.readouterr().err
