"""Stop after step 10, restart, and steps 11-20 match the uninterrupted run exactly (CPU, fp32), in both
checkpoint formats (dcp, the default, saving asynchronously; and full). Also: a resume under another layout
(resharding) continues the same losses, a finished run does not train again, and a corrupt newest dcp
checkpoint or a save killed before its commit (a .tmp dir) falls back to the last committed checkpoint."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from pretrain.metrics import read_metrics
from pretrain.rundir import EXIT_INTERVAL, RunDir
from tests.conftest import run_trainer

# lr 1e-3, as in test_parity.py: at the tiny preset's 3e-3, the botchan shards of the word-spanning tokenizer
# grow the 1e-8 reduction-order differences between TP=2 and DP=2 past the cross-layout bounds below within two
# steps (3e-6 relative at step 12); resumes in the same layout are bit-identical at either lr
COMMON = ["model=tiny", "train.iters=20", "train.global_batch_size=8", "train.micro_batch_size=2",
          "train.eval_iters=2", "train.eval_interval=10", "train.save_interval=5", "optim.warmup_iters=5",
          "optim.lr=1e-3", "logging.wandb.mode=disabled"]


def _losses(run_dir):
    return {r["step"]: (r.get("loss"), r.get("val_loss")) for r in read_metrics(run_dir / "metrics.jsonl")}


def _stopped_at_exit_interval(proc, run_dir) -> None:
    """exit_interval stops with its own code (torchrun turns it into 1; exit.json keeps it)."""
    assert proc.returncode != 0, "an exit_interval stop must not look finished"
    exit_info = RunDir(run_dir).read_exit()
    assert exit_info is not None and exit_info["code"] == EXIT_INTERVAL, (exit_info, proc.stderr[-3000:])
    assert exit_info["reason"] == "exit_interval"


@pytest.fixture(scope="module")
def uninterrupted(tiny_shards, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full")
    proc = run_trainer(2, [*COMMON, *tiny_shards, f"run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["dcp", "full"])
def test_resume_matches_uninterrupted_run_exactly(uninterrupted, tiny_shards, tmp_path, fmt):
    args = [*COMMON, *tiny_shards, f"run.dir={tmp_path}", f"run.checkpoint_format={fmt}"]
    first = run_trainer(2, [*args, "train.exit_interval=10"])
    _stopped_at_exit_interval(first, tmp_path)
    assert max(_losses(tmp_path)) == 10 and not (tmp_path / "finished.json").exists()
    ckpts = tmp_path / "checkpoints"
    # the save at the exit step was committed before the process exited (asynchronous for dcp)
    assert (ckpts / "latest").read_text().strip() == "iter_0000010" and not list(ckpts.glob(".tmp.*"))
    meta = json.loads((ckpts / "iter_0000010" / "meta.json").read_text())
    assert meta["format"] == fmt and meta["optimizer_step"] == 10
    second = run_trainer(2, args)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resumed from" in second.stdout and "step 10" in second.stdout
    ref, got = _losses(uninterrupted), _losses(tmp_path)
    assert sorted(got) == list(range(1, 21))
    for step in range(11, 21):
        assert got[step] == ref[step], f"step {step}: resumed {got[step]} vs uninterrupted {ref[step]}"
    # a finished run does not train past its end when started again
    again = run_trainer(1, [*COMMON, *tiny_shards, f"run.dir={tmp_path}"])
    assert again.returncode == 0 and "already finished" in again.stdout
    assert json.loads((tmp_path / "finished.json").read_text())["iterations"] == 20


@pytest.mark.slow
def test_resume_under_another_layout(uninterrupted, tiny_shards, tmp_path):
    """Saved under DP=2 with the distributed optimizer, resumed under TP=2 (dcp, the default format): weights,
    Adam state and data position carry over."""
    args = [*COMMON, *tiny_shards, f"run.dir={tmp_path}"]
    first = run_trainer(2, [*args, "parallel.distributed_optimizer=true", "train.exit_interval=10"])
    _stopped_at_exit_interval(first, tmp_path)
    second = run_trainer(2, [*args, "parallel.tp=2"])
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resumed from" in second.stdout and "step 10" in second.stdout
    ref, got = _losses(uninterrupted), _losses(tmp_path)
    for step in range(11, 21):
        assert got[step][0] == pytest.approx(ref[step][0], rel=1e-4), f"step {step}"


@pytest.mark.slow
def test_both_formats_reshard_tp2_to_dp2_identically(uninterrupted, tiny_shards, tmp_path_factory):
    """Saved under TP=2 and resumed under DP=2 with the distributed optimizer, once per format (dcp written
    synchronously here): the resumed losses are bit-identical between the formats, and the first resumed steps
    follow the uninterrupted DP=2 run to 1e-6 (later steps drift apart by the TP reduction order of steps 1-10,
    in both formats alike)."""
    got = {}
    for fmt in ("dcp", "full"):
        run_dir = tmp_path_factory.mktemp(f"reshard_{fmt}")
        args = [*COMMON, *tiny_shards, f"run.dir={run_dir}", f"run.checkpoint_format={fmt}",
                "run.async_save=false"]
        first = run_trainer(2, [*args, "parallel.tp=2", "train.exit_interval=10"])
        _stopped_at_exit_interval(first, run_dir)
        assert json.loads((run_dir / "checkpoints" / "iter_0000010" / "meta.json").read_text())["format"] == fmt
        second = run_trainer(2, [*args, "parallel.distributed_optimizer=true"])
        assert second.returncode == 0, second.stderr[-4000:]
        assert "resumed from" in second.stdout and "step 10" in second.stdout
        got[fmt] = _losses(run_dir)
    ref = _losses(uninterrupted)
    for step in range(11, 21):
        assert got["dcp"][step] == got["full"][step], f"step {step}: dcp {got['dcp'][step]} full {got['full'][step]}"
    for step in range(11, 15):
        assert got["dcp"][step][0] == pytest.approx(ref[step][0], rel=1e-6), f"step {step}"


@pytest.mark.slow
def test_corrupt_newest_dcp_checkpoint_and_an_uncommitted_save_fall_back(tiny_shards, tmp_path):
    """A truncated file in the newest dcp checkpoint (found by the rank that verifies it, agreed by all) and a
    save killed before its commit (only .tmp.iter_XXXXXXX exists) are skipped: the run resumes from the last
    good checkpoint, with a warning that names both, and retrains the same losses."""
    args = [*COMMON, *tiny_shards, f"run.dir={tmp_path}", "train.iters=8", "train.save_interval=3",
            "train.eval_interval=100"]
    first = run_trainer(2, [*args, "train.exit_interval=6"])
    _stopped_at_exit_interval(first, tmp_path)
    ref = _losses(tmp_path)
    ckpts = tmp_path / "checkpoints"
    newest = ckpts / "iter_0000006"
    recorded = {}
    for f in sorted((newest / "sha256").glob("rank*.json")):
        recorded.update(json.loads(f.read_text()))
    assert sorted(recorded) == ["__0_0.distcp", "__1_0.distcp"]  # each rank wrote and hashed its own file
    # the two data-parallel replicas are stored once, spread over both ranks' files
    from pretrain.checkpoint_reader import CheckpointReader

    reader = CheckpointReader.open(newest)
    state_bytes = sum(math.prod(shape) * dtype.itemsize for shape, dtype in
                      map(reader.tensor_info, reader.model_keys() + reader.optimizer_keys()))
    written = [(newest / f).stat().st_size for f in recorded]
    assert sum(written) < 1.1 * state_bytes and min(written) > 0.25 * state_bytes, (written, state_bytes)
    victim = newest / "__0_0.distcp"  # verified by rank 1 (file i by rank i % world), reported by rank 0
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    killed = ckpts / ".tmp.iter_0000008"  # what a kill during the write of step 8's save leaves
    shutil.copytree(ckpts / "iter_0000003", killed)
    (killed / "meta.json").unlink()
    second = run_trainer(2, args)
    assert second.returncode == 0, second.stderr[-4000:]
    warning = [line for line in second.stdout.splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1 and "iter_0000006" in warning[0] and "__0_0.distcp" in warning[0] \
        and "resuming from iter_0000003" in warning[0], second.stdout[-3000:]
    assert "step 3" in second.stdout.split("resumed from", 1)[1].splitlines()[0]
    got = _losses(tmp_path)
    for step in (4, 5, 6):
        assert got[step] == ref[step], f"step {step}: {got[step]} vs {ref[step]}"
    assert (ckpts / "latest").read_text().strip() == "iter_0000008" and not killed.exists()


@pytest.fixture(scope="module")
def distopt_run(tiny_shards, tmp_path_factory):
    """Steps 1-10 under DP=2 with the distributed optimizer (ZeRO-1), stopped at exit_interval: checkpoints at
    steps 5 and 10 (dcp, asynchronous)."""
    run_dir = tmp_path_factory.mktemp("distopt")
    first = run_trainer(2, [*COMMON, *tiny_shards, f"run.dir={run_dir}", "parallel.distributed_optimizer=true",
                            "train.exit_interval=10"])
    _stopped_at_exit_interval(first, run_dir)
    return run_dir


def _optimizer_elements_per_rank(ckpt_dir) -> tuple[dict[int, int], int]:
    """({rank: optimizer-state elements stored in the files that rank wrote}, number of optimizer tensors),
    from the dcp metadata (which file holds each chunk) and each rank's sha256 record (which files it wrote)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import MetadataIndex

    md = FileSystemReader(str(ckpt_dir)).read_metadata()
    writer = {f: int(rec.stem[len("rank"):]) for rec in (ckpt_dir / "sha256").glob("rank*.json")
              for f in json.loads(rec.read_text())}
    per_rank: dict[int, int] = {}
    keys = [k for k in md.state_dict_metadata if k.startswith("optim.")]
    for key in keys:
        for c in md.state_dict_metadata[key].chunks:
            rank = writer[md.storage_data[MetadataIndex(key, c.offsets)].relative_path]
            per_rank[rank] = per_rank.get(rank, 0) + math.prod(c.sizes)
    return per_rank, len(keys)


def _assert_each_rank_wrote_its_dp_shard(ckpt_dir, world: int) -> None:
    """With the distributed optimizer each data-parallel rank writes the optimizer state it holds, 1/DP of
    its TP-local tensors: 1/world of the whole, give or take megatron's buffer padding (at most 128 elements
    per tensor here; the few TP-replicated norms are de-duplicated). Whole tensors de-duplicated over the
    ranks, what a gather before the write gives, miss it by far more (16,512 of 869,504 elements per rank at
    DP=2 for this model)."""
    per_rank, n_keys = _optimizer_elements_per_rank(ckpt_dir)
    total = sum(per_rank.values())
    assert sorted(per_rank) == list(range(world)), per_rank
    for rank, n in per_rank.items():
        assert abs(n - total / world) <= 128 * n_keys, (rank, n, total / world, per_rank)


@pytest.mark.slow
def test_distributed_optimizer_writes_its_shards_and_they_reshard_exactly(distopt_run, tiny_shards,
                                                                          tmp_path):
    """Each data-parallel rank writes only its own shard of the optimizer state (nothing gathered); loaded
    under DP=1 without the distributed optimizer and saved again, then loaded under TP=2 x DP=2 with it and
    saved again, every tensor (weights, Adam moments) comes back bit-identical, and the TP=2 x DP=2 ranks each
    wrote their quarter."""
    import torch

    from pretrain.checkpoint_reader import CheckpointReader
    from tests.conftest import ROOT

    src = distopt_run / "checkpoints" / "iter_0000010"
    _assert_each_rank_wrote_its_dp_shard(src, world=2)
    hops = [(1, "dp1", ["model=tiny"]),
            (4, "tp2_dp2", ["model=tiny", "parallel.tp=2", "parallel.distributed_optimizer=true"])]
    cur, want = src, CheckpointReader.open(src)
    for nproc, name, overrides in hops:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               "-m", "tests.pretrain.reshard_checkpoint", str(cur), str(tmp_path / name), *overrides]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))
        assert proc.returncode == 0, proc.stderr[-4000:]
        cur = tmp_path / name / "iter_0000010"
        got = CheckpointReader.open(cur)
        keys = want.model_keys() + want.optimizer_keys()
        assert got.model_keys() + got.optimizer_keys() == keys and len(want.optimizer_keys()) > 0
        differ = [k for k in keys if not torch.equal(want[k], got[k])]
        assert not differ, f"{name}: {differ[:5]}"
    _assert_each_rank_wrote_its_dp_shard(cur, world=4)


@pytest.mark.slow
def test_resume_with_distributed_optimizer_across_dp_sizes(distopt_run, uninterrupted, tiny_shards, tmp_path):
    """Saved under DP=2 with the distributed optimizer (steps 1-10), resumed under DP=1 without it (11-15),
    then under DP=2 with it again (16-20): the losses follow the uninterrupted DP=2 run (to the reduction
    order of a different DP size)."""
    shutil.copytree(distopt_run, tmp_path, dirs_exist_ok=True)
    args = [*COMMON, *tiny_shards, f"run.dir={tmp_path}"]
    second = run_trainer(1, [*args, "train.exit_interval=15"])
    _stopped_at_exit_interval(second, tmp_path)
    assert "resumed from" in second.stdout and "step 10" in second.stdout
    third = run_trainer(2, [*args, "parallel.distributed_optimizer=true"])
    assert third.returncode == 0, third.stderr[-4000:]
    assert "step 15" in third.stdout.split("resumed from", 1)[1].splitlines()[0]
    ref, got = _losses(uninterrupted), _losses(tmp_path)
    assert sorted(got) == list(range(1, 21))
    for step in range(11, 21):
        assert got[step][0] == pytest.approx(ref[step][0], rel=1e-5), f"step {step}"


TIED = [*COMMON, "model.untie_embeddings=false"]


@pytest.mark.slow
@pytest.mark.parametrize("before,after", [(1, 2), (2, 1)], ids=["pp1_to_pp2", "pp2_to_pp1"])
def test_tied_embeddings_reshard_between_pp1_and_pp2(tiny_shards, tmp_path_factory, before, after):
    ref_dir = tmp_path_factory.mktemp("tied_ref")
    ref = run_trainer(1, [*TIED, *tiny_shards, f"run.dir={ref_dir}"])
    assert ref.returncode == 0, ref.stderr[-4000:]
    run_dir = tmp_path_factory.mktemp("tied")
    first = run_trainer(before, [*TIED, *tiny_shards, f"run.dir={run_dir}", f"parallel.pp={before}",
                                 "train.exit_interval=10"])
    _stopped_at_exit_interval(first, run_dir)
    second = run_trainer(after, [*TIED, *tiny_shards, f"run.dir={run_dir}", f"parallel.pp={after}"])
    assert second.returncode == 0, second.stderr[-4000:]
    want, got = _losses(ref_dir), _losses(run_dir)
    for step in range(1, 21):
        assert got[step][0] == pytest.approx(want[step][0], rel=1e-4), f"step {step}"


@pytest.mark.slow
def test_resume_restores_a_group_step_optimizer(tiny_shards, tmp_path_factory):
    """apex's and Transformer Engine's FusedAdam (megatron's first choice when installed) keep Adam's step in
    the param group, not in each parameter's state. A resume must restore it there, or Adam's bias correction
    restarts and the resumed losses differ."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    def train(run_dir, *extra):
        cmd = [sys.executable, "-m", "tests.pretrain.group_step_adam", *COMMON, *tiny_shards,
               f"run.dir={run_dir}", "train.iters=12", "train.eval_interval=6", *extra]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})

    ref_dir, run_dir = tmp_path_factory.mktemp("gs_ref"), tmp_path_factory.mktemp("gs")
    ref = train(ref_dir)
    assert ref.returncode == 0 and "GroupStepAdamW" in ref.stdout, ref.stderr[-4000:]
    first = train(run_dir, "train.exit_interval=6")
    _stopped_at_exit_interval(first, run_dir)
    meta = json.loads((run_dir / "checkpoints" / "iter_0000006" / "meta.json").read_text())
    assert meta["optimizer_step"] == 6
    second = train(run_dir)
    assert second.returncode == 0, second.stderr[-4000:]
    want, got = _losses(ref_dir), _losses(run_dir)
    for step in range(7, 13):
        assert got[step] == want[step], f"step {step}: resumed {got[step]} vs uninterrupted {want[step]}"
