"""The sentencepiece BPE model as a Hugging Face ``tokenizers`` tokenizer that gives the same ids.

sentencepiece encodes by merging, again and again, the adjacent pair whose merged piece has the highest score
(leftmost first), over the whole text with " " written as "▁"; characters outside the vocabulary become
<0xXX> byte pieces. The same as a ``tokenizers`` BPE:

  normalizer     " " -> "▁" (nothing else: the model was trained with identity normalisation)
  pre-tokenizer  none: sentencepiece does not split the text before merging, so neither may we
  model          BPE, merges = every split of every normal piece into two normal pieces, ranked by the
                 merged piece's score (then id), byte_fallback=True
  decoder        "▁" -> " ", byte pieces -> bytes, fused

Control pieces (<unk> <s> </s> <pad>) are in the vocabulary but no merge makes them and they are not
"added tokens", so a literal "</s>" in text is text, as in sentencepiece (tokenizers would otherwise match
added special tokens in the text: its ``encode_special_tokens`` switch is not saved in tokenizer.json).
A model with user-defined pieces (train.py makes none) is refused rather than converted untested.
"""

from __future__ import annotations

from sentencepiece import sentencepiece_model_pb2
from tokenizers import Tokenizer, decoders, normalizers
from tokenizers.models import BPE

_NORMAL, _USER_DEFINED = 1, 4  # sentencepiece ModelProto.SentencePiece.Type


def hf_tokenizer(model_proto: bytes) -> Tokenizer:
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_proto)
    if proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.BPE:
        raise ValueError("only sentencepiece BPE models convert to a BPE tokenizer.json; train with model_type=bpe")
    if any(p.type == _USER_DEFINED for p in proto.pieces):
        raise ValueError("the model has user-defined pieces, which train.py never makes; convert only models "
                         "trained by data_pipeline.tokenizer.train")
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    normal = {p.piece: (-p.score, i) for i, p in enumerate(proto.pieces) if p.type == _NORMAL}
    merges = sorted(
        (normal[piece], left, right)
        for piece in normal
        for left, right in ((piece[:k], piece[k:]) for k in range(1, len(piece)))
        if left in normal and right in normal
    )
    tok = Tokenizer(BPE(vocab=vocab, merges=[(left, right) for _, left, right in merges], byte_fallback=True,
                        unk_token=proto.pieces[proto.trainer_spec.unk_id].piece, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok
