"""Sample from a trained checkpoint: `python -m pretrain.generate run.dir=runs/quickstart prompt="It was"`.

One process, CPU or GPU, any layout the checkpoint was saved under (pretrain.inference). Autoregressive decoding
with a KV cache (`use_cache=false` recomputes the whole sequence each step: same tokens, slower). Settings:
greedy (`temperature=0`), temperature, top-k, top-p (nucleus), min-p, repetition penalty, `max_new_tokens`,
stop at the end-of-document token, a seed, and batched prompts (left-padded, per-row positions).

    from pretrain.generate import Generator, SamplingConfig
    gen = Generator.from_checkpoint("runs/quickstart")
    for c in gen.generate(["It was", "The"], SamplingConfig(temperature=0.8, top_p=0.95, seed=1)):
        print(c.text)

Other keys: `prompts=[a,b]`, `num_samples=3`, `top_k=50`, `min_p=0.05`, `repetition_penalty=1.2`,
`stop_at_eod=false`, `seed=1`, `device=cpu|cuda`, `checkpoint=<iter dir>` (instead of run.dir).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from pretrain.inference import InferenceModel


class GenerateError(ValueError):
    """A bad generation argument; the message names it and the fix."""


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0: greedy (argmax)
    top_k: Optional[int] = None  # keep the k most likely tokens
    top_p: float = 1.0  # keep the smallest set of tokens whose probability mass reaches top_p
    min_p: float = 0.0  # keep tokens with probability >= min_p x the most likely token's
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the prompt or the output (CTRL)
    stop_at_eod: bool = True
    seed: int = 0

    def validate(self) -> None:
        def fail(key, problem, fix):
            raise GenerateError(f"{key}: {problem}. Fix: {fix}")
        if self.temperature < 0:
            fail("temperature", f"must be >= 0, got {self.temperature}", "use temperature=0 for greedy decoding "
                 "or a positive value (1.0 samples from the model's distribution)")
        if self.top_k is not None and self.top_k < 1:
            fail("top_k", f"must be >= 1, got {self.top_k}", "use top_k=null to disable it, or a positive integer")
        if not 0 < self.top_p <= 1:
            fail("top_p", f"must be in (0, 1], got {self.top_p}", "use top_p=1.0 to disable nucleus sampling, "
                 "or e.g. top_p=0.9")
        if not 0 <= self.min_p < 1:
            fail("min_p", f"must be in [0, 1), got {self.min_p}", "use min_p=0 to disable it, or e.g. 0.05")
        if self.repetition_penalty <= 0:
            fail("repetition_penalty", f"must be > 0, got {self.repetition_penalty}",
                 "use 1.0 for no penalty, > 1 to discourage repeats")
        if self.max_new_tokens < 1:
            fail("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}", "ask for at least one token")


# ----------------------------------------------------------------------------------------------------------
# The sampling maths, on logits [batch, vocab]

def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL (Keskar et al. 2019): a seen token's logit is divided by the penalty if positive, else multiplied."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Temperature, then top-k, top-p, min-p: removed tokens get -inf. Needs temperature > 0."""
    logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= cfg.top_p  # the mass before it already reaches p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if cfg.min_p > 0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < cfg.min_p * probs.max(dim=-1, keepdim=True).values, float("-inf"))
    return logits


def next_token_probs(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """The distribution the next token is drawn from (one-hot on the argmax for temperature 0)."""
    if cfg.temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return torch.softmax(filter_logits(logits, cfg), dim=-1)


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    if cfg.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits.float(), cfg), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ----------------------------------------------------------------------------------------------------------

@dataclass
class Completion:
    prompt: str
    text: str
    tokens: list[int]
    finish_reason: str  # "eod" | "length"


class Generator:
    """A model and its tokenizer; `generate` samples continuations of a batch of prompts."""

    def __init__(self, model: InferenceModel, tokenizer_model: str | Path):
        import sentencepiece as spm

        self.model = model
        self.sp = spm.SentencePieceProcessor(model_file=str(tokenizer_model))
        self.eod = self.sp.eos_id()
        self.text_vocab = self.sp.vocab_size()  # ids >= this are embedding padding: never sampled
        if self.text_vocab > model.vocab_size:
            raise GenerateError(f"tokenizer: {tokenizer_model} has {self.text_vocab} tokens, the model's embedding "
                                f"{model.vocab_size}. Fix: pass the tokenizer the model was trained with")

    @classmethod
    def from_checkpoint(cls, path, device=None, dtype=None, tokenizer_model=None) -> "Generator":
        from pretrain.checkpoint_reader import CheckpointReader

        reader = CheckpointReader.open(path)
        tok = tokenizer_model or reader.tokenizer_model
        if tok is None or not Path(tok).is_file():
            raise GenerateError(f"tokenizer: checkpoint {reader.dir} stores no tokenizer.model"
                                f"{f' and {tok} does not exist' if tok else ''}. Fix: pass tokenizer_model=<the "
                                "sentencepiece .model the run was trained with>")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
        model = InferenceModel(reader.model_config, reader.vocab_size, reader.model_state_dict(), device, dtype)
        return cls(model, tok)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    @torch.no_grad()
    def generate_ids(self, prompts: list[list[int]], cfg: SamplingConfig, use_cache: bool = True
                     ) -> list[tuple[list[int], str]]:
        """New token ids (without the stopping EOD) and the finish reason, per prompt."""
        cfg.validate()
        ctx = self.model.cfg.seq_length
        prompts = [list(p) if len(p) else [self.eod] for p in prompts]  # an empty prompt starts a document
        for i, p in enumerate(prompts):
            if len(p) > ctx:
                raise GenerateError(f"prompt: prompt {i} is {len(p)} tokens, longer than the model's context of "
                                    f"{ctx} (model.seq_length). Fix: shorten the prompt")
            if len(p) + cfg.max_new_tokens > ctx:
                raise GenerateError(f"max_new_tokens: prompt {i} ({len(p)} tokens) + max_new_tokens="
                                    f"{cfg.max_new_tokens} exceeds the model's context of {ctx}. Fix: use "
                                    f"max_new_tokens <= {ctx - len(p)} or a shorter prompt")
        dev = self.model.device
        B, L = len(prompts), max(len(p) for p in prompts)
        total = L + cfg.max_new_tokens
        tokens = torch.zeros(B, total, dtype=torch.long, device=dev)
        valid = torch.zeros(B, total, dtype=torch.bool, device=dev)
        pad = torch.tensor([L - len(p) for p in prompts], device=dev)
        for b, p in enumerate(prompts):
            tokens[b, L - len(p):L] = torch.tensor(p, device=dev)
            valid[b, L - len(p):] = True
        positions = (torch.arange(total, device=dev)[None] - pad[:, None]).clamp(min=0)
        seen = torch.zeros(B, self.model.vocab_size, dtype=torch.bool, device=dev)
        seen.scatter_(1, tokens[:, :L], valid[:, :L])
        gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        cache = self.model.new_cache(B, total) if use_cache else None
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        out = [[] for _ in range(B)]
        reasons = ["length"] * B
        cur = L
        logits = self.model(tokens[:, :L], positions[:, :L], valid, cache)[:, -1]
        for _ in range(cfg.max_new_tokens):
            logits[:, self.text_vocab:] = float("-inf")
            logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
            nxt = sample_next(logits, cfg, gen)
            for b in range(B):
                if done[b]:
                    continue
                t = int(nxt[b])
                if cfg.stop_at_eod and t == self.eod:
                    done[b], reasons[b] = True, "eod"
                else:
                    out[b].append(t)
            tokens[:, cur] = nxt
            seen[torch.arange(B, device=dev), nxt] = True
            cur += 1
            if bool(done.all()) or cur == total:
                break
            if use_cache:
                logits = self.model(tokens[:, cur - 1:cur], positions[:, cur - 1:cur], valid, cache)[:, -1]
            else:
                logits = self.model(tokens[:, :cur], positions[:, :cur], valid)[:, -1]
        return list(zip(out, reasons))

    def generate(self, prompts: list[str] | str, cfg: SamplingConfig | None = None, use_cache: bool = True
                 ) -> list[Completion]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        cfg = cfg or SamplingConfig()
        results = self.generate_ids([self.encode(p) for p in prompts], cfg, use_cache)
        return [Completion(p, self.decode(ids), ids, r) for p, (ids, r) in zip(prompts, results)]


# ----------------------------------------------------------------------------------------------------------
# CLI

@dataclass
class _Run:
    dir: Optional[str] = None


@dataclass
class GenerateCli:
    run: _Run = field(default_factory=_Run)
    checkpoint: Optional[str] = None
    tokenizer_model: Optional[str] = None
    prompt: Optional[str] = None
    prompts: list[str] = field(default_factory=list)
    num_samples: int = 1
    device: Optional[str] = None
    use_cache: bool = True
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


SAMPLING_KEYS = set(SamplingConfig.__dataclass_fields__)


def parse_cli(argv: list[str]) -> GenerateCli:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    # sampling keys are accepted at the top level: temperature=0.8 means sampling.temperature=0.8
    argv = [f"sampling.{a}" if a.split("=", 1)[0] in SAMPLING_KEYS else a for a in argv]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(GenerateCli), OmegaConf.from_dotlist(argv))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise GenerateError(f"{str(e).splitlines()[0]}. Fix: see `python -m pretrain.generate --help` for the keys")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        cli = parse_cli(argv)
        src = cli.checkpoint or cli.run.dir
        if src is None:
            raise GenerateError("run.dir: no checkpoint given. Fix: pass run.dir=<run directory> or "
                                "checkpoint=<checkpoints/iter_XXXXXXX>")
        prompts = ([cli.prompt] if cli.prompt is not None else []) + list(cli.prompts)
        if not prompts:
            raise GenerateError('prompt: no prompt given. Fix: pass prompt="..." or prompts=[...]')
        prompts = [p for p in prompts for _ in range(cli.num_samples)]
        gen = Generator.from_checkpoint(src, device=cli.device, tokenizer_model=cli.tokenizer_model)
        t0 = time.perf_counter()
        comps = gen.generate(prompts, cli.sampling, use_cache=cli.use_cache)
        dt = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - every failure is reported as one line
        from pretrain.checkpoint_reader import CheckpointError
        from pretrain.inference import ModelShapeError
        if not isinstance(e, (GenerateError, CheckpointError, ModelShapeError)):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    s = cli.sampling
    print(f"settings: temperature={s.temperature} top_k={s.top_k} top_p={s.top_p} min_p={s.min_p} "
          f"repetition_penalty={s.repetition_penalty} max_new_tokens={s.max_new_tokens} seed={s.seed} "
          f"stop_at_eod={s.stop_at_eod} cache={cli.use_cache} device={gen.model.device}")
    n = sum(len(c.tokens) for c in comps)
    for i, c in enumerate(comps):
        print(f"--- sample {i + 1} ({len(c.tokens)} tokens, {c.finish_reason})\n{c.prompt}{c.text}")
    print(f"--- {n} tokens in {dt:.2f} s ({n / dt:.1f} tokens/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
