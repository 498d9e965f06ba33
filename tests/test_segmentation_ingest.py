"""An existing segmentation in, metrics out: named phases, code mapping, and bad input.

Users bring segmentations from Avizo, Dragonfly, ilastik or TauFactor with their own codes
(TauFactor's NMC electrode is 0 / 85 / 170) and their own phase names (an NMC electrode's
binder is carbon-binder, not solid electrolyte). ``bigvol ingest --name segmentation
--phases`` renumbers and names them; every later output uses the names.
"""

import json

import numpy as np
import pytest
import tifffile

import bigvol as bv
from bigvol.cli import main as cli
from bigvol.errors import ConfigError, InputError
from bigvol.pipeline import analyze_run
from bigvol.store import Run

pytestmark = pytest.mark.filterwarnings("ignore:.*voxel size unknown:UserWarning")


@pytest.fixture
def electrode(tmp_path):
    """A 48^3 crop of a three-phase electrode in TauFactor's original codes (0 / 85 / 170)."""
    from conftest import REALDATA

    path = REALDATA / "electrode" / "taufactor_polaron_nmc_256.tif"
    if path.is_file():
        v = tifffile.imread(path)[:48, :48, :48]
    else:  # the same kind of volume, made here
        rng = np.random.default_rng(0)
        v = rng.integers(0, 3, (48, 48, 48)).astype(np.uint8)
    orig = np.array([0, 170, 85], np.uint8)[v]  # bigvol 0 pore, 1 cbd, 2 nmc -> file codes
    f = tmp_path / "seg.tif"
    tifffile.imwrite(f, orig)
    return v, f


@pytest.mark.slow
def test_named_phase_mapping_round_trip_ingest_metrics_report(tmp_path, electrode, capsys):
    v, f = electrode
    run_path = tmp_path / "cellA.zarr"
    assert cli(["ingest", str(f), str(run_path), "--name", "segmentation",
                "--phases", "0=pore,170=carbon-binder,85=NMC", "--voxel-size", "390.625", "390.625",
                "390.625"]) == 0
    run = Run.open(run_path)
    assert run.phases == ["pore", "carbon-binder", "NMC"]
    np.testing.assert_array_equal(run.zarr_array("segmentation")[:], v)  # renumbered 0, 1, 2
    assert run.stage("ingest:segmentation")["parameters"]["phases"] == {
        "0": "pore", "170": "carbon-binder", "85": "NMC"}
    m, paths = analyze_run(run_path, tortuosity=False)
    disk = json.loads(paths["metrics_json"].read_text())
    assert disk["phases"] == ["pore", "carbon-binder", "NMC"]
    vf = bv.metrics.volume_fractions(v)
    assert disk["volume_fractions"] == {n: pytest.approx(vf[i]) for i, n in enumerate(run.phases)}
    assert set(disk["thickness"]) == {"pore", "carbon-binder", "NMC"}
    assert "specific_surface_carbon-binder_um-1" in disk["interfaces"]
    assert "solid electrolyte" not in paths["metrics_json"].read_text()
    header = paths["metrics_csv"].read_text().splitlines()[0]
    assert "volume_fraction_carbon-binder" in header and "solid" not in header
    assert cli(["report", str(run_path)]) == 0
    html = paths["report"].read_text()
    assert "carbon-binder" in html and "solid electrolyte" not in html


def test_two_phase_segmentation_with_unused_codes_is_measured(tmp_path):
    # SuperRes cathode style: codes 0 (pore + binder) and 2 (active material) only.
    rng = np.random.default_rng(3)
    v = np.where(rng.random((24, 24, 24)) < 0.4, 2, 0).astype(np.uint8)
    f = tmp_path / "two.tif"
    tifffile.imwrite(f, v)
    bv.ingest(f, tmp_path / "two.zarr", name="segmentation", phases={0: "pore+CBD", 2: "active"})
    run = Run.open(tmp_path / "two.zarr")
    assert run.phases == ["pore+CBD", "active"]
    np.testing.assert_array_equal(run.zarr_array("segmentation")[:], (v == 2).astype(np.uint8))
    m, _ = analyze_run(tmp_path / "two.zarr", tortuosity=False)
    assert set(m["volume_fractions"]) == {"pore+CBD", "active"}
    assert m["volume_fractions"]["active"] == pytest.approx((v == 2).mean())


def test_a_mapping_naming_an_absent_code_is_one_clear_error(tmp_path, electrode):
    _, f = electrode
    with pytest.raises(InputError, match=r"seg\.tif.*code\(s\) \[7\] \(vesicle\).*no voxel"):
        bv.ingest(f, tmp_path / "r.zarr", name="segmentation",
                  phases="0=pore,170=cbd,85=nmc,7=vesicle")
    assert not (tmp_path / "r.zarr").exists()  # nothing written


def test_an_unnamed_code_is_one_clear_error(tmp_path, electrode):
    _, f = electrode
    with pytest.raises(InputError, match=r"seg\.tif holds code\(s\) \[170\].*does not name"):
        bv.ingest(f, tmp_path / "r.zarr", name="segmentation", phases="0=pore,85=nmc")
    # without a mapping, codes beyond the run's phase names are refused too
    with pytest.raises(InputError, match=r"holds code\(s\) \[85, 170\].*names only 3 phases"):
        bv.ingest(f, tmp_path / "r.zarr", name="segmentation")


def test_greyscale_passed_as_a_segmentation_is_refused_and_the_old_one_kept(tmp_path, electrode,
                                                                           capsys):
    v, f = electrode
    run_path = tmp_path / "r.zarr"
    bv.ingest(f, run_path, name="segmentation", phases="0=pore,170=cbd,85=nmc")
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, np.random.default_rng(0).integers(0, 256, (8, 32, 32), dtype=np.uint8))
    with pytest.raises(InputError, match=r"grey\.tif holds 256 distinct values.*greyscale image"):
        bv.ingest(grey, run_path, name="segmentation")
    run = Run.open(run_path)
    np.testing.assert_array_equal(run.zarr_array("segmentation")[:], v)  # intact
    assert run.phases == ["pore", "cbd", "nmc"]
    capsys.readouterr()
    assert cli(["ingest", str(grey), str(run_path), "--name", "segmentation",
                "--voxel-size", "1", "1", "1"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "greyscale image" in err[0] and "grey.tif" in err[0]


@pytest.mark.parametrize("phases, msg", [
    ("pore", "between 2 and 255"),
    ("pore,pore", "distinct"),
    ("0=pore,x=cbd", "integer code"),
    ("0=pore,cbd", "either names"),
])
def test_bad_phase_naming_is_refused(tmp_path, electrode, phases, msg):
    _, f = electrode
    with pytest.raises(ConfigError, match=msg):
        bv.ingest(f, tmp_path / "r.zarr", name="segmentation", phases=phases)


def test_phases_are_refused_on_the_raw_image(tmp_path, electrode):
    _, f = electrode
    with pytest.raises(ConfigError, match="name='segmentation'"):
        bv.ingest(f, tmp_path / "r.zarr", phases="pore,cbd,nmc")


def test_analyze_solves_the_tortuosity_of_the_phases_named_on_the_command_line(
        tmp_path, capsys):
    # a liquid-electrolyte electrode: the ions move through the pores, not phase 1; the
    # CLI takes the phases by name, and a name the run does not have is refused, naming
    # the run's phases, before anything is written
    rng = np.random.default_rng(5)
    v = rng.choice(np.array([0, 1, 2], np.uint8), (20, 20, 20), p=[0.6, 0.1, 0.3])
    f = tmp_path / "seg.tif"
    tifffile.imwrite(f, v)
    run_path = tmp_path / "cell.zarr"
    assert cli(["ingest", str(f), str(run_path), "--name", "segmentation",
                "--phases", "pore,cbd,nmc"]) == 0
    assert cli(["analyze", str(run_path), "--tortuosity-phases", "Pore,2"]) == 0
    out = capsys.readouterr().out
    disk = json.loads(Run.open(run_path).paths["metrics_json"].read_text())
    assert set(disk["tortuosity"]) == {"pore", "nmc"}
    want = bv.metrics.tortuosity(v, 0, axis=1, device="cpu")
    assert disk["tortuosity"]["pore"]["tau"] == pytest.approx(want["tau"], rel=1e-6)
    assert f"tau {want['tau']:.4f}" in out.split("tortuosity        pore")[1].splitlines()[0]
    before = Run.open(run_path).paths["metrics_json"].read_text()
    assert cli(["analyze", str(run_path), "--tortuosity-phases", "electrolyte"]) == 2
    err = capsys.readouterr().err
    assert "'electrolyte'" in err and "0=pore, 1=cbd, 2=nmc" in err
    assert Run.open(run_path).paths["metrics_json"].read_text() == before
