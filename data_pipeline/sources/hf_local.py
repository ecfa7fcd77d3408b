"""A Hugging Face dataset on local disk: a ``save_to_disk`` folder, or local data files (json/parquet/csv/text).

Nothing is fetched from the hub: the path must exist on this machine. Rows are split between tasks by
contiguous ranges, so each task reads the same rows for the same task count.
"""

from __future__ import annotations

from pathlib import Path

from datatrove.pipeline.readers.base import BaseReader

from data_pipeline.sources.accounting import ReaderAccounting

_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text",
             ".arrow": "arrow"}


_COMPRESSED = (".gz", ".zst", ".bz2", ".xz")


def data_suffix(path: Path) -> str:
    """The data file's kind suffix, under a compression suffix: ``a.jsonl.gz`` -> ``.jsonl``."""
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSED:
        return suffixes[-2]
    return path.suffix


class LocalHFDatasetSource(ReaderAccounting, BaseReader):
    name = "🤗 Local HF dataset (accounted)"

    def __init__(self, path: str, split: str = "train", text_key: str = "text", id_key: str = "id",
                 limit: int = -1):
        super().__init__(limit=limit, text_key=text_key, id_key=id_key)
        self.path = path
        self.split = split
        if not Path(path).exists():
            raise FileNotFoundError(
                f"input.paths: {path} does not exist. The hf format reads a dataset saved on this machine "
                "(datasets' save_to_disk folder, or a folder of json/parquet/csv files); nothing is "
                "downloaded from the hub. Download it once with `datasets` and pass the local folder."
            )

    def _load(self):
        import datasets

        root = Path(self.path)
        if (root / "dataset_info.json").exists() or (root / "dataset_dict.json").exists():
            ds = datasets.load_from_disk(str(root))
            return ds[self.split] if isinstance(ds, datasets.DatasetDict) else ds
        files = sorted(str(p) for p in (root.rglob("*") if root.is_dir() else [root]) if data_suffix(p) in _BUILDERS)
        if not files:
            raise FileNotFoundError(f"{root}: no save_to_disk dataset and no data files ({sorted(_BUILDERS)}, "
                                    f"optionally compressed {sorted(_COMPRESSED)})")
        kinds = sorted({_BUILDERS[data_suffix(Path(f))] for f in files})
        if len(kinds) > 1:
            raise ValueError(f"{root}: data files of several kinds {kinds}; pass a folder holding one kind")
        builder = kinds[0]
        return datasets.load_dataset(builder, data_files=files, split="train")

    def position_file(self, source_file: str) -> str:
        return ""

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        ds = self._load()
        shard = ds.shard(num_shards=world_size, index=rank, contiguous=True)
        # datasets' contiguous shards: the first len % world_size shards hold one row more
        div, mod = divmod(len(ds), world_size)
        first = div * rank + min(rank, mod)
        for i, row in enumerate(shard):
            if self.limit != -1 and i >= self.limit:
                break
            text = row.get(self.text_key)
            self.count_in(len(text.encode()) if isinstance(text, str) else 0)
            document = self.document_from_row(dict(row), self.path, first + i)  # row number in the dataset
            if document is not None:
                self.stat_update("documents")
                self.update_doc_stats(document)
                yield document
