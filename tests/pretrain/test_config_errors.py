"""Invalid configs fail before any process group starts, with the key and the fix in the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrain.config import ConfigError, load, validate
from tests.conftest import run_trainer


def cfg_with(tiny_shards, *overrides):
    return load(["model=tiny", *tiny_shards, *overrides])


@pytest.mark.parametrize("overrides, world, key, words", [
    (["parallel.tp=3"], 3, "parallel.tp", "does not divide model.num_attention_heads"),
    (["parallel.tp=2"], 3, "parallel.tp", "does not divide the world size"),
    (["parallel.pp=3"], 3, "parallel.pp", "does not divide model.num_layers"),
    (["parallel.pp=2", "parallel.vpp=4"], 2, "parallel.pp", "pp x vpp = 2 x 4"),
    (["train.global_batch_size=10", "train.micro_batch_size=4"], 1, "train.global_batch_size",
     "not divisible by micro_batch_size x data-parallel size"),
    (["train.global_batch_size=16", "train.micro_batch_size=4"], 3, "train.global_batch_size",
     "micro_batch_size x data-parallel size = 4 x 3"),
    (["data.split='100,0,0'"], 1, "data.split", "leaves the validation set empty"),
    (["data.split='0,100,0'"], 1, "data.split", "leaves no training data"),
    (["model.vocab_size=256"], 1, "model.vocab_size", "more than the embedding"),
    (["parallel.sequence_parallel=true"], 1, "parallel.sequence_parallel", "needs tensor parallelism"),
    (["optim.decay=exp"], 1, "optim.decay", "expected one of [cosine, wsd, linear, constant]"),
    (["run.checkpoint_format=full", "run.async_save=true"], 1, "run.async_save",
     "needs run.checkpoint_format=dcp"),
    (["run.checkpoint_format=zip"], 1, "run.checkpoint_format", "expected one of [dcp, full]"),
])
def test_invalid_config_names_key_and_fix(tiny_shards, overrides, world, key, words):
    with pytest.raises(ConfigError) as err:
        validate(cfg_with(tiny_shards, *overrides), world)
    msg = str(err.value)
    assert msg.startswith(key + ":") and words in msg and "Fix:" in msg, msg


def test_missing_and_empty_data_paths(tiny_shards, tmp_path):
    with pytest.raises(ConfigError, match=r"data.paths: .*is missing.*Fix:"):
        validate(cfg_with(tiny_shards, f"data.paths=[{tmp_path}/nothing]"), 1)
    with pytest.raises(ConfigError, match=r"data.paths: no token shards given.*make quickstart"):
        validate(cfg_with(tiny_shards, "data.paths=[]"), 1)
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "empty.idx").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"data.paths: .*truncated"):
        validate(cfg_with(tiny_shards, f"data.paths=[{tmp_path}/empty]"), 1)


@pytest.mark.parametrize("suffix, cut", [(".bin", 100), (".idx", 8)])
def test_truncated_shard_detected(tiny_shards, tmp_path, suffix, cut):
    src = Path(tiny_shards[0].split("=[", 1)[1].rstrip("]"))
    for ext in (".bin", ".idx"):
        data = Path(str(src) + ext).read_bytes()
        if ext == suffix:
            data = data[:-cut]
        (tmp_path / ("shard" + ext)).write_bytes(data)
    with pytest.raises(ConfigError) as err:
        validate(cfg_with(tiny_shards, f"data.paths=[{tmp_path}/shard]"), 1)
    assert f"shard{suffix}" in str(err.value) and "truncated" in str(err.value)


def test_cli_fails_before_starting(tiny_shards, tmp_path):
    """From the command line: exit code 2, the message on stderr, no run directory created."""
    proc = run_trainer(1, ["model=tiny", *tiny_shards, "parallel.tp=3", f"run.dir={tmp_path}/run"])
    assert proc.returncode == 2
    assert "config error: parallel.tp:" in proc.stderr and "Fix:" in proc.stderr
    assert not (tmp_path / "run").exists()
    # a misspelt key or a value outside a choice: the same exit code (not requeued by slurm/pretrain.sbatch)
    proc = run_trainer(1, ["model=tiny", *tiny_shards, "train.no_such_key=1", f"run.dir={tmp_path}/run"])
    assert proc.returncode == 2, proc.stderr
    assert "config error: train.no_such_key: Key 'no_such_key' not in 'TrainConfig'. Fix:" in proc.stderr
    proc = run_trainer(1, ["model=tiny", *tiny_shards, "optim.decay=exp", f"run.dir={tmp_path}/run"])
    assert proc.returncode == 2 and "Fix: use one of cosine, wsd, linear, constant" in proc.stderr
    assert not (tmp_path / "run").exists()
