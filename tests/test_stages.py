"""One stage runner: a stage done with the CLI is up to date for `bigvol run` and the other
way round; side files follow the store's name; options are typed."""

import json

import numpy as np
import pytest

from bigvol import stages
from bigvol.cli import main
from bigvol.config import load_config
from bigvol.conventions import output_paths, run_stem
from bigvol.errors import ConfigError
from bigvol.options import TrainOptions
from bigvol.pipeline import Pipeline
from bigvol.store import Run

SHAPE = [10, 64, 72]
TRAIN = {"preset": "tiny", "epochs": 1, "steps_per_epoch": 2, "crop": 32, "batch_size": 2}


def _config(path):
    return {
        "run": str(path),
        "input": {"phantom": {"shape": SHAPE, "seed": 5}},
        "segment": {"method": "segnet", "train": {"labels": "truth", "slices": [2, 7],
                                                  "options": TRAIN}},
        "analyze": {"thickness_phases": [1], "tortuosity": {"enabled": False}},
        "report": {"enabled": False},
        "compute": {"chunks": [5, 32, 36]},
    }


def _arrays(path):
    r = Run.open(path)
    return {n: r.zarr_array(n)[...] for n in ("raw", "truth", "normalized", "segmentation")}


def test_stages_done_with_the_cli_are_up_to_date_for_run_and_back(tmp_path, capsys):
    path = tmp_path / "cell.zarr"
    run = str(path)
    cli = [
        ["synth", run, "--shape", *map(str, SHAPE), "--seed", "5", "--chunks", "5", "32", "36"],
        ["normalize", run],
        ["train", run, "--labels", "truth", "--slices", "2", "7", "--quiet",
         *[f"--{k.replace('_', '-')}={v}" for k, v in TRAIN.items()]],
        ["segment", run, "--model", str(output_paths(path)["model"])],
    ]
    for argv in cli:
        assert main(argv) == 0, argv
    before = _arrays(path)
    records = Run.open(path).stages

    p = Pipeline(load_config(_config(path)), progress=False)
    p.run_all()
    assert {"synth", "normalize", "train", "segment"} <= set(p.skipped)
    assert not {"synth", "normalize", "train", "segment"} & set(p.ran)
    assert {"threshold", "evaluate", "analyze"} <= set(p.ran)
    after = Run.open(path).stages
    for name in ("synth", "normalize", "train", "segment"):
        assert after[name] == records[name], name
    for name, a in _arrays(path).items():
        np.testing.assert_array_equal(a, before[name], err_msg=name)

    # and back: every command finds its stage up to date and writes nothing
    capsys.readouterr()
    for argv in cli:
        assert main(argv) == 0, argv
        out = capsys.readouterr().out
        assert "nothing to do" in out, (argv[0], out)
    assert Run.open(path).stages == after


def test_a_changed_option_reruns_the_stage_and_those_after_it(tmp_path, capsys):
    path = tmp_path / "r.zarr"
    assert main(["synth", str(path), "--shape", "6", "40", "40", "--seed", "1"]) == 0
    assert main(["normalize", str(path)]) == 0
    fp = Run.open(path).fingerprint_of("normalized")
    capsys.readouterr()
    assert main(["normalize", str(path), "--method", "percentile"]) == 0
    assert "nothing to do" not in capsys.readouterr().out
    assert Run.open(path).fingerprint_of("normalized") != fp


@pytest.mark.slow
def test_side_files_of_a_store_with_a_dot_in_its_name(tmp_path):
    """``cellA.v2`` (no .zarr suffix): pipeline, report and compare agree on cellA.v2.*"""
    assert run_stem("cells/cellA.v2") == "cells/cellA.v2"
    assert run_stem("cells/cellA.zarr/") == "cells/cellA"
    assert output_paths("x/cellA.v2")["metrics_json"].name == "cellA.v2.metrics.json"
    cfgs = []
    for name, seed in (("cellA.v2", 1), ("cellB.v2", 2)):
        cfg = {"run": str(tmp_path / name),
               "input": {"phantom": {"shape": [6, 40, 48], "seed": seed}},
               "segment": {"method": "threshold"},
               "analyze": {"thickness_phases": [1], "tortuosity": {"enabled": False}}}
        cfgs.append(cfg)
        Pipeline(load_config(cfg), progress=False).run_all()
        assert (tmp_path / f"{name}.metrics.json").exists()
        assert (tmp_path / f"{name}.report.html").exists()
        assert not (tmp_path / "cellA.metrics.json").exists()
    props = tmp_path / "props.csv"
    props.write_text("run,capacity_mAh_g\ncellA.v2,150\ncellB.v2,170\n")
    assert main(["compare", str(tmp_path / "cellA.v2"), str(tmp_path / "cellB.v2"),
                 "--properties", str(props), "--out", str(tmp_path / "cmp")]) == 0
    rows = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert rows[1].startswith("cellA.v2,") and rows[2].startswith("cellB.v2,")
    assert main(["report", str(tmp_path / "cellA.v2")]) == 0
    m = json.loads((tmp_path / "cellA.v2.metrics.json").read_text())
    assert m["run"] == str(tmp_path / "cellA.v2")


def test_a_misspelled_option_is_named_in_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"segment.train.options: unknown option 'epoch' "
                                          r"\(allowed: .*epochs"):
        load_config({"run": "x.zarr", "segment": {"train": {"options": {"epoch": 3}}}})
    with pytest.raises(ConfigError, match=r"unknown option 'epoch'"):
        TrainOptions(epoch=3)
    # the option models mirror the functions' signatures: the same names and defaults
    import inspect

    from bigvol.segment import train

    sig = inspect.signature(train).parameters
    for name, field in TrainOptions.model_fields.items():
        assert sig[name].default == field.default, name
    with pytest.raises(ConfigError, match="unknown preprocessing step 'blur'"):
        stages.preprocess(None, [("blur", {})])
    assert main(["run", "nope.yaml"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
