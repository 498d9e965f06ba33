"""Config validation: every bad key or value is refused with a message naming it."""

from pathlib import Path

import pytest
import yaml

from bigvol.cli import main
from bigvol.config import load_config, parse_overrides
from bigvol.errors import ConfigError
from bigvol.pipeline import DEMO_CONFIG, demo_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_demo_yaml_equals_demo_config():
    on_disk = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    assert load_config(on_disk) == load_config(demo_config("bigvol-demo"))
    assert "run" not in DEMO_CONFIG


@pytest.mark.parametrize("name", ["demo", "workstation", "cluster", "slurm", "epfl_mito"])
def test_shipped_configs_validate(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.run.endswith(".zarr")


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"run": "r.zarr", "preproces": {}}, "unknown key 'preproces'"),
        ({"run": "r.zarr", "segment": {"method": "cnn"}}, "segment.method"),
        ({"run": "r.zarr", "segment": {"tta": 3}}, "segment.tta"),
        ({"run": "r.zarr", "segment": {"train": {"slicez": [1]}}}, "segment.train.slicez"),
        ({"run": "r.zarr", "analyze": {"connectivity": 8}}, "analyze.connectivity"),
        ({"run": "r.zarr", "analyze": {"axis": 3}}, "analyze.axis"),
        ({"run": "r.zarr", "compute": {"scheduler": "gpu-please"}}, "compute.scheduler"),
        ({"input": {}}, "missing required key 'run'"),
    ],
)
def test_bad_config_names_the_key(data, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(data)


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError) as e:
        load_config({"run": "r.zarr", "normalize": {"methd": "histogram"}})
    assert "normalize.methd" in str(e.value) and "method" in str(e.value)


def test_overrides_are_yaml_values_and_win():
    over = parse_overrides(["segment.method=threshold", "compute.workers=2", "analyze.thickness_phases=[1]"])
    cfg = load_config({"run": "r.zarr", "segment": {"method": "segnet"}}, over)
    assert cfg.segment.method == "threshold" and cfg.compute.workers == 2
    assert cfg.analyze.thickness_phases == [1]
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["segment.method"])


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: r.zarr\nsegment:\n  tiles: 512\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "segment.tiles" in err and "Traceback" not in err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    bad.write_text("run: [unclosed\n")
    assert main(["run", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
