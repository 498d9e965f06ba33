"""Slurm and PBS through dask-jobqueue: the job scripts bigvol submits (``--dry-run``), the
job-shape config, and a real single-node Slurm when the machine can start one."""

import pytest

pytest.importorskip("dask_jobqueue")

from bigvol import cli
from bigvol.cluster import _walltime_seconds, job_script
from bigvol.config import load_config
from bigvol.errors import ConfigError

JOB = {"cores": 16, "memory": "64GB", "walltime": "04:00:00", "queue": "gpu",
       "account": "fibsem", "gpus": 2, "job_extra_directives": ["--constraint=avx512"],
       "job_script_prologue": ["module load cuda/12", "source /opt/venv/bin/activate"],
       "python": "/opt/venv/bin/python"}


def _config(tmp_path, scheduler, **job):
    return {"run": str(tmp_path / "r.zarr"), "input": {"phantom": {"shape": [8, 64, 64]}},
            "segment": {"method": "threshold"},
            "compute": {"scheduler": scheduler, "jobqueue": {**JOB, **job}}}


def test_slurm_job_script_carries_the_job_shape(tmp_path):
    script = job_script("slurm", load_config(_config(tmp_path, "slurm")).compute.jobqueue)
    for line in ("#SBATCH -p gpu", "#SBATCH -A fibsem", "#SBATCH --cpus-per-task=16",
                 "#SBATCH -t 04:00:00", "#SBATCH --gres=gpu:2", "#SBATCH --constraint=avx512",
                 "#SBATCH --mem=60G", "module load cuda/12", "source /opt/venv/bin/activate"):
        assert line in script, (line, script)
    worker = script.strip().splitlines()[-1]
    assert worker.startswith("/opt/venv/bin/python -m distributed.cli.dask_worker")
    # GPU jobs declare the resource inference tasks ask for; workers retire before walltime
    assert "--resources GPU=2" in worker and "--lifetime 235m" in worker
    assert "--nthreads 16" in worker


def test_pbs_job_script_carries_the_job_shape(tmp_path):
    script = job_script("pbs", load_config(_config(tmp_path, "pbs")).compute.jobqueue)
    for line in ("#PBS -q gpu", "#PBS -A fibsem", "#PBS -l select=1:ncpus=16:mem=64GB:ngpus=2",
                 "#PBS -l walltime=04:00:00", "module load cuda/12"):
        assert line in script, (line, script)
    assert "--resources GPU=2" in script


def test_cpu_jobs_have_no_gpu_lines_and_short_walltimes_no_lifetime(tmp_path):
    cfg = load_config(_config(tmp_path, "slurm", gpus=0, walltime="00:10:00"))
    script = job_script("slurm", cfg.compute.jobqueue)
    assert "gres" not in script and "GPU=" not in script and "--lifetime" not in script


def test_cli_dry_run_prints_the_script_and_submits_nothing(tmp_path, capsys):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, "threads")))
    assert cli.main(["run", str(path), "--scheduler", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/usr/bin/env bash") and "#SBATCH -p gpu" in out
    assert not (tmp_path / "r.zarr").exists()
    assert cli.main(["run", str(path), "--dry-run"]) == 2  # threads: no job script
    assert "use --scheduler slurm or pbs" in capsys.readouterr().err


@pytest.mark.parametrize("job,message", [
    ({"adaptive": [3, 1]}, "adaptive must be"),
    ({"cores": 0}, "cores"),
    ({"partition": "x"}, "unknown key 'compute.jobqueue.partition'"),
])
def test_bad_job_shapes_are_refused_with_the_key(tmp_path, job, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, "slurm", **job))


def test_bad_walltime_is_refused(tmp_path):
    cfg = load_config(_config(tmp_path, "slurm", walltime="four hours"))
    with pytest.raises(ConfigError, match="walltime"):
        job_script("slurm", cfg.compute.jobqueue)


def test_walltime_formats():
    assert _walltime_seconds("04:00:00") == 4 * 3600
    assert _walltime_seconds("1-02:00:00") == 26 * 3600
    assert _walltime_seconds("30:00") == 1800
    assert _walltime_seconds("90") == 90 * 60
