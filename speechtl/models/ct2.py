"""CTranslate2 (faster-whisper) Whisper directories: read them into transformers checkpoints, write them
from a loaded model, and decode with CTranslate2's runtime.

CTranslate2 stores every weight in one ``model.bin`` (binary format version 6: a header, then
``name, rank, shape, dtype, bytes`` per variable, then aliases; see ctranslate2's
``specs/model_spec.py``). Attention projections are fused there (``linear_0`` = q|k|v in self
attention, k|v in cross attention); we split them back and give ``k_proj`` no bias, as Whisper has
none. Quantised (int8/int16) weights are dequantised with their ``weight_scale``.

The other way, :func:`export_ct2` saves a model as a transformers checkpoint and hands it to
CTranslate2's own ``TransformersConverter`` (what faster-whisper's models are made with), so the
result loads in ``faster_whisper.WhisperModel(DIR)``. :class:`CT2Whisper` decodes with the runtime
behind the same interface as a :class:`~speechtl.models.base.SpeechModel`'s ``collate``/``transcribe``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.errors import SpeechtlError, UsageError
from speechtl.io import file_sha256

LOG = logging.getLogger("speechtl.models.ct2")

# ctranslate2::DataType enum values.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5

#: Weight types CTranslate2's converter writes (``quantization``); the runtime's ``compute_type`` may differ.
QUANTIZATIONS = ("float32", "float16", "bfloat16", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16")
#: Files faster-whisper reads beside ``model.bin``: the tokenizer and the feature extractor's settings.
COPIED_FILES = ("tokenizer.json", "preprocessor_config.json")
#: speechtl's card in an exported dir: where the model came from, and the settings CTranslate2's
#: config can't hold (the audio context the model was adapted at).
CARD = "speechtl_card.json"


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
    for key, value in card_settings(ct2_dir).items():  # e.g. the audio context it was adapted at
        setattr(config, key, value)
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


# -- writing: a loaded model as a CTranslate2 dir ----------------------------------------------------


def _settings_of(config) -> dict[str, Any]:
    """Model settings a CTranslate2 config has no field for: the audio context (``audio_context*`` keys)."""
    return {k: v for k, v in config.to_dict().items() if "audio_context" in k}


def card_settings(ct2_dir: str | os.PathLike) -> dict[str, Any]:
    """The model settings an exported dir's card recorded (empty for a dir speechtl didn't write)."""
    path = Path(ct2_dir) / CARD
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CT2FormatError(f"{path}: can't read the card: {e}") from e
    return dict(card.get("model_settings") or {})


def _whisper(model, what: str):
    from speechtl.models.whisper import WhisperASR

    if not isinstance(model, WhisperASR):
        raise CT2FormatError(f"{model.source}: {what} is for Whisper models; this is a {model.family} model "
                             "(faster-whisper and CTranslate2's Whisper runtime run Whisper only)")
    return model


def export_ct2(model, out_dir: str | os.PathLike, quantization: str = "float32",
               card: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` (a Whisper :class:`SpeechModel`, adapters merged) as a CTranslate2 dir; return its card.

    The model is saved as a transformers checkpoint in a temporary dir and converted there by
    CTranslate2's ``TransformersConverter``; ``out_dir`` appears complete or not at all. ``card``
    (provenance, scores) is merged into the ``speechtl_card.json`` written beside the model.
    """
    from speechtl import __version__
    from speechtl.io import atomic_dir, write_json
    from speechtl.models.base import weights_sha256

    _whisper(model, "a CTranslate2 export")
    left = model.adapters.names() if model.adapters is not None else []
    if left:
        raise CT2FormatError(f"{model.source}: adapter(s) {left} are attached but not part of the weights; merge a "
                             "LoRA adapter first (model.merge()); a bottleneck adapter can't be merged at all")
    if quantization not in QUANTIZATIONS:
        raise CT2FormatError(f"quantization {quantization!r} unknown; CTranslate2 writes {', '.join(QUANTIZATIONS)}")
    try:
        import ctranslate2
        from ctranslate2.converters import TransformersConverter
    except ImportError as e:
        raise CT2FormatError("a CTranslate2 export needs the ctranslate2 package: pip install "
                             "'speechtl[ctranslate2]'") from e
    out_dir = Path(out_dir)
    info = {"format": "speechtl-ctranslate2", "family": model.family, "source": model.source,
            "weights_sha256": weights_sha256(model.module), "quantization": quantization,
            "model_settings": _settings_of(model.module.config), "ctranslate2_version": ctranslate2.__version__,
            "speechtl_version": __version__, **(card or {})}
    context = info["model_settings"].get("audio_context", "full")
    if context != "full":
        info["note"] = (f"adapted at audio context {context!r}: faster-whisper pads every input to 30 s; to decode as "
                        "trained, give ctranslate2.models.Whisper features padded to the batch's longest utterance "
                        "plus the decoding margin, audio_context_decode_margin, else audio_context_margin (speechtl "
                        "eval --backend ctranslate2 does)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ct2-export.", dir=out_dir.parent) as tmp, atomic_dir(out_dir) as dst:
        model.save(tmp)
        missing = [f for f in COPIED_FILES if not (Path(tmp) / f).is_file()]
        if missing:
            raise CT2FormatError(f"{model.source}: saving the model wrote no {missing}; faster-whisper needs them")
        converter = TransformersConverter(tmp, copy_files=list(COPIED_FILES))
        converter.convert(str(dst), quantization=quantization, force=True)
        write_json(dst / CARD, info)
    LOG.info("exported %s to CTranslate2 (%s) in %s", model.source, quantization, out_dir)
    return info


def export_key(model) -> str:
    """What a conversion depends on: the weights, the config (minus where it was loaded from), CTranslate2's version."""
    import ctranslate2

    from speechtl.models.base import weights_sha256

    config = {k: v for k, v in model.module.config.to_dict().items()
              if k not in ("_name_or_path", "transformers_version")}
    blob = json.dumps({"weights": weights_sha256(model.module), "config": config,
                       "generation": model.module.generation_config.to_diff_dict(),
                       "ctranslate2": ctranslate2.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cached_export(model) -> Path:
    """:func:`export_ct2` in float32 once per distinct model (weights and config), reused after that."""
    out = cache_root() / "ct2-export" / export_key(model)[:16]
    if (out / "model.bin").is_file():
        LOG.info("using the cached CTranslate2 export of %s at %s", model.source, out)
        return out
    export_ct2(model, out, "float32")
    return out


# -- decoding on CTranslate2's runtime ---------------------------------------------------------------


def _front_end(model):
    """A weightless copy of ``model``: what decoding still needs of it (features at the model's audio context,
    the forced prompt, the tokenizer) without holding its weights, which CTranslate2 has its own copy of."""
    import torch

    module = model.module
    with torch.device("meta"):
        light = type(module)(module.config)
    light.generation_config = copy.deepcopy(module.generation_config)
    front = copy.copy(model)
    front.module, front.adapters = light, None
    return front


def _supported(device: str) -> set[str]:
    import ctranslate2

    try:
        return {"default", *ctranslate2.get_supported_compute_types(device)}
    except RuntimeError:  # no such device here
        return {"default"}


class CT2Whisper:
    """Decode-only Whisper on ``ctranslate2.models.Whisper``: ``collate`` and ``transcribe`` as a SpeechModel's.

    Greedy decoding gives the transformers model's tokens: the same log-mel features (at the model's
    audio context), the same forced prompt and suppressed tokens, and the same length limit.

    >>> model = CT2Whisper.from_model(speechtl.load_model("openai/whisper-tiny.en"))  # doctest: +SKIP
    >>> model.transcribe(model.collate([waveform]))  # doctest: +SKIP
    """

    family = "seq2seq"
    max_input_seconds = 30.0

    def __init__(self, ct2_dir: str | os.PathLike, front_end, device: str = "cpu", compute_type: str = "default",
                 threads: int = 0) -> None:
        import ctranslate2

        self.ct2_dir = Path(ct2_dir)
        self.front = _front_end(_whisper(front_end, "CTranslate2 decoding"))
        kind, _, index = str(device).partition(":")
        try:
            self.runtime = ctranslate2.models.Whisper(str(self.ct2_dir), device=kind, device_index=int(index or 0),
                                                      compute_type=compute_type, intra_threads=threads)
        except ValueError as e:  # a compute type this device can't run
            raise UsageError(f"CTranslate2 can't run {self.ct2_dir} on {device} with compute type {compute_type!r} "
                             f"({e}); this device runs: {', '.join(sorted(_supported(kind)))}") from e
        self.compute_type = self.runtime.compute_type
        self.sampling_rate = self.front.sampling_rate
        self.max_input_seconds = self.front.max_input_seconds
        self.tokenizer = self.front.tokenizer
        self.source = f"{front_end.source} (CTranslate2 {self.compute_type})"

    @classmethod
    def from_model(cls, model, device: str = "cpu", compute_type: str = "default", threads: int = 0) -> CT2Whisper:
        """The runtime on ``model``'s weights, converted once (cached by their hash); ``model`` itself is untouched."""
        return cls(cached_export(_whisper(model, "CTranslate2 decoding")), model, device, compute_type, threads)

    def collate(self, audios: Sequence[np.ndarray], texts: Sequence[str] | None = None,
                langs: Sequence[str] | None = None) -> dict[str, Any]:
        return self.front.collate(audios, langs=langs)

    def generate_ids(self, batch: Mapping[str, Any], num_beams: int = 1, max_new_tokens: int | None = None,
                     **options: Any) -> list[list[int]]:
        """Token ids after the forced prompt, without ``<|endoftext|>``, for each utterance of a collated batch."""
        feats = batch["input_features"]
        feats = np.ascontiguousarray(feats.float().numpy() if hasattr(feats, "numpy") else feats, dtype=np.float32)
        prompts = self.front.prompts(batch)
        max_new_tokens = self.front.token_allowance(feats.shape[-1], max_new_tokens)  # as transformers decodes
        # CTranslate2's Whisper generates at most max_length // 2 tokens (openai-whisper's sample_len is half
        # the text context), so twice the budget asks for exactly max_new_tokens.
        results = self.runtime.generate(self._encoded(feats), prompts,
                                        beam_size=num_beams, max_length=2 * max_new_tokens, **options)
        return [r.sequences_ids[0] for r in results]

    def _encoded(self, feats: np.ndarray):
        """What ``generate`` reads: on CPU, the encoder's states computed one utterance at a time (CTranslate2 takes
        them in place of features, as faster-whisper gives them), for the reason :meth:`WhisperASR.encode` gives: 16
        utterances at 30 s encoded in 6.7 s one by one against 7.3 s as one batch on 2 cores, same tokens."""
        import ctranslate2

        if self.runtime.device != "cpu" or len(feats) == 1:
            return ctranslate2.StorageView.from_array(feats)
        states = [np.asarray(self.runtime.encode(ctranslate2.StorageView.from_array(feats[i:i + 1])))
                  for i in range(len(feats))]
        return ctranslate2.StorageView.from_array(np.concatenate(states))

    def transcribe(self, batch: Mapping[str, Any], num_beams: int = 1, **options: Any) -> list[str]:
        """Texts, with the transformers model's fallback to the full context for a loop at dynamic context
        (:func:`speechtl.models.whisper.full_context_fallback`)."""
        from speechtl.models.whisper import full_context_fallback

        texts, ended = self._texts(batch, num_beams, **options)

        def redecode(feats, subset, budget):
            return self._texts({**subset, "input_features": feats}, num_beams,
                               **{"max_new_tokens": budget, **options})[0]

        return full_context_fallback(self.front, batch, texts, ended, redecode)

    def _texts(self, batch: Mapping[str, Any], num_beams: int = 1, **options: Any) -> tuple[list[str], list[bool]]:
        """Texts and whether each ended before its token allowance."""
        limit = self.front.token_allowance(batch["input_features"].shape[-1], options.get("max_new_tokens"))
        ids = self.generate_ids(batch, num_beams=num_beams, **options)
        return ([t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)],
                [len(i) < limit for i in ids])
