"""Tokenizer stage: lossless sentencepiece BPE training and Megatron .bin/.idx encoding.

    python -m data_pipeline.tokenizer train input.paths=[enwiki] train.vocab_size=4096 output.prefix=DIR/tokenizer
    python -m data_pipeline.tokenizer encode tokenizer=DIR/tokenizer.model input.paths=[enwiki] output.prefix=DIR/enwiki

Names are imported on first use: encode/validate import megatron-core (seconds), training does not.
"""

import importlib

_EXPORTS = {
    "EOD_ID": "train",
    "TokenizerTrainConfig": "train",
    "train_tokenizer": "train",
    "encode_documents": "encode",
    "IndexedDatasetError": "validate",
    "validate_indexed_dataset": "validate",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
