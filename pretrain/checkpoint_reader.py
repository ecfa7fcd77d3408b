"""Read a trainer checkpoint on one process, with no process group: the public API for tools that use a
trained model (sampling, Hugging Face export, evaluation) and for `python -m pretrain.checkpoint inspect`.

    ckpt = CheckpointReader.open("runs/quickstart")      # a run dir, its checkpoints/ dir, or an iter_XXXXXXX dir
    ckpt.model_config                                     # pretrain.config.ModelConfig it was trained with
    ckpt.vocab_size, ckpt.iteration, ckpt.tokens
    ckpt.tokenizer_model                                  # Path of the sentencepiece model stored with it, or None
    state = ckpt.model_state_dict()                       # {global name: full tensor}, layout-independent

Tensors are whole (never TP/PP shards) and keyed by layout-independent global names
(`embedding.word_embeddings.weight`, `decoder.layers.<i>.self_attention.linear_qkv.weight`, ...,
`decoder.final_layernorm.weight`, `output_layer.weight` when the embeddings are untied). With tied embeddings
there is no `output_layer.weight`: the output layer is the embedding.

A checkpoint directory holds `meta.json` (format, iteration, data position, the layout it was saved under, the
model shape) and its tensor files. `full` format: meta.json also holds the index key -> file and the sha256 of
every file. `dcp` format (the default): torch.distributed.checkpoint's `.metadata` and `__<rank>_<n>.distcp`
files, and `sha256/rankNNNNN.json`, the sha256 of the files each rank wrote (meta.json holds those of the files
rank 0 adds: `.metadata`, the tokenizer).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from data_pipeline.samples import file_sha256

LATEST = "latest"
META = "meta.json"
TOKENIZER = "tokenizer.model"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message says which and why."""


def iter_dir_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def checksummed_files(ckpt_dir: Path, meta: dict) -> dict[str, str] | str:
    """{file relative to the checkpoint: sha256} for either format, or the reason it cannot be listed."""
    if meta.get("format") == "dcp":
        from pretrain.checkpoint_dcp import recorded_files

        return recorded_files(ckpt_dir, meta)
    return dict(meta.get("sha256", {}))


def verify(ckpt_dir: Path, part: tuple[int, int] = (0, 1)) -> str | None:
    """None if the checkpoint is complete and its checksums match, else the reason. part=(i, n) checks only
    files i, i+n, i+2n, ... (in name order), so n processes can share the work."""
    meta_path = Path(ckpt_dir) / META
    if not meta_path.is_file():
        return f"{META} missing (partial write)"
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        return f"{META} unreadable: {e}"
    files = checksummed_files(ckpt_dir, meta)
    if isinstance(files, str):
        return files
    i, n = part
    for fname in sorted(files)[i::n]:
        f = Path(ckpt_dir) / fname
        if not f.is_file():
            return f"{fname} missing"
        if file_sha256(f) != files[fname]:
            return f"{fname} checksum mismatch (truncated or corrupt)"
    return None


def find_resumable(ckpt_root: Path, part: tuple[int, int] = (0, 1),
                   agree=None) -> tuple[Path | None, list[str]]:
    """The newest verified checkpoint (latest first, then older ones) and warnings about skipped ones.
    Shared by n processes: each passes part=(i, n) and agree, a collective that turns this process's reason
    (or None) into the first reason any process found (pretrain.checkpoint.find_resumable_parallel)."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return None, []
    candidates = sorted((p for p in ckpt_root.glob("iter_*") if p.is_dir()), reverse=True)
    pointer = ckpt_root / LATEST
    if pointer.is_file():
        latest = ckpt_root / pointer.read_text().strip()
        candidates = [latest] + [c for c in candidates if c != latest]
    notes = []
    for cand in candidates:
        reason = verify(cand, part) if cand.is_dir() else "directory missing"
        if agree is not None:
            reason = agree(reason)
        if reason is None:
            if notes:
                notes[-1] += f"; resuming from {cand.name}"
            return cand, notes
        notes.append(f"checkpoint {cand.name} is corrupt ({reason})")
    if notes:
        notes[-1] += "; no usable checkpoint, starting from scratch"
    return None, notes


def resolve(path: Path) -> Path:
    """A run directory, its checkpoints/ directory or one iter_XXXXXXX directory -> the checkpoint directory
    (the newest verified one for the first two)."""
    path = Path(path)
    if (path / META).is_file():
        return path
    for root in (path, path / "checkpoints"):
        if (root / LATEST).is_file() or any(root.glob("iter_*")):
            found, notes = find_resumable(root)
            if found is None:
                raise CheckpointError(f"no usable checkpoint under {root}: {'; '.join(notes)}")
            return found
    raise CheckpointError(f"{path} is not a checkpoint: no {META}, no {LATEST} pointer and no iter_* directory. "
                          "Pass a run directory, its checkpoints/ directory or an iter_XXXXXXX directory")


class CheckpointReader:
    """Whole tensors of one checkpoint by global name: memory-mapped from its files (`full` format), or read
    one tensor at a time with torch.distributed.checkpoint on this process alone (`dcp` format)."""

    def __init__(self, ckpt_dir: Path, meta: dict):
        self.dir, self.meta = Path(ckpt_dir), meta
        self.format = meta.get("format", "full")
        self._open: dict[str, dict] = {}
        if self.format == "dcp":
            from torch.distributed.checkpoint import FileSystemReader

            self._dcp = FileSystemReader(str(self.dir)).read_metadata().state_dict_metadata
            self._keys = set(self._dcp)
        else:
            self.index: dict[str, str] = meta["index"]
            self._keys = set(self.index)

    @classmethod
    def open(cls, path: Path | str, verify_checksums: bool = True) -> "CheckpointReader":
        ckpt_dir = resolve(Path(path))
        if verify_checksums:
            reason = verify(ckpt_dir)
            if reason is not None:
                raise CheckpointError(f"checkpoint {ckpt_dir} is corrupt: {reason}")
        try:
            meta = json.loads((ckpt_dir / META).read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {ckpt_dir}: {META} unreadable ({e})") from e
        return cls(ckpt_dir, meta)

    # metadata
    @property
    def iteration(self) -> int:
        return int(self.meta["iteration"])

    @property
    def consumed_samples(self) -> int:
        return int(self.meta.get("consumed_samples", 0))

    @property
    def tokens(self) -> int:
        return int(self.meta.get("tokens", 0))

    @property
    def layout(self) -> dict:
        return dict(self.meta.get("layout", {}))

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def model_config(self):
        from pretrain.config import ModelConfig

        return ModelConfig(**self.meta["model"])

    @property
    def tokenizer_model(self) -> Path | None:
        path = self.dir / TOKENIZER
        return path if path.is_file() else None

    # tensors
    def model_keys(self) -> list[str]:
        return sorted(k for k in self._keys if not k.startswith("optim."))

    def optimizer_keys(self) -> list[str]:
        return sorted(k for k in self._keys if k.startswith("optim."))

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def tensor_info(self, key: str) -> tuple[tuple[int, ...], torch.dtype]:
        """A tensor's global shape and dtype (a dcp checkpoint answers from its metadata, reading no tensor)."""
        if self.format == "dcp":
            return tuple(self._dcp[key].size), self._dcp[key].properties.dtype
        t = self[key]
        return tuple(t.shape), t.dtype

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(f"checkpoint {self.dir} has no tensor {key!r}")
        if self.format == "dcp":
            import torch.distributed.checkpoint as dcp

            from pretrain.checkpoint_dcp import DirectReader

            md = self._dcp[key]
            out = {key: torch.empty(tuple(md.size), dtype=md.properties.dtype)}
            dcp.load(out, storage_reader=DirectReader(str(self.dir)), no_dist=True)
            return out[key]
        fname = self.index[key]
        if fname not in self._open:
            self._open[fname] = torch.load(self.dir / fname, mmap=True, weights_only=True, map_location="cpu")
        return self._open[fname][key]

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: self[k] for k in self.model_keys()}


def inspect(path: Path) -> str:
    """A human-readable listing of a checkpoint: status, position, layout, tensors, files."""
    ckpt_dir = resolve(Path(path))
    reason = verify(ckpt_dir)
    reader = CheckpointReader.open(ckpt_dir, verify_checksums=False)
    meta = reader.meta
    lines = [f"checkpoint: {ckpt_dir}",
             f"status: {'OK (all checksums match)' if reason is None else 'CORRUPT: ' + reason}",
             f"iteration: {reader.iteration}   consumed samples: {meta.get('consumed_samples')}   "
             f"tokens: {meta.get('tokens')}",
             f"saved under: {meta.get('layout')}"]
    n = 0
    model_keys = reader.model_keys()
    lines.append(f"model tensors ({len(model_keys)}):")
    for k in model_keys:
        shape, dtype = reader.tensor_info(k)
        n += math.prod(shape)
        lines.append(f"  {k:70s} {str(shape):>16s} {str(dtype).replace('torch.', '')}")
    lines.append(f"parameters: {n:,}")
    optim_keys = reader.optimizer_keys()
    kinds = sorted({k.split(".")[1] for k in optim_keys})
    lines.append(f"optimizer state: {len(optim_keys)} tensors ({', '.join(kinds)}), "
                 f"step {meta.get('optimizer_step', reader.iteration)}")
    lines.append(f"tokenizer: {reader.tokenizer_model or 'not stored'}")
    files = checksummed_files(ckpt_dir, meta)
    files = {} if isinstance(files, str) else files
    size = sum((ckpt_dir / f).stat().st_size for f in files if (ckpt_dir / f).is_file())
    lines.append(f"format: {reader.format}   files: {len(files)} ({size / 2**20:.1f} MiB)")
    return "\n".join(lines)
