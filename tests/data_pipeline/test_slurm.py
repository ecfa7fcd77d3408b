"""The filter stage on a real local Slurm cluster: a job array (datatrove's executor) and MPI under srun."""

from __future__ import annotations

import json
import os

import pytest
from stage_helpers import BIN, cli, manifest, output_files

pytestmark = pytest.mark.slurm


def test_slurm_job_array_matches_local_run(local_slurm, chardet_pages, chardet_local, tmp_path):
    out = tmp_path / "slurm"
    proc = cli(f"input.paths=[{chardet_pages}]", "input.format=pages", "filters=fineweb", "executor=slurm",
               "executor.tasks=4", f"executor.partition={local_slurm.cluster.spec.partition}",
               "executor.mem_per_cpu_gb=0", "executor.time=00:10:00", f"output.dir={out}", timeout=400)
    assert "submitted job array" in proc.stdout and "(holds)" in proc.stdout
    assert output_files(out) == output_files(chardet_local)
    assert manifest(out)["balanced"] and manifest(out)["documents_in"] == 426
    # the array ran as 4 Slurm tasks, and the manifest job ran after them (afterok)
    assert len(list((out / "logs" / "slurm_logs").glob("*_*.out"))) == 5


def test_mpi_under_srun_matches_local_run(local_slurm, chardet_pages, chardet_local, tmp_path):
    out = tmp_path / "srun"
    cli(f"input.paths=[{chardet_pages}]", "input.format=pages", "filters=fineweb", "executor=mpi",
        "executor.tasks=4", f"output.dir={out}", launcher=["srun", "--mpi=pmi2", "-n", "4", "-t", "10"],
        timeout=400, env={"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    assert json.loads((out / "logs" / "mpi.json").read_text()) == {"world_size": 4,
                                                                    "tasks_by_rank": [[0], [1], [2], [3]]}
    assert output_files(out) == output_files(chardet_local)


def test_dedup_as_chained_slurm_job_arrays_matches_local_run(local_slurm, tmp_path):
    """stage=dedup's pipelines (signatures, pairs, clustering rounds, members, keep, write) submitted at once,
    chained afterok; the rounds after convergence run and do nothing. Same bytes as the local run."""
    from test_dedup import run_dedup, write_corpus

    expected, n = write_corpus(tmp_path / "in")
    run_dedup(tmp_path / "in", tmp_path / "local", "dedup.max_rounds=3", tasks=2)
    out = tmp_path / "slurm"
    proc = run_dedup(tmp_path / "in", out, "dedup.max_rounds=3", f"executor.partition={local_slurm.cluster.spec.partition}",
                     "executor.mem_per_cpu_gb=0", "executor.time=00:10:00", tasks=2, executor="slurm", timeout=600)
    assert "submitted job array" in proc.stdout and "(holds)" in proc.stdout
    assert output_files(out) == output_files(tmp_path / "local")
    m = manifest(out)
    assert m["balanced"] and m["documents_in"] == n and m["removed"]["dedup"] == expected
    assert m["dedup"]["cluster_rounds_run"] == manifest(tmp_path / "local")["dedup"]["cluster_rounds_run"]
    # every round was submitted: 3 rounds x 2 tasks ran under Slurm, those after convergence as no-ops
    assert all(len(list((out / "logs" / "clusters" / f"r{r:02d}" / "completions").iterdir())) == 2 for r in range(3))


def test_full_pipeline_as_a_chain_of_slurm_jobs_matches_local_run(local_slurm, pywb_warcs, chardet_pages, tmp_path):
    """pipeline=full on Slurm: each step after the first runs in a launcher job chained afterok on the job arrays
    before it; the same token shards and mixture as the local run."""
    from test_full import SETTINGS

    settings = [*SETTINGS, "pipeline.sources.wikipedia.dedup=false", "pipeline.sources.books.dedup=false",
                "dedup.max_rounds=3"]
    cli(*settings, f"output.dir={tmp_path / 'local'}", timeout=900)
    out = tmp_path / "slurm"
    proc = cli(*settings, "executor=slurm", f"executor.partition={local_slurm.cluster.spec.partition}",
               "executor.mem_per_cpu_gb=0", "executor.time=00:10:00", f"output.dir={out}", timeout=900)
    assert "submitted launcher job" in proc.stdout and "[full] done:" in proc.stdout
    jobs = [json.loads(line) for line in (out / "logs/full/jobs.jsonl").read_text().splitlines()]
    assert [j["name"] for j in jobs][-1] == "card" and all(j["after"] for j in jobs)

    def shards(d):
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted((d / "tokens").rglob("*_text_document.*"))
                if p.suffix in (".bin", ".idx")}  # (the .json names its own path)

    assert shards(out) and shards(out) == shards(tmp_path / "local")
    assert manifest(out / "mix")["mix"] == manifest(tmp_path / "local" / "mix")["mix"]
    card = json.loads((out / "data_card.json").read_text())
    assert card["sources"]["crawl"]["read"] == 847
