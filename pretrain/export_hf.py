"""Hugging Face Llama export and import.

    python -m pretrain.export_hf CHECKPOINT OUT                 # run dir | checkpoints dir | iter dir -> HF dir
    python -m pretrain.export_hf --import HF_DIR RUN_DIR         # HF Llama -> RUN_DIR/checkpoints/iter_0000000

Export writes config.json (LlamaForCausalLM), model.safetensors (fp32), generation_config.json, and the tokenizer
as tokenizer.json + tokenizer_config.json (LlamaTokenizer, no added BOS, no prefix space: it encodes exactly like
the sentencepiece model) and the sentencepiece tokenizer.model itself.

Weight mapping. megatron's fused linear_qkv holds, per query group g, the rows [q heads of g, k_g, v_g]; HF has
separate q_proj (heads in order), k_proj, v_proj. linear_fc1 is [gate; up] -> gate_proj, up_proj. RoPE: megatron
(rotary_interleaved=False) rotates halves, `x * cos + rotate_half(x) * sin` with cos/sin of [freqs, freqs],
which is HF Llama's convention, so q/k rows need no permutation (the permutation in HF's own conversion script is
for Meta's interleaved checkpoints). Tied embeddings: tie_word_embeddings=true and no lm_head.

Import is the inverse: an HF Llama of a shape this trainer builds (SwiGLU, RMSNorm, no biases, plain RoPE)
becomes an initial checkpoint (iteration 0, zero Adam moments, optimizer step 0, data position 0) in the
trainer's on-disk format; `python -m pretrain run.dir=RUN_DIR <printed model.* overrides>` continues from it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from pretrain.config import ModelConfig
from pretrain.inference import check_state


class ExportError(ValueError):
    """Input that cannot be exported or imported; the message names it and the fix."""


def to_hf_state(state: dict[str, torch.Tensor], m: ModelConfig) -> dict[str, torch.Tensor]:
    nh, ng, hd = m.num_attention_heads, m.num_query_groups, m.head_dim
    per = nh // ng
    out = {"model.embed_tokens.weight": state["embedding.word_embeddings.weight"],
           "model.norm.weight": state["decoder.final_layernorm.weight"]}
    if m.untie_embeddings:
        out["lm_head.weight"] = state["output_layer.weight"]
    for i in range(m.num_layers):
        p, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        qkv = state[p + "self_attention.linear_qkv.weight"].reshape(ng, per + 2, hd, -1)
        out[h + "self_attn.q_proj.weight"] = qkv[:, :per].reshape(nh * hd, -1)
        out[h + "self_attn.k_proj.weight"] = qkv[:, per].reshape(ng * hd, -1)
        out[h + "self_attn.v_proj.weight"] = qkv[:, per + 1].reshape(ng * hd, -1)
        out[h + "self_attn.o_proj.weight"] = state[p + "self_attention.linear_proj.weight"]
        gate, up = state[p + "mlp.linear_fc1.weight"].chunk(2, dim=0)
        out[h + "mlp.gate_proj.weight"], out[h + "mlp.up_proj.weight"] = gate, up
        out[h + "mlp.down_proj.weight"] = state[p + "mlp.linear_fc2.weight"]
        out[h + "input_layernorm.weight"] = state[p + "input_layernorm.weight"]
        out[h + "post_attention_layernorm.weight"] = state[p + "pre_mlp_layernorm.weight"]
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in out.items()}


def from_hf_state(hf: dict[str, torch.Tensor], m: ModelConfig) -> dict[str, torch.Tensor]:
    nh, ng, hd = m.num_attention_heads, m.num_query_groups, m.head_dim
    per = nh // ng
    out = {"embedding.word_embeddings.weight": hf["model.embed_tokens.weight"],
           "decoder.final_layernorm.weight": hf["model.norm.weight"]}
    if m.untie_embeddings:
        out["output_layer.weight"] = hf["lm_head.weight"]
    for i in range(m.num_layers):
        p, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        q = hf[h + "self_attn.q_proj.weight"].reshape(ng, per, hd, -1)
        k = hf[h + "self_attn.k_proj.weight"].reshape(ng, 1, hd, -1)
        v = hf[h + "self_attn.v_proj.weight"].reshape(ng, 1, hd, -1)
        out[p + "self_attention.linear_qkv.weight"] = torch.cat([q, k, v], dim=1).reshape(-1, q.shape[-1])
        out[p + "self_attention.linear_proj.weight"] = hf[h + "self_attn.o_proj.weight"]
        out[p + "mlp.linear_fc1.weight"] = torch.cat([hf[h + "mlp.gate_proj.weight"], hf[h + "mlp.up_proj.weight"]])
        out[p + "mlp.linear_fc2.weight"] = hf[h + "mlp.down_proj.weight"]
        out[p + "input_layernorm.weight"] = hf[h + "input_layernorm.weight"]
        out[p + "pre_mlp_layernorm.weight"] = hf[h + "post_attention_layernorm.weight"]
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in out.items()}


def hf_config(m: ModelConfig, vocab_size: int, eod: int, bos: int, pad: int) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab_size,
            "hidden_size": m.hidden_size, "intermediate_size": m.ffn_hidden_size,
            "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_attention_heads,
            "num_key_value_heads": m.num_query_groups, "head_dim": m.head_dim, "hidden_act": "silu",
            "max_position_embeddings": m.seq_length, "rms_norm_eps": m.norm_eps, "rope_theta": float(m.rotary_base),
            "rope_scaling": None, "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
            "tie_word_embeddings": not m.untie_embeddings, "initializer_range": m.init_std,
            "bos_token_id": bos, "eos_token_id": eod, "pad_token_id": pad, "torch_dtype": "float32",
            "use_cache": True}


def model_config_from_hf(cfg: dict, name: str = "hf_import") -> ModelConfig:
    """The trainer's ModelConfig for an HF Llama config.json; refuses what the trainer cannot build."""
    def need(cond: bool, key: str, why: str) -> None:
        if not cond:
            raise ExportError(f"config.json {key}: {why}. Fix: only Llama-style checkpoints (SwiGLU, RMSNorm, no "
                              "biases, plain RoPE) can be imported")
    need(cfg.get("model_type") == "llama", "model_type", f"{cfg.get('model_type')!r} is not 'llama'")
    need(cfg.get("hidden_act", "silu") == "silu", "hidden_act", f"{cfg.get('hidden_act')!r} is not silu")
    need(not cfg.get("attention_bias") and not cfg.get("mlp_bias"), "attention_bias/mlp_bias", "biases are set")
    rs = cfg.get("rope_scaling") or (cfg.get("rope_parameters") or {})
    need(rs.get("rope_type", rs.get("type", "default")) == "default", "rope_scaling", f"{rs} is not plain RoPE")
    heads = cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // heads
    need(hd * heads == cfg["hidden_size"], "head_dim", f"{hd} x {heads} heads != hidden_size {cfg['hidden_size']}")
    theta = cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    return ModelConfig(name=name, num_layers=cfg["num_hidden_layers"], hidden_size=cfg["hidden_size"],
                       ffn_hidden_size=cfg["intermediate_size"], num_attention_heads=heads,
                       num_query_groups=cfg.get("num_key_value_heads") or heads,
                       seq_length=cfg["max_position_embeddings"], vocab_size=cfg["vocab_size"],
                       init_std=cfg.get("initializer_range", 0.02), rotary_base=int(theta),
                       norm_eps=cfg.get("rms_norm_eps", 1e-5),
                       untie_embeddings=not cfg.get("tie_word_embeddings", False))


def save_hf_tokenizer(tokenizer_model: Path, out: Path) -> None:
    from tokenizers.models import BPE
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    extracted = SentencePieceExtractor(str(tokenizer_model)).extract(BPE)
    tok = LlamaTokenizer(vocab=extracted["vocab"], merges=extracted["merges"], add_prefix_space=False,
                         legacy=False, add_bos_token=False, add_eos_token=False, pad_token="<pad>",
                         split_special_tokens=True)  # literal "</s>" in text is text, as in sentencepiece
    tok.save_pretrained(str(out))
    shutil.copyfile(tokenizer_model, out / "tokenizer.model")


def export(checkpoint: Path | str, out: Path | str) -> Path:
    from safetensors.torch import save_file
    import sentencepiece as spm

    from pretrain.checkpoint_reader import CheckpointReader

    reader = CheckpointReader.open(checkpoint)
    m, vocab = reader.model_config, reader.vocab_size
    state = reader.model_state_dict()
    check_state(state, m, vocab)
    tok = reader.tokenizer_model
    if tok is None:
        raise ExportError(f"tokenizer: checkpoint {reader.dir} stores no tokenizer.model. Fix: re-save it with a "
                          "trainer that stores the tokenizer, or copy the run's data.tokenizer_model into it as "
                          "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(tok))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(to_hf_state(state, m), str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = hf_config(m, vocab, sp.eos_id(), sp.bos_id(), sp.pad_id() if sp.pad_id() >= 0 else sp.eos_id())
    cfg["slurmtrain"] = {"checkpoint": str(reader.dir), "iteration": reader.iteration, "tokens": reader.tokens}
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": sp.bos_id(), "eos_token_id": sp.eos_id(), "pad_token_id": cfg["pad_token_id"],
         "do_sample": True, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 64}, indent=1))
    save_hf_tokenizer(tok, out)
    return out


# ----------------------------------------------------------------------------------------------------------
# Import: HF Llama -> an initial trainer checkpoint

def write_initial_checkpoint(run_dir: Path, state: dict[str, torch.Tensor], m: ModelConfig, vocab_size: int,
                             tokenizer_model: Path | None, source: str) -> Path:
    """Write `state` (global names, full tensors) as RUN_DIR/checkpoints/iter_0000000 in the format
    pretrain.checkpoint.load reads (the `full` format, whatever run.checkpoint_format the run then saves in):
    one tensors_rank00000.pt holding the weights and zero Adam moments
    (optim.exp_avg.<name>, optim.exp_avg_sq.<name>, fp32), meta.json with iteration 0, optimizer_step 0,
    consumed_samples 0, the model shape, the index and sha256 of every file; tokenizer.model beside it; the
    `latest` pointer. Written to a temporary directory and renamed, like the trainer's own checkpoints."""
    from data_pipeline.samples import file_sha256
    from pretrain.checkpoint_reader import LATEST, META, TOKENIZER, iter_dir_name

    check_state(state, m, vocab_size)
    root = Path(run_dir) / "checkpoints"
    name = iter_dir_name(0)
    tmp, final = root / f".tmp.{name}", root / name
    if final.exists():
        raise ExportError(f"RUN_DIR: {final} exists. Fix: import into a new run directory")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors = dict(state)
    for k, v in state.items():
        tensors[f"optim.exp_avg.{k}"] = torch.zeros_like(v, dtype=torch.float32)
        tensors[f"optim.exp_avg_sq.{k}"] = torch.zeros_like(v, dtype=torch.float32)
    fname = "tensors_rank00000.pt"
    torch.save(tensors, tmp / fname)
    files = [fname]
    if tokenizer_model is not None:
        shutil.copyfile(tokenizer_model, tmp / TOKENIZER)
        files.append(TOKENIZER)
    meta = {"format": "full", "iteration": 0, "optimizer_step": 0, "consumed_samples": 0, "tokens": 0,
            "layout": {"tp": 1, "pp": 1, "dp": 1, "vpp": None, "distributed_optimizer": False},
            "model": asdict(m), "vocab_size": vocab_size, "imported_from": source,
            "index": {k: fname for k in tensors}, "sha256": {f: file_sha256(tmp / f) for f in files}}
    (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, final)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(name + "\n")
    os.replace(pointer, root / LATEST)
    return final


def trainer_overrides(m: ModelConfig) -> list[str]:
    return [f"model.{k}={v}" for k, v in asdict(m).items() if k not in ("init_std",)]


def import_hf(hf_dir: Path | str, run_dir: Path | str, expect: ModelConfig | None = None) -> tuple[Path, list[str]]:
    """HF Llama directory -> initial checkpoint; returns it and the trainer overrides that build this shape.
    With `expect`, the HF shape must equal it (the error names the first model.* key that differs)."""
    from safetensors.torch import load_file

    hf_dir = Path(hf_dir)
    cfg_path = hf_dir / "config.json"
    if not cfg_path.is_file():
        raise ExportError(f"HF_DIR: {cfg_path} not found. Fix: pass a Hugging Face model directory")
    m = model_config_from_hf(json.loads(cfg_path.read_text()))
    if expect is not None:
        for k in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
                  "vocab_size", "untie_embeddings"):
            if getattr(expect, k) is not None and getattr(expect, k) != getattr(m, k):
                raise ExportError(f"model.{k}: the HF model has {getattr(m, k)}, the target config "
                                  f"{getattr(expect, k)}. Fix: set model.{k}={getattr(m, k)} (a model of another "
                                  "shape cannot be loaded)")
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"HF_DIR: no *.safetensors in {hf_dir}. Fix: save it with save_pretrained "
                          "(safe_serialization=True)")
    hf = {}
    for f in files:
        hf.update(load_file(str(f)))
    if not m.untie_embeddings:
        hf.pop("lm_head.weight", None)
    state = from_hf_state(hf, m)
    tok = hf_dir / "tokenizer.model"
    ckpt = write_initial_checkpoint(Path(run_dir), state, m, m.vocab_size, tok if tok.is_file() else None,
                                    str(hf_dir.resolve()))
    overrides = trainer_overrides(m)
    if tok.is_file():
        overrides.append(f"data.tokenizer_model={ckpt / 'tokenizer.model'}")
    return ckpt, overrides


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pretrain.export_hf", description=__doc__.split("\n\n")[0])
    ap.add_argument("--import", dest="do_import", action="store_true",
                    help="import: SRC is an HF Llama directory, DST a new run directory")
    ap.add_argument("src")
    ap.add_argument("dst")
    args = ap.parse_args(argv)
    from pretrain.checkpoint_reader import CheckpointError
    from pretrain.inference import ModelShapeError
    try:
        if args.do_import:
            ckpt, overrides = import_hf(args.src, args.dst)
            print(f"wrote {ckpt}\ncontinue pre-training with:\n  python -m pretrain run.dir={args.dst} "
                  + " ".join(overrides) + " data.paths=[...]")
        else:
            out = export(args.src, args.dst)
            print(f"wrote {out}: load with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}) and "
                  f"AutoTokenizer.from_pretrained({str(out)!r})")
    except (ExportError, CheckpointError, ModelShapeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
