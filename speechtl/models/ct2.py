"""Read CTranslate2 (faster-whisper) Whisper directories and turn them into transformers checkpoints.

CTranslate2 stores every weight in one ``model.bin`` (binary format version 6: a header, then
``name, rank, shape, dtype, bytes`` per variable, then aliases; see ctranslate2's
``specs/model_spec.py``). Attention projections are fused there (``linear_0`` = q|k|v in self
attention, k|v in cross attention); we split them back and give ``k_proj`` no bias, as Whisper has
none. Quantised (int8/int16) weights are dequantised with their ``weight_scale``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from pathlib import Path

import numpy as np

from speechtl.errors import SpeechtlError

LOG = logging.getLogger("speechtl.models.ct2")

# ctranslate2::DataType enum values.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5


class CT2FormatError(SpeechtlError):
    pass


def is_ct2_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / "model.bin").is_file() and not (p / "model.safetensors").is_file()


def read_model_bin(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """Return (spec name, {variable: array}) with aliases resolved to the arrays they name."""
    path = Path(path)
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals[0]

    def string() -> str:
        nonlocal pos
        n = take("H")
        s = data[pos:pos + n - 1].decode("utf-8")
        pos += n
        return s

    version = take("I")
    if version != 6:
        raise CT2FormatError(f"{path}: CTranslate2 binary version {version} is not supported (expected 6)")
    spec = string()
    take("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype_id = take("B")
        nbytes = take("I")
        raw = data[pos:pos + nbytes]
        pos += nbytes
        if dtype_id == _BF16:
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype_id in _DTYPES:
            arr = np.frombuffer(raw, dtype=_DTYPES[dtype_id])
        else:
            raise CT2FormatError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
        variables[name] = arr.reshape(shape) if shape else arr.reshape(())
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return spec, variables


def _weight(v: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    w = v[f"{prefix}/weight"]
    scale = v.get(f"{prefix}/weight_scale")
    if w.dtype in (np.int8, np.int16):
        if scale is None:
            raise CT2FormatError(f"{prefix}: quantised weight without weight_scale")
        w = w.astype(np.float32) / np.asarray(scale, dtype=np.float32).reshape(-1, *([1] * (w.ndim - 1)))
    return w.astype(np.float32)


def _linear(v, src: str, dst: str, out: dict, bias: bool = True) -> None:
    out[f"{dst}.weight"] = _weight(v, src)
    if bias:
        out[f"{dst}.bias"] = v[f"{src}/bias"].astype(np.float32)


def _norm(v, src: str, dst: str, out: dict) -> None:
    out[f"{dst}.weight"] = v[f"{src}/gamma"].astype(np.float32)
    out[f"{dst}.bias"] = v[f"{src}/beta"].astype(np.float32)


def _split_fused(v, src: str, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    w, b = _weight(v, src), v[f"{src}/bias"].astype(np.float32)
    return np.split(w, n, axis=0), np.split(b, n, axis=0)


def _attention(v, src: str, dst: str, out: dict, names: tuple[str, ...], fused: str) -> None:
    """Map a fused CT2 projection (``fused``) onto separate q/k/v projections of transformers."""
    ws, bs = _split_fused(v, f"{src}/{fused}", len(names))
    for name, w, b in zip(names, ws, bs, strict=True):
        out[f"{dst}.{name}.weight"] = w
        if name != "k_proj":
            out[f"{dst}.{name}.bias"] = b
        elif np.abs(b).max() > 0:
            raise CT2FormatError(f"{src}: Whisper's key projection has no bias, but CT2 stores a non-zero one")


def whisper_state_dict(v: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Translate a WhisperSpec's variables into a transformers state dict and config sizes."""
    sd: dict[str, np.ndarray] = {}
    enc_layers = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("self_attention/linear_1/bias"))
    dec_layers = sum(1 for k in v if k.startswith("decoder/layer_") and k.endswith("self_attention/linear_1/bias"))
    for side in ("encoder", "decoder"):
        _norm(v, f"{side}/layer_norm", f"model.{side}.layer_norm", sd)
        sd[f"model.{side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"].astype(np.float32)
    for i in range(2):
        _linear(v, f"encoder/conv{i + 1}", f"model.encoder.conv{i + 1}", sd)
    for i in range(enc_layers):
        s, d = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        _attention(v, f"{s}/self_attention", f"{d}.self_attn", sd, ("q_proj", "k_proj", "v_proj"), "linear_0")
        _linear(v, f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj", sd)
        _norm(v, f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm", sd)
        _linear(v, f"{s}/ffn/linear_0", f"{d}.fc1", sd)
        _linear(v, f"{s}/ffn/linear_1", f"{d}.fc2", sd)
        _norm(v, f"{s}/ffn/layer_norm", f"{d}.final_layer_norm", sd)
    sd["model.decoder.embed_tokens.weight"] = _weight(v, "decoder/embeddings")
    for i in range(dec_layers):
        s, d = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _attention(v, f"{s}/self_attention", f"{d}.self_attn", sd, ("q_proj", "k_proj", "v_proj"), "linear_0")
        _linear(v, f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj", sd)
        _norm(v, f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm", sd)
        _linear(v, f"{s}/attention/linear_0", f"{d}.encoder_attn.q_proj", sd)
        _attention(v, f"{s}/attention", f"{d}.encoder_attn", sd, ("k_proj", "v_proj"), "linear_1")
        _linear(v, f"{s}/attention/linear_2", f"{d}.encoder_attn.out_proj", sd)
        _norm(v, f"{s}/attention/layer_norm", f"{d}.encoder_attn_layer_norm", sd)
        _linear(v, f"{s}/ffn/linear_0", f"{d}.fc1", sd)
        _linear(v, f"{s}/ffn/linear_1", f"{d}.fc2", sd)
        _norm(v, f"{s}/ffn/layer_norm", f"{d}.final_layer_norm", sd)
    vocab, d_model = sd["model.decoder.embed_tokens.weight"].shape
    sizes = {
        "vocab_size": int(vocab), "d_model": int(d_model),
        "num_mel_bins": int(sd["model.encoder.conv1.weight"].shape[1]),
        "encoder_layers": enc_layers, "decoder_layers": dec_layers,
        "encoder_attention_heads": int(v["encoder/num_heads"]), "decoder_attention_heads": int(v["decoder/num_heads"]),
        "encoder_ffn_dim": int(sd["model.encoder.layers.0.fc1.weight"].shape[0]),
        "decoder_ffn_dim": int(sd["model.decoder.layers.0.fc1.weight"].shape[0]),
        "max_source_positions": int(sd["model.encoder.embed_positions.weight"].shape[0]),
        "max_target_positions": int(sd["model.decoder.embed_positions.weight"].shape[0]),
    }
    return sd, sizes


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def convert_ct2_whisper(ct2_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a transformers Whisper checkpoint (model, tokenizer, feature extractor, generation config)."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from speechtl.io import atomic_dir, write_json
    from speechtl.models.whisper import configure_generation, whisper_config, whisper_tokenizer

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    spec, variables = read_model_bin(ct2_dir / "model.bin")
    if spec != "WhisperSpec":
        raise CT2FormatError(f"{ct2_dir}: CTranslate2 model is a {spec}, not a Whisper model")
    if not (ct2_dir / "tokenizer.json").is_file():
        raise CT2FormatError(f"{ct2_dir}: tokenizer.json is missing; convert the model with "
                             "--copy_files tokenizer.json preprocessor_config.json")
    ct2_config = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").is_file() else {}
    sd, sizes = whisper_state_dict(variables)
    tokenizer = whisper_tokenizer(ct2_dir / "tokenizer.json")
    config = whisper_config(tokenizer, **sizes)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in sd.items()}
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected or [m for m in missing if m != "proj_out.weight"]:
        raise CT2FormatError(f"{ct2_dir}: weights don't match Whisper: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    configure_generation(model, tokenizer, suppress_tokens=ct2_config.get("suppress_ids", []),
                         begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
                         alignment_heads=ct2_config.get("alignment_heads"),
                         # English-only checkpoints list language ids too, but their vocabulary is one short
                         lang_ids=ct2_config.get("lang_ids", []) if sizes["vocab_size"] >= 51865 else [])
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=sizes["num_mel_bins"]).save_pretrained(tmp)
        write_json(tmp / "speechtl_source.json", {"converted_from": str(ct2_dir.resolve()), "format": "ctranslate2",
                                                  "model_bin_sha256": file_sha256(ct2_dir / "model.bin")})
    LOG.info("converted CTranslate2 Whisper %s -> transformers checkpoint %s", ct2_dir, out_dir)
    return out_dir


def cache_root() -> Path:
    return Path(os.environ.get("SPEECHTL_CACHE", Path.home() / ".cache" / "speechtl"))


def cached_conversion(ct2_dir: str | os.PathLike) -> Path:
    """Convert once per distinct ``model.bin`` (keyed by its SHA-256) and reuse the result."""
    ct2_dir = Path(ct2_dir)
    digest = file_sha256(ct2_dir / "model.bin")[:16]
    out = cache_root() / "ct2-converted" / digest
    if (out / "config.json").is_file():
        LOG.info("using cached conversion of %s at %s", ct2_dir, out)
        return out
    return convert_ct2_whisper(ct2_dir, out)
