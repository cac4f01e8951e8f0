"""Builders shared by the tests: a tiny random Whisper with a small tokenizer, manifests, audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
                    "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]

#: Small settings for each method that has them, for tiny-model tests (TrainConfig(method=m, settings=SMALL.get(m))).
SMALL = {"lora": {"rank": 4, "alpha": 8, "dropout": 0.0}, "dora": {"rank": 4, "alpha": 8, "dropout": 0.0},
         "adapters": {"size": 8}}

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "we like green tea", "rain falls on the hill",
             "she sells fish at the market", "the boat sails at dawn", "bring me the red cup",
             "birds sing in the morning"]


def build_tiny_whisper(out_dir: Path, texts: list[str] = SENTENCES, vocab_size: int = 300, d_model: int = 32,
                       languages: tuple[str, ...] = ()) -> Path:
    """A randomly initialised Whisper (1+1 layers, d=32) with a byte-level BPE trained on ``texts``;
    multilingual, with a token for each of ``languages`` after ``<|en|>``, when any are given."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from speechtl.models.whisper import configure_generation, whisper_config, whisper_tokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([" " + t for t in texts], trainer)
    specials = WHISPER_SPECIALS[1:3] + [f"<|{code}|>" for code in languages] + WHISPER_SPECIALS[3:]
    bpe.add_special_tokens(specials)
    bpe.save(str(out_dir / "bpe.json"))
    tok = whisper_tokenizer(out_dir / "bpe.json")
    config = whisper_config(tok, vocab_size=len(tok), d_model=d_model, encoder_layers=1, decoder_layers=1,
                            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * d_model,
                            decoder_ffn_dim=2 * d_model, num_mel_bins=80, max_source_positions=1500,
                            max_target_positions=64)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    codes = ("en", *languages) if languages else ()
    configure_generation(model, tok, lang_ids=[tok.convert_tokens_to_ids(f"<|{c}|>") for c in codes])
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out_dir)
    (out_dir / "bpe.json").unlink()
    return out_dir


#: A small wav2vec2 CTC model that learns on CPU in seconds: 20 ms frames from three 16-channel convs.
TINY_CTC = dict(hidden_size=32, num_layers=2, num_heads=2, conv_dim=16, conv_kernel=(10, 8, 4), conv_stride=(5, 8, 8),
                num_conv_pos_embeddings=16, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                final_dropout=0.0, feat_proj_dropout=0.0, mask_time_prob=0.0, layerdrop=0.0)


def build_tiny_ctc(out_dir: Path, texts: list[str] = SENTENCES, **overrides) -> Path:
    """A randomly initialised wav2vec2 CTC model (d=32, 2 layers) with a character vocabulary from ``texts``."""
    from speechtl.models.ctc import new_ctc_model

    return new_ctc_model(out_dir, texts, **{**TINY_CTC, **overrides})


def spoken(text: str, sr: int = 16000, char_s: float = 0.05, gap_s: float = 0.02) -> np.ndarray:
    """``text`` as audio a tiny CTC model can learn: one tone per letter (its own pitch), silence for spaces."""
    alphabet = "abcdefghijklmnopqrstuvwxyz'"
    t = np.arange(int(char_s * sr)) / sr
    parts = [np.zeros(int(0.05 * sr))]
    for ch in text.lower():
        pitch = 1000 + 150 * alphabet.index(ch) if ch in alphabet else 0.0
        parts += [0.5 * np.sin(2 * np.pi * pitch * t) if pitch else np.zeros_like(t), np.zeros(int(gap_s * sr))]
    return np.concatenate(parts).astype(np.float32)


def tone(path: Path, seconds: float = 1.0, sr: int = 16000, freq: float = 220.0, channels: int = 1) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    sf.write(str(path), np.stack([x] * channels, axis=1) if channels > 1 else x, sr)
    return path


def write_manifest_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def toy_corpus(root: Path, n: int = 8, texts: list[str] = SENTENCES) -> Path:
    """``n`` tone utterances (distinct pitches) with texts, two speakers and two accents."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        wav = tone(root / f"u{i}.wav", seconds=0.6 + 0.1 * i, freq=150 + 40 * i)
        rows.append({"id": f"u{i}", "audio": wav.name, "duration": 0.6 + 0.1 * i, "text": texts[i % len(texts)],
                     "speaker": f"spk{i % 2}", "accent": "a" if i % 2 else "b"})
    return write_manifest_rows(root / "manifest.jsonl", rows)


def spoken_corpus(root: Path, n: int = 8) -> Path:
    """:func:`toy_corpus` with each file's audio replaced by :func:`spoken` text, which a CTC model can align
    to its letters (and Whisper can learn from too)."""
    from speechtl.data.manifest import read_manifest

    manifest = toy_corpus(root, n=n)
    for u in read_manifest(manifest):
        sf.write(u.audio, spoken(u.text), 16000)
    return manifest


def kill_training_after(monkeypatch, batches: int):
    """Make training die (KeyboardInterrupt) while fetching batch ``batches + 1``; returns the undo."""
    from speechtl.adapt import trainer

    real, served = trainer.Batches.__getitem__, []

    def dying(self, i):
        if len(served) == batches:
            raise KeyboardInterrupt
        served.append(i)
        return real(self, i)

    monkeypatch.setattr(trainer.Batches, "__getitem__", dying)
    return lambda: monkeypatch.setattr(trainer.Batches, "__getitem__", real)
