"""The tiny DAG on a real single-node SLURM cluster (`make test-cluster`).

`make test-cluster` installs the Debian packages slurmctld, slurmd, slurm-client and munge,
starts the daemons (tests/cluster/slurm_local.sh: one node, a fake GPU through gres), runs
this module with NEOPAIN_SLURM_TEST=1 and stops the daemons by PID. Here the whole tiny DAG
runs through `snakemake --executor slurm` with the project's profile profiles/slurm; every
submitted job is then looked up in the controller (`scontrol show job`) and in SLURM's job
completion records, and a submission that runs a GPU rule (the group job of the shards,
which holds extract) must have asked for a GPU (`--gpus=1` -> TresPerJob=gres:gpu:1) while
the others must not. The per-video work runs in shard jobs grouped into few submissions
(docs/scale.md): the number of `sbatch` calls is printed and must be smaller than the
number of per-video jobs the same DAG had before shards (one per video and stage).
Job ids and GPU requests are printed.

Skipped in plain `make test` (and never calls scontrol there: with the slurm plugin
installed and a stale /etc/slurm/slurm.conf, each scontrol call would wait ~10 s).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import _tiny

pytestmark = pytest.mark.slow
GPU_RULES = {"extract", "finetune"}
# a group job of the shard jobs (group "shards" in workflow/rules) is logged under
# group_shards_<its rules>/ and commented rule_shards_<its rules>
SHARD_GROUP = "group_shards_"
# stages a video had one job each for before shards: track, crop, keyframes, qc_montage,
# strain and extract (one backbone in the tiny config)
STAGES_PER_VIDEO_BEFORE = 6
# a job's id is a number, a group job's a UUID
SUBMITTED = re.compile(
    r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def _cluster_up() -> str | None:
    if os.environ.get("NEOPAIN_SLURM_TEST") != "1":
        return "cluster test: run through `make test-cluster` (starts a local SLURM)"
    if not shutil.which("sbatch"):
        return "sbatch not on PATH"
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                          timeout=30)
    if proc.returncode != 0 or not re.search(r"idle|mix|alloc", proc.stdout):
        return f"no SLURM controller answering: {proc.stderr.strip()}"
    return None


def scontrol_job(jobid: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", jobid], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    fields = {}
    for tok in out.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields.setdefault(k, v)
    return fields


def jobcomp_records(path: Path) -> dict[str, dict[str, str]]:
    recs = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
            if "JobId" in rec:
                recs[rec["JobId"]] = rec
    return recs


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, shared_data):
    reason = _cluster_up()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("slurm")
    _tiny.tiny_config(work, shared_data)
    t0 = time.monotonic()
    proc = _tiny.snakemake(
        work, "--workflow-profile", str(_tiny.REPO / "profiles" / "slurm"),
        "--slurm-status-command", "squeue",          # no accounting database here
        "--slurm-init-seconds-before-status-checks", "2",
        "--jobs", "4", "--set-threads", "extract=1", "select=1",
        "--slurm-keep-successful-logs", "--verbose",
        env={"NEOPAIN_SLURM_PARTITION": "main"}, timeout=1500)
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    jobs = []
    for _, slurm_id, log in SUBMITTED.findall(out):
        rule = Path(log).relative_to(work / ".snakemake" / "slurm_logs").parts[0]
        jobs.append((rule.removeprefix("rule_"), slurm_id, log))
    return work, jobs, out, elapsed, _tiny.job_counts(out)


def test_dag_ran_on_slurm_and_gpu_rules_asked_for_a_gpu(slurm_run, capsys):
    work, jobs, out, elapsed, counts = slurm_run
    assert jobs, out[-4000:]
    infos = [(rule, slurm_id, log, scontrol_job(slurm_id)) for rule, slurm_id, log in jobs]
    base = Path(os.environ.get("NEOPAIN_SLURM_BASE", "/tmp/neopain-slurm"))
    comp = jobcomp_records(base / "log" / "jobcomp.txt")
    with capsys.disabled():
        n_jobs = sum(counts.values())
        before = STAGES_PER_VIDEO_BEFORE * len(_tiny.TINY_VIDEOS)
        print(f"\n== SLURM run of the tiny DAG: {len(jobs)} sbatch submissions for {n_jobs} "
              f"Snakemake jobs in {elapsed:.0f} s (snakemake --executor slurm "
              f"--workflow-profile profiles/slurm); before shards the per-video work alone "
              f"was {before} jobs, each its own submission")
        print(f"{'rule':<16} {'jobid':>5}  {'state':<10} {'GPU request':<12} "
              f"{'TRES':<34} time limit")
        for rule, slurm_id, _, info in infos:
            print(f"{rule:<16} {slurm_id:>5}  {info.get('JobState', '?'):<10} "
                  f"{info.get('TresPerJob') or '-':<12} {info.get('TRES', ''):<34} "
                  f"{info.get('TimeLimit', '')}")
        if comp:
            print(f"job completion records ({base}/log/jobcomp.txt): "
                  f"{sum(c.get('JobState') == 'COMPLETED' for c in comp.values())} COMPLETED")
    rules = {r for r, _, _ in jobs}
    assert {"gather_features", "select", "classify", "evaluate"} <= rules, rules
    assert not {r for r in rules if _tiny.shard_stage(r)}, rules   # all inside the groups
    # the shard jobs (track, qc_montage, strain, extract of each shard) went out grouped
    assert counts["extract"] >= 2 and sum(r.startswith(SHARD_GROUP) for r in rules) == 1, jobs
    assert len(jobs) < STAGES_PER_VIDEO_BEFORE * len(_tiny.TINY_VIDEOS), len(jobs)
    assert len(jobs) < sum(counts.values()), (len(jobs), counts)
    for rule, slurm_id, log, info in infos:
        assert info["JobState"] == "COMPLETED", (rule, slurm_id, info)
        name = "shards_" if rule.startswith(SHARD_GROUP) else rule
        assert info["Comment"].startswith(f"rule_{name}"), info["Comment"]
        gpu = info.get("TresPerJob", "")
        if rule in GPU_RULES or rule.startswith(SHARD_GROUP):
            assert re.fullmatch(r"gres:gpu:1", gpu), (rule, slurm_id, gpu)
        else:
            assert "gpu" not in gpu, (rule, slurm_id, gpu)
        assert Path(log).is_file(), log                  # --slurm-keep-successful-logs
        if comp:
            assert comp[slurm_id]["JobState"] == "COMPLETED", comp[slurm_id]
    # the submission itself: the plugin's sbatch call for a GPU rule carried --gpus=1
    gpu_calls = [ln for ln in out.splitlines() if "sbatch call" in ln and "rule_shards" in ln]
    assert gpu_calls and all("--gpus=1" in ln for ln in gpu_calls), gpu_calls[:2]


def test_slurm_run_results_match_the_local_pipeline(slurm_run):
    work, *_ = slurm_run
    t5 = pq.read_table(work / "results/evaluation/table5.parquet").to_pandas()
    assert len(t5) == 1 and t5["layer"].tolist() == ["penultimate"]
    assert (work / "results/provenance/run.json").is_file()
    from neopain.core.verify import verify

    report = verify(work / "results")
    assert report.ok, report.summary()


def test_nothing_left_to_do_after_the_slurm_run(slurm_run):
    work, *_ = slurm_run
    assert _tiny.dry_run_jobs(work) == {}
