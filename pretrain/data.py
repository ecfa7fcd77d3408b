"""Token data for the trainer: megatron-core's BlendedMegatronDatasetBuilder over .bin/.idx shards.

The data position is one number, the global count of consumed samples, so it means the same thing under any
parallel layout: global batch k is samples [k*gbs, (k+1)*gbs) of the (blended, shuffled) training dataset, and
data-parallel rank d takes the d-th contiguous slice of it, cut into micro-batches. The validation set is a fixed
set of `eval_iters` global batches, evaluated the same way each time, so validation losses are comparable across
steps and runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

from data_pipeline.samples import file_sha256
from pretrain.config import PretrainConfig, parse_blend, train_iters


class SentencePieceIds:
    """The part of a tokenizer megatron's GPTDataset reads: the EOD id and the vocabulary size."""

    def __init__(self, model_file: str):
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.vocab_size = sp.vocab_size()
        self.eod = sp.eos_id()
        self.pad = sp.pad_id() if sp.pad_id() >= 0 else self.eod
        # part of megatron's dataset cache key
        self.unique_identifiers = {"class": "SentencePiece", "model_sha256": file_sha256(Path(model_file))}


@dataclass
class Datasets:
    train: GPTDataset
    valid: GPTDataset | None


def build_datasets(cfg: PretrainConfig, cache_dir: str) -> Datasets:
    """Build the train/validation datasets; call on every rank (rank 0 builds the index cache first)."""
    prefixes, weights = parse_blend(cfg.data.paths)
    gbs = cfg.train.global_batch_size
    n_train = train_iters(cfg) * gbs
    n_valid = cfg.train.eval_iters * gbs if cfg.train.eval_iters > 0 else 0
    ds_cfg = GPTDatasetConfig(
        random_seed=cfg.run.seed,
        sequence_length=cfg.model.seq_length,
        blend=(prefixes, weights),
        split=cfg.data.split,
        path_to_cache=cache_dir,
        tokenizer=SentencePieceIds(cfg.data.tokenizer_model),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
        mmap_bin_files=True,
    )
    train, valid, _ = BlendedMegatronDatasetBuilder(
        GPTDataset, [n_train, n_valid, None], lambda: True, ds_cfg).build()
    if train is None or len(train) < n_train:
        raise ValueError(f"the training split yields {0 if train is None else len(train)} samples, "
                         f"{n_train} needed; check data.paths and data.split")
    return Datasets(train, valid if n_valid else None)


class MicroBatches:
    """Micro-batches of one global batch for this data-parallel rank, timed (data wait)."""

    def __init__(self, dataset, start: int, cfg: PretrainConfig, dp_rank: int, dp_size: int,
                 device: torch.device):
        gbs, mbs = cfg.train.global_batch_size, cfg.train.micro_batch_size
        per_rank = gbs // dp_size
        self.indices = np.arange(start + dp_rank * per_rank, start + (dp_rank + 1) * per_rank)
        self.mbs = mbs
        self.dataset = dataset
        self.device = device
        self.wait_s = 0.0
        self.num_microbatches = per_rank // mbs
        self._pos = 0

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self._pos >= len(self.indices):
            raise StopIteration
        t0 = time.perf_counter()
        idx = self.indices[self._pos:self._pos + self.mbs]
        self._pos += self.mbs
        samples = [self.dataset[int(i) % len(self.dataset)] for i in idx]
        batch = {k: torch.stack([torch.as_tensor(s[k]) for s in samples]).to(self.device, non_blocking=True)
                 for k in ("tokens", "labels", "loss_mask", "position_ids")}
        self.wait_s += time.perf_counter() - t0
        return batch
