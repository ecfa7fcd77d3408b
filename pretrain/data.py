"""Token data for the trainer: megatron-core's BlendedMegatronDatasetBuilder over .bin/.idx shards.

The data position is one number, the global count of consumed samples, so it means the same thing under any
parallel layout: global batch k is samples [k*gbs, (k+1)*gbs) of the (blended, shuffled) training dataset, and
data-parallel rank d takes the d-th contiguous slice of it, cut into micro-batches. The validation set is a fixed
set of `eval_iters` global batches, evaluated the same way each time, so validation losses are comparable across
steps and runs.

With several sources in data.paths (and train.eval_per_source), each source also gets its own validation set:
a GPTDataset over that prefix's validation documents, cut with the same data.split as the blend (megatron splits
each shard by document), so it holds none of the documents the run trains on, and `eval_iters` global batches
of it are evaluated every time.
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field, replace
import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

from data_pipeline.samples import file_sha256
from pretrain.config import PretrainConfig, parse_blend, source_names, train_iters


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
    # source name -> that source's own validation set (empty with one source or train.eval_per_source=false)
    valid_by_source: dict[str, GPTDataset] = field(default_factory=dict)


def build_datasets(cfg: PretrainConfig, cache_dir: str) -> Datasets:
    """Build the train/validation datasets; call on every rank (rank 0 builds the index cache first)."""
    prefixes, weights = parse_blend(cfg.data.paths)
    valid_prefixes, valid_weights = parse_blend(cfg.data.valid_paths)
    gbs = cfg.train.global_batch_size
    n_train = train_iters(cfg) * gbs
    n_valid = cfg.train.eval_iters * gbs if cfg.train.eval_iters > 0 else 0
    ds_cfg = GPTDatasetConfig(
        random_seed=cfg.run.seed,
        sequence_length=cfg.model.seq_length,
        # a validation blend of its own (data.valid_paths / data.blend): each blend is its split, whole
        blend=None if valid_prefixes else (prefixes, weights),
        split=None if valid_prefixes else cfg.data.split,
        blend_per_split=[(prefixes, weights), (valid_prefixes, valid_weights), None] if valid_prefixes else None,
        path_to_cache=cache_dir,
        tokenizer=SentencePieceIds(cfg.data.tokenizer_model),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
        mmap_bin_files=True,
    )
    # the test split is not used; with weights megatron needs a size for every split (None asserts), so 0
    train, valid, _ = BlendedMegatronDatasetBuilder(
        GPTDataset, [n_train, n_valid, 0 if weights else None], lambda: True, ds_cfg).build()
    if train is None or len(train) < n_train:
        raise ValueError(f"the training split yields {0 if train is None else len(train)} samples, "
                         f"{n_train} needed; check data.paths and data.split")
    by_source = {}
    if n_valid and cfg.train.eval_per_source and valid_prefixes and len(valid_prefixes) > 1:
        names = [Path(p).name.removesuffix("_text_document") for p in valid_prefixes]
        for name, prefix in zip(names, valid_prefixes):
            _, by_source[name], _ = BlendedMegatronDatasetBuilder(
                GPTDataset, [None, n_valid, None], lambda: True,
                replace(ds_cfg, blend_per_split=[None, ([prefix], None), None])).build()
    elif n_valid and cfg.train.eval_per_source and len(prefixes) > 1:
        for name, prefix in zip(source_names(cfg), prefixes):
            # one prefix, no weights: megatron builds plain GPTDatasets with this prefix's split of documents,
            # the same document ranges as the blend's mid-level datasets (the split depends only on data.split
            # and the shard's document count)
            _, by_source[name], _ = BlendedMegatronDatasetBuilder(
                GPTDataset, [None, n_valid, None], lambda: True, replace(ds_cfg, blend=([prefix], None))).build()
    return Datasets(train, valid if n_valid else None, by_source)


def load_microbatches(dataset, start: int, cfg: PretrainConfig, dp_rank: int, dp_size: int,
                      device: torch.device) -> tuple[list[dict], float]:
    """This data-parallel rank's micro-batches of the global batch that starts at sample `start`, and the
    seconds spent reading them (data wait)."""
    t0 = time.perf_counter()
    gbs, mbs = cfg.train.global_batch_size, cfg.train.micro_batch_size
    per_rank = gbs // dp_size
    first = start + dp_rank * per_rank
    batches = []
    for lo in range(first, first + per_rank, mbs):
        samples = [dataset[i % len(dataset)] for i in range(lo, lo + mbs)]
        batches.append({k: torch.stack([torch.as_tensor(s[k]) for s in samples]).to(device, non_blocking=True)
                        for k in ("tokens", "labels", "loss_mask", "position_ids")})
    return batches, time.perf_counter() - t0
