"""Train a lossless sentencepiece BPE tokenizer for pre-training, and its Hugging Face tokenizer.json.

Lossless means decode(encode(text)) == text byte for byte. sentencepiece's defaults are not (NFKC, collapsed
whitespace, a dummy leading space); the settings below are, for any text without U+2581 ("▁", which
sentencepiece uses as its space symbol and decodes to a space):

  normalization_rule_name="identity"    no NFKC: "Ａ" and "①" stay themselves
  remove_extra_whitespaces=False        runs of spaces, tabs, "\\r\\n" survive
  add_dummy_prefix=False                no invented leading space
  byte_fallback=True                    any character outside the vocabulary becomes UTF-8 byte pieces, never <unk>
  allow_whitespace_only_pieces=True     "    " (code indentation) can be one piece
  split_digits=True                     numbers are spelled digit by digit

Which pieces the BPE may learn (``TokenizerTrainConfig``; encoding never splits the text, so these only shape
the vocabulary): by default pieces may span words and scripts (split_by_whitespace=False,
split_by_unicode_script=False: "▁of▁the", "(self", "):\n▁▁▁▁if" are possible pieces), digits stay one per piece,
at most 16 characters. Spanning words compresses held-out text better than a byte-level BPE of the same vocab
(README, "Tokenizer") but sentencepiece then keeps every sampled byte's pair positions: training needs about
SPAN_TRAIN_BYTES_PER_BYTE bytes of memory per sampled byte (measured 38-39), against ~13 on code with the old
word-bounded settings. So that mode samples 250 MB by default (1 GB when pieces stay inside words), and
``check_memory`` fails before training, naming train.sample_bytes, when the estimate does not fit.

Special ids: 0 <unk>, 1 <s> (bos), 2 </s> (eos = EOD, appended after every document by encode.py), 3 <pad>.
All four are control pieces: sentencepiece never produces them from text (a literal "</s>" is text).

The training sample (``draw_sample``): every document of every input gets a key, a keyed hash (blake2b, key
``seed``) of its source file name and its position in that file; the sample is the documents in increasing key
order, as many as fit in ``sample_bytes`` UTF-8 bytes (0: all). So each document has the same chance whatever
shard it is in, every shard contributes in proportion to its number of documents, one pass holds at most
``sample_bytes`` of text, and the sample depends only on the seed and the documents, not on the order of the
inputs or where they lie.

Newlines: each sampled document is cut into training units (``training_units``) at line ends, each unit at
most ``max_sentence_length`` bytes and keeping its "\\n" (a longer line is cut at a character boundary), so
sentencepiece sees "\\n" as a character: it is a piece of its own, and pieces such as ".\\n" or "\\n\\n" can
be learned (nothing is dropped for being too long).

Reproducible: the model bytes are a function of the documents, the config and ``num_threads`` (the same input
and config give the same .model; a different num_threads gives a different, equally good, model).
"""

from __future__ import annotations

import hashlib
import heapq
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import sentencepiece as spm

from data_pipeline.tokenizer.documents import ReadStats, iter_records

UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3
EOD_ID = EOS_ID

# Peak training memory per sampled UTF-8 byte when pieces may span words (split_by_whitespace=False): 37.6-39.1
# MB of RSS per MB sampled, the slopes from 16 to 64 and to 128 MB of distinct Python
# (tools/bench/tokenize_settings.py), rounded up. Every training unit is then one "word", so it does not depend on the text.
SPAN_TRAIN_BYTES_PER_BYTE = 40
SPAN_SAMPLE_BYTES = 250_000_000  # the default sample when pieces span words: ~10 GB of training memory
WORD_SAMPLE_BYTES = 1_000_000_000  # the default sample when pieces stay inside words (split_by_whitespace=True)


def default_sample_bytes(split_by_whitespace: bool) -> int:
    return WORD_SAMPLE_BYTES if split_by_whitespace else SPAN_SAMPLE_BYTES


@dataclass
class TokenizerTrainConfig:
    vocab_size: int = 32000
    model_type: str = "bpe"
    character_coverage: float = 0.9995  # the rarest 0.05% of characters are left to byte fallback
    # UTF-8 bytes of documents sampled for training (0: every document); None: 250 MB when pieces span words
    # (split_by_whitespace=False, ~40 bytes of training memory per sampled byte), else 1 GB
    sample_bytes: Optional[int] = None
    max_sentence_length: int = 65536  # bytes per training unit (documents are cut at line ends to fit)
    num_threads: int = 8  # part of the result: keep it fixed to reproduce a model
    seed: int = 1234  # the sample's hash key
    max_sample_docs: int = 200  # training documents kept to report bytes/token after training
    # which pieces the BPE may learn (sentencepiece's names; encoding never splits the text, see hf.py).
    # The settings before pieces could span words: split_by_unicode_script=true split_by_whitespace=true
    split_digits: bool = True  # every digit its own piece (as Llama); False: digit runs such as "2024" may merge
    max_piece_length: int = 16  # characters per piece (sentencepiece's max_sentencepiece_length)
    split_by_unicode_script: bool = False  # True: a piece holds one script, so no "(self" or ".append"
    split_by_number: bool = True  # False: digits may join letters ("utf8"; only with split_digits=False)
    split_by_whitespace: bool = False  # True: a space only starts a piece, so no "▁of▁the"; ~1/3 the memory
    check_memory: bool = True  # pieces spanning words: fail before training if the estimate exceeds free memory

    def resolved_sample_bytes(self) -> int:
        return default_sample_bytes(self.split_by_whitespace) if self.sample_bytes is None else self.sample_bytes

    def validate(self) -> None:
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size={self.vocab_size} is too small: byte fallback alone needs 256 pieces + "
                             "4 special ids; use >= 300 (1000 or more in practice)")
        if self.model_type not in ("bpe", "unigram"):
            raise ValueError(f"model_type={self.model_type!r}: use 'bpe' (or 'unigram')")
        if self.num_threads < 1:
            raise ValueError(f"num_threads={self.num_threads} must be >= 1")
        if self.sample_bytes is not None and self.sample_bytes < 0:
            raise ValueError(f"sample_bytes={self.sample_bytes} must be >= 0 (0: every document)")
        if not 1 <= self.max_piece_length <= 512:
            raise ValueError(f"max_piece_length={self.max_piece_length} must be in 1..512 (sentencepiece's limit)")
        if self.max_sentence_length < 16:
            raise ValueError(f"max_sentence_length={self.max_sentence_length} bytes is too short; use 4096 or more")


def sample_key(seed: int, source: str, position: int) -> int:
    """The document's place in the sample order: a 64-bit keyed hash of (source, position)."""
    h = hashlib.blake2b(f"{source}\0{position}".encode("utf-8", "surrogatepass"), digest_size=8,
                        key=seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little")


def draw_sample(records: Iterable[tuple[str, int, str]], sample_bytes: int, seed: int) -> list[str]:
    """The documents with the smallest sample keys whose total fits in sample_bytes (0: all), in key order.

    One pass; holds at most sample_bytes of text (plus one document). A document whose key is above that of
    one already dropped can never be in the sample and is not kept."""
    heap: list[tuple[int, int, str]] = []  # (-key, bytes, text): the largest key on top
    total, threshold = 0, 1 << 64
    for source, position, doc in records:
        key = sample_key(seed, source, position)
        if key >= threshold:
            continue
        size = len(doc.encode("utf-8"))
        heapq.heappush(heap, (-key, size, doc))
        total += size
        while sample_bytes and total > sample_bytes:
            neg_key, size, _ = heapq.heappop(heap)
            total -= size
            threshold = -neg_key
    return [doc for _, _, doc in sorted(heap, reverse=True)]


def training_units(doc: str, max_bytes: int) -> Iterator[str]:
    """doc cut into pieces of at most max_bytes UTF-8 bytes, after the last "\\n" that fits (each piece keeps
    its newlines); a line longer than max_bytes is cut at a character boundary. "".join(units) == doc."""
    data = doc.encode("utf-8")
    if len(data) <= max_bytes:
        yield doc
        return
    start = 0
    while len(data) - start > max_bytes:
        cut = data.rfind(b"\n", start, start + max_bytes) + 1
        if cut <= start:
            cut = start + max_bytes
            while data[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
                cut -= 1
        yield data[start:cut].decode("utf-8")
        start = cut
    yield data[start:].decode("utf-8")


def spm_options(config: TokenizerTrainConfig) -> dict:
    """sentencepiece trainer options: the lossless settings above; the sample is drawn before training."""
    return dict(vocab_size=config.vocab_size, model_type=config.model_type,
                character_coverage=config.character_coverage, input_sentence_size=0,
                max_sentence_length=config.max_sentence_length, num_threads=config.num_threads,
                normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
                byte_fallback=True, allow_whitespace_only_pieces=True, split_digits=config.split_digits,
                max_sentencepiece_length=config.max_piece_length,
                split_by_unicode_script=config.split_by_unicode_script, split_by_number=config.split_by_number,
                split_by_whitespace=config.split_by_whitespace,
                unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID, minloglevel=2)


def train_tokenizer(
    texts: Iterable[str] | Iterable[str | Path],
    vocab_size: int,
    output_prefix: str | Path,
    config: TokenizerTrainConfig | None = None,
    *,
    files: bool | None = None,
    txt_mode: str = "file",
    text_key: str = "text",
) -> Path:
    """Train on documents (strings) or on inputs (files, directories, sample names; see documents.py); write
    <output_prefix>.model, .vocab, .json and, for BPE, .tokenizer.json (Hugging Face, the same ids; hf.py).
    Returns the .model path.

    ``files=None`` guesses: Path objects, or a list whose items are all existing files, directories or sample
    names, are read as inputs; anything else is taken as the documents' text (source "", position = index).
    """
    config = config or TokenizerTrainConfig()
    config = TokenizerTrainConfig(**{**asdict(config), "vocab_size": vocab_size})
    config.validate()
    config.sample_bytes = config.resolved_sample_bytes()
    output_prefix = Path(output_prefix)
    output_prefix.parent.mkdir(parents=True, exist_ok=True)

    items = list(texts) if not isinstance(texts, Iterator) else texts
    read_stats = ReadStats()
    if files is None:
        files = isinstance(items, list) and bool(items) and all(_looks_like_input(x) for x in items)
    if files:
        records = iter_records(items, txt_mode, text_key, read_stats)
    else:
        records = (("", i, str(t)) for i, t in enumerate(items) if t)
    counts = {"input_documents": 0, "units": 0, "bytes": 0}

    def counted(records):
        for record in records:
            counts["input_documents"] += 1
            yield record

    sample = draw_sample(counted(records), config.sample_bytes, config.seed)

    def sentences() -> Iterator[str]:
        for doc in sample:
            for unit in training_units(doc, config.max_sentence_length):
                counts["units"] += 1
                counts["bytes"] += len(unit.encode("utf-8"))
                yield unit

    if not sample:
        raise ValueError("no training text: every input document was empty")
    if config.check_memory and not config.split_by_whitespace:
        check_training_memory(sum(len(d.encode("utf-8")) for d in sample), config)
    model = io.BytesIO()
    spm.set_random_generator_seed(config.seed)
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=sentences(), model_writer=model, **spm_options(config))
    except RuntimeError as exc:
        if "Vocabulary size is smaller than required_chars" in str(exc):
            chars = str(exc).split(" vs ")[-1].split(".")[0]
            raise ValueError(f"vocab_size={config.vocab_size} cannot hold the {chars} distinct characters that "
                             f"character_coverage={config.character_coverage} keeps in the vocabulary; raise "
                             "vocab_size or lower character_coverage (rarer characters then use byte fallback)") from None
        if "Vocabulary size too high" not in str(exc):
            raise
        raise ValueError(f"vocab_size={config.vocab_size} is more than {counts['bytes']} bytes of training text can "
                         f"fill ({str(exc).split('] ')[-1]}); lower train.vocab_size or give more text") from None
    model_bytes = model.getvalue()
    model_path = output_prefix.with_name(output_prefix.name + ".model")
    _write_atomic(model_path, model_bytes)

    from data_pipeline.tokenizer.hf import hf_tokenizer

    hf_path = output_prefix.with_name(output_prefix.name + ".tokenizer.json")
    if config.model_type == "bpe":  # (a unigram model gets no tokenizer.json)
        _write_atomic(hf_path, hf_tokenizer(model_bytes).to_str(pretty=True).encode("utf-8"))

    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    vocab = "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.vocab_size()))
    _write_atomic(output_prefix.with_name(output_prefix.name + ".vocab"), vocab.encode("utf-8"))
    report = sample[:config.max_sample_docs]
    report_tokens = sum(len(ids) for ids in sp.encode(report))
    report_bytes = sum(len(d.encode("utf-8")) for d in report)
    manifest = {
        "model": model_path.name,
        "hf_tokenizer": hf_path.name if config.model_type == "bpe" else None,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "vocab_size": sp.vocab_size(),
        "special_ids": {"unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID, "pad": PAD_ID, "eod": EOD_ID},
        "config": asdict(config),
        "input_documents": counts["input_documents"],
        "training_documents": len(sample),
        "training_units": counts["units"],
        "training_bytes": counts["bytes"],
        "skipped_corrupt_records": read_stats.skipped,
        "sample_bytes_per_token": round(report_bytes / report_tokens, 4) if report_tokens else None,
    }
    _write_atomic(output_prefix.with_name(output_prefix.name + ".json"),
                  (json.dumps(manifest, indent=2) + "\n").encode())
    return model_path


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, or less where a cgroup (v2 or v1, as Slurm sets for
    a job) limits it; None where neither can be read."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        cgroup = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        cgroup = []
    for line in cgroup:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":  # cgroup v2
            folder, limit_file, usage_file = Path("/sys/fs/cgroup" + rel), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):  # cgroup v1
            folder, limit_file, usage_file = (Path("/sys/fs/cgroup/memory" + rel), "memory.limit_in_bytes",
                                              "memory.usage_in_bytes")
        else:
            continue
        try:
            limit, usage = (folder / limit_file).read_text().strip(), int((folder / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or v1's huge number: no limit
            found.append(int(limit) - usage)
    return min(found) if found else None


def check_training_memory(sample_bytes: int, config: TokenizerTrainConfig, available: int | None = None) -> None:
    """Pieces spanning words: sentencepiece needs ~SPAN_TRAIN_BYTES_PER_BYTE per sampled byte; fail before
    training when that is more than this process may allocate."""
    available = available_memory() if available is None else available
    need = SPAN_TRAIN_BYTES_PER_BYTE * sample_bytes
    if available is None or need <= available:
        return
    fits = max(0, available) // SPAN_TRAIN_BYTES_PER_BYTE
    if fits >= 100:  # two significant digits, rounded down
        step = 10 ** (len(str(fits)) - 2)
        fits = fits // step * step
    lower = f"lower train.sample_bytes to {fits} or less, " if fits else ""
    raise ValueError(
        f"the training sample is {_size(sample_bytes)} and pieces that span words (split_by_whitespace=false) "
        f"need about {SPAN_TRAIN_BYTES_PER_BYTE} bytes of memory per sampled byte ({_size(need)}), but "
        f"{_size(available)} is available; {lower}or set train.split_by_whitespace=true (pieces inside words: "
        "about a third of the memory, 2-10% more tokens), or run where more memory is free "
        "(train.check_memory=false skips this check)")


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if abs(n) >= 1e9 else f"{n / 1e6:.1f} MB"


def _looks_like_input(item) -> bool:
    if isinstance(item, Path):
        return True
    from data_pipeline.samples import REGISTRY

    if not (isinstance(item, str) and "\n" not in item and len(item) < 4096):
        return False
    try:
        return item in REGISTRY or Path(item).is_file() or Path(item).is_dir()
    except OSError:  # a document's text, longer than a file name may be (ENAMETOOLONG)
        return False


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
