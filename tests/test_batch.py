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


# -- a real single-node Slurm ---------------------------------------------------------------
SLURM_CONF = """\
ClusterName=bigvoltest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge.socket
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
NodeName={host} CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def slurm():
    """slurmctld + slurmd (+ munged) on this machine, 2 CPUs, for the tests of this module.

    Skips (with the reason) where Slurm is not installed (Debian: slurm-wlm, munge; .ci/run
    installs them) or the tests do not run as root (the daemons and munged need it here).
    """
    import os
    import shutil
    import socket
    import subprocess
    import tempfile
    import time

    import psutil

    missing = [t for t in ("slurmctld", "slurmd", "munged", "mungekey", "sbatch", "scancel")
               if not shutil.which(t)]
    if missing:
        pytest.skip(f"Slurm is not installed here (no {', '.join(missing)}; "
                    "apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd/munged needs root here")
    d = tempfile.mkdtemp(prefix="bvslurm-", dir="/tmp")  # short: the munge socket path
    for sub in ("state", "spool"):
        os.makedirs(f"{d}/{sub}")
    env = dict(os.environ, SLURM_CONF=f"{d}/slurm.conf")
    host = socket.gethostname().split(".")[0]
    mem = int(psutil.virtual_memory().total / 2**20 * 0.8)
    with open(f"{d}/slurm.conf", "w") as f:
        f.write(SLURM_CONF.format(host=host, d=d, ctld_port=_free_port(), d_port=_free_port(),
                                  cpus=os.cpu_count(), mem=mem))
    started = []
    try:
        subprocess.run(["mungekey", "-c", "-f", "-k", f"{d}/munge.key"], check=True,
                       capture_output=True)
        subprocess.run(["munged", "-f", "-S", f"{d}/munge.socket", f"--key-file={d}/munge.key",
                        f"--log-file={d}/munged.log", f"--pid-file={d}/munged.pid",
                        f"--seed-file={d}/munged.seed"], check=True, capture_output=True)
        started.append(("munged", f"{d}/munged.pid"))
        subprocess.run(["slurmctld", "-c", "-f", f"{d}/slurm.conf"], check=True, env=env,
                       capture_output=True)
        started.append(("slurmctld", f"{d}/slurmctld.pid"))
        subprocess.run(["slurmd", "-f", f"{d}/slurm.conf"], check=True, env=env,
                       capture_output=True)
        started.append(("slurmd", f"{d}/slurmd.pid"))
        for _ in range(60):
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                                   text=True).stdout.strip()
            if state in ("idle", "mix", "alloc"):
                break
            time.sleep(0.5)
        else:
            pytest.skip(f"the local Slurm did not come up (node state {state!r}; logs in {d})")
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"could not start a local Slurm: {e}")
    yield env
    subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
    for _name, pidfile in reversed(started):
        try:
            with open(pidfile) as f:
                os.kill(int(f.read().strip()), 15)
        except (OSError, ValueError):
            pass
    time.sleep(1)
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slow
def test_a_run_on_slurm_survives_a_cancelled_worker_job_and_equals_the_threads_run(
        slurm, tmp_path, monkeypatch):
    import subprocess
    import sys
    import threading
    import time

    import numpy as np

    from bigvol.errors import StoreError
    from bigvol.pipeline import run
    from bigvol.store import Run

    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    base = {"input": {"phantom": {"shape": [24, 160, 192], "seed": 3}},
            "segment": {"method": "threshold"},
            "analyze": {"tortuosity": {"enabled": False}},
            "report": {"enabled": False}}
    ref = run({**base, "run": str(tmp_path / "threads.zarr"),
               "compute": {"scheduler": "threads", "chunks": [8, 80, 96]}}, progress=False)

    cfg = {**base, "run": str(tmp_path / "slurm.zarr"),
           "compute": {"scheduler": "slurm", "chunks": [8, 80, 96], "jobqueue": {
               "cores": 1, "memory": "2GB", "walltime": "00:20:00", "jobs": 2,
               "python": sys.executable, "log_directory": str(tmp_path / "logs"),
               "local_directory": str(tmp_path / "work"), "startup_timeout": 120}}}
    cancelled = []

    def cancel_one_job_midway():
        # once both worker jobs run and the run has started writing, cancel one of them
        for _ in range(600):
            jobs = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i"], env=slurm,
                                  capture_output=True, text=True).stdout.split()
            store = tmp_path / "slurm.zarr"
            try:
                started = store.exists() and bool(Run.open(store).stages)
            except StoreError:  # the group is written, its bigvol attribute not yet
                started = False
            if len(jobs) >= 2 and started:
                subprocess.run(["scancel", jobs[0]], env=slurm, check=True)
                cancelled.append(jobs[0])
                return
            time.sleep(0.2)

    t = threading.Thread(target=cancel_one_job_midway, daemon=True)
    t.start()
    out = run(cfg, progress=False)
    t.join(timeout=5)
    assert cancelled, "the worker job was not cancelled during the run"
    a, b = Run.open(ref), Run.open(out)
    for name in ("normalized", "segmentation"):
        assert np.array_equal(a.read(name).compute(), b.read(name).compute()), name
    assert a.stage("analyze")["results"] == b.stage("analyze")["results"]


def test_the_shipped_slurm_config_gives_an_adaptive_job_script(capsys):
    from pathlib import Path

    cfg = Path(__file__).resolve().parents[1] / "configs" / "slurm.yaml"
    assert cli.main(["run", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for line in ("#SBATCH -p cpu", "#SBATCH --cpus-per-task=16", "#SBATCH -t 04:00:00",
                 "source /shared/venvs/bigvol/bin/activate"):
        assert line in out
    assert "--resources GPU" not in out  # a CPU job shape
