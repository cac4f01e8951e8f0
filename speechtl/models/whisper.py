"""The seq2seq family: Whisper through transformers.

Training targets follow Whisper's own convention (a leading space before the text, the task
prefix tokens, then ``<|endoftext|>``), so fine-tuning starts where the pretrained model's
outputs already are; the prefix positions are masked from the loss because decoding forces them.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from speechtl.data.manifest import ManifestError
from speechtl.models.base import SPEC_AUGMENT, SpeechModel, flag
from speechtl.models.threads import across_cores
from speechtl.models.truecase import restore_case

LOG = logging.getLogger("speechtl.models.whisper")


class _TokenBudgetNotice(logging.Filter):
    """Drops transformers' "Both `max_new_tokens` (=N) and `max_length`(=448) seem to have been set" warning.

    Whisper's generation config always sets ``max_length`` (448), so every ``generate`` given a token budget
    (:meth:`WhisperASR.token_budget`, the gate's limits) drew it: once a batch, hundreds of lines in an eval log,
    about the very precedence that is meant. Only that message is dropped; its logger's others pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Both `max_new_tokens`") and "seem to have been set" in message)


logging.getLogger("transformers.generation.utils").addFilter(_TokenBudgetNotice())


def whisper_tokenizer(tokenizer_json: str | os.PathLike):
    """A Whisper tokenizer from a bare ``tokenizer.json`` (as CTranslate2 and faster-whisper ship it)."""
    from transformers import WhisperTokenizer

    return WhisperTokenizer(tokenizer_file=str(tokenizer_json), unk_token="<|endoftext|>",
                            bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def _special_ids(tokenizer) -> dict[str, int | None]:
    names = ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|startofprev|>", "<|transcribe|>",
             "<|translate|>")
    vocab = tokenizer.get_vocab()
    return {n: vocab.get(n) for n in names}


def whisper_config(tokenizer, **sizes: Any):
    """A WhisperConfig whose special token ids come from ``tokenizer``; ``sizes`` as in WhisperConfig."""
    from transformers import WhisperConfig

    special = _special_ids(tokenizer)
    eot = special["<|endoftext|>"]
    return WhisperConfig(**sizes, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                         decoder_start_token_id=special["<|startoftranscript|>"], tie_word_embeddings=True)


def configure_generation(model, tokenizer, suppress_tokens: Sequence[int] = (),
                         begin_suppress_tokens: Sequence[int] | None = None,
                         alignment_heads: Sequence[Sequence[int]] | None = None, lang_ids: Sequence[int] = ()) -> None:
    """Fill ``model.generation_config`` the way OpenAI's checkpoints on the hub have it.

    Needed for checkpoints built without one (converted or new): Whisper's ``generate`` reads the
    task tokens, suppressions and language table from here.
    """
    special = _special_ids(tokenizer)
    eot = special["<|endoftext|>"]
    gen = model.generation_config
    gen._from_model_config = False  # else transformers rebuilds it from config.json and drops these
    gen.decoder_start_token_id = special["<|startoftranscript|>"]
    gen.eos_token_id = gen.pad_token_id = gen.bos_token_id = eot
    gen.no_timestamps_token_id = special["<|notimestamps|>"]
    gen.prev_sot_token_id = special["<|startofprev|>"]
    gen.suppress_tokens = list(suppress_tokens)
    gen.begin_suppress_tokens = list(begin_suppress_tokens) if begin_suppress_tokens is not None else [eot]
    gen.max_length = model.config.max_target_positions
    gen.return_timestamps = False
    gen.max_initial_timestamp_index = 50
    gen.is_multilingual = bool(lang_ids)
    if alignment_heads:
        gen.alignment_heads = [list(h) for h in alignment_heads]
    if lang_ids:
        gen.lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in lang_ids}
        gen.task_to_id = {"transcribe": special["<|transcribe|>"], "translate": special["<|translate|>"]}


AUDIO_CONTEXTS = ("full", "dynamic")
#: Default margin of silence kept after the longest utterance of a batch at dynamic context. Whisper
#: was trained on 30 s windows that nearly always end in silence or mid-speech; a context cut right
#: at the end of the speech makes the pretrained model hallucinate or stop early (whisper.cpp users
#: report the same for ``-ac``). See benchmarks/results/audio_context.md for how this was chosen.
DEFAULT_MARGIN_SECONDS = 1.0
#: Mel frames per second of audio (hop 160 at 16 kHz), and per encoder frame (conv2 stride 2).
MEL_FRAMES_PER_SECOND = 100
#: At dynamic context, decoding stops after this many tokens per second of input (plus
#: :data:`TOKEN_BUDGET_SLACK`). Read speech runs at 2-4 words, 3-6 Whisper tokens, a second; a model
#: that loops ("the the the…") would otherwise run to the 448-token limit on every such utterance
#: (un-adapted tiny.en at short contexts did so on most of VCTK: 30 min for 40 utterances).
TOKENS_PER_SECOND = 12
TOKEN_BUDGET_SLACK = 16
#: Mel frames of one piece of a batch the encoder computes at a time on CPU (see :meth:`WhisperASR.encode`): one
#: utterance at the full 30 s context, two at ~10 s. Two at ~10 s were ~10% faster than one (20 read sentences at
#: dynamic context, 2-core AVX2 EPYC, 11 rounds: 1.28 s against 1.34 s best, 1.46 s against 1.58 s median, the
#: pieces side by side); three or four were no faster than two.
ENCODER_PIECE_FRAMES = 2000


class Suppression:
    """Whisper's suppressed tokens, as transformers' ``SuppressTokensLogitsProcessor`` and
    ``SuppressTokensAtBeginLogitsProcessor`` apply them (the first at every step, the second at the first generated
    position), from masks built once.

    Theirs build each mask again at every step (``torch.isin`` over the 51,864-token vocabulary, twice): 11% of
    decoding 20 read sentences at dynamic context (3.49 s against 3.10 s on 2 cores, identical transcripts). The
    first position is the one of the first call: ``generate`` calls a processor first on its forced prompt.
    One instance serves one ``generate`` call.
    """

    def __init__(self, vocab_size: int, always: Sequence[int] | None, at_begin: Sequence[int] | None) -> None:
        self.always = torch.zeros(vocab_size, dtype=torch.bool)
        self.always[list(always or [])] = True
        self.at_begin = self.always.clone()
        self.at_begin[list(at_begin or [])] = True
        self.begin: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.begin is None:  # the first call: its position, and the masks where the scores are, once
            self.begin = input_ids.shape[-1]
            self.always, self.at_begin = self.always.to(scores.device), self.at_begin.to(scores.device)
        mask = self.at_begin if input_ids.shape[-1] == self.begin else self.always
        return scores.masked_fill(mask, -float("inf"))


def _audio_context(name: str, value: Any) -> str:
    if value not in AUDIO_CONTEXTS:
        raise ValueError(f"{name} must be one of {', '.join(AUDIO_CONTEXTS)}, got {value!r}")
    return value


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 30.0:
        raise ValueError(f"{name} must be a number of seconds in [0, 30], got {value!r}")
    return float(value)


def _encoder_forward(self, input_features: torch.Tensor, attention_mask=None, **kwargs: Any):
    """WhisperEncoder.forward for any input length up to 30 s (installed per instance).

    transformers' encoder refuses anything but exactly 3000 mel frames and adds the whole 1500-row
    positional table. Here the table is sliced to the frames there are, so a 30 s input gives exactly
    transformers' result and a shorter one uses the table's first rows, as icefall and FUTO's
    audio-context fine-tuning do. Only ``last_hidden_state`` is returned (attentions and hidden
    states of every layer are not recorded: speechtl never asks for them).
    """
    from transformers.modeling_outputs import BaseModelOutput

    stride = self.conv1.stride[0] * self.conv2.stride[0]
    frames = input_features.shape[-1]
    if frames > self.config.max_source_positions * stride or frames % stride:
        raise ValueError(f"Whisper's encoder takes an even number of mel frames up to "
                         f"{self.config.max_source_positions * stride}, got {frames}")
    x = nn.functional.gelu(self.conv1(input_features))
    x = nn.functional.gelu(self.conv2(x)).permute(0, 2, 1)
    x = x + self.embed_positions.weight[: x.shape[1]]
    x = nn.functional.dropout(x, p=self.dropout, training=self.training)
    for layer in self.layers:
        if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
            continue
        x = layer(x, None)
        x = x[0] if isinstance(x, tuple) else x
    return BaseModelOutput(last_hidden_state=self.layer_norm(x))


def floor_padded(feats: torch.Tensor, frames: int) -> torch.Tensor:
    """Log-mel ``feats`` (batch, mels, time) padded to ``frames`` with each utterance's floor value: exactly the
    features of the audio followed by zeros, as long as ``feats`` already ends in a frame of zeros.

    Whisper's log-mel is clamped to the utterance's maximum less 8 (and to log10 of 1e-10), so a window of zeros
    gets the lowest value any frame can have, and the utterance's minimum is that value.
    """
    if feats.shape[-1] >= frames:
        return feats
    padded = feats.amin(dim=(1, 2), keepdim=True).expand(feats.shape[0], feats.shape[1], frames).clone()
    padded[..., :feats.shape[-1]] = feats
    return padded


def full_context_fallback(model, batch: Mapping[str, Any], texts: list[str], ended: list[bool],
                          redecode) -> list[str]:
    """Whisper's own fallback rule (a transcript whose zlib compression ratio is over 2.4 is a loop), falling back
    from the short audio context to the full one instead of to a higher temperature.

    A short context makes Whisper repeat itself now and then ("Are they free? Are they free? …" to the token limit:
    192 insertions on 100 VCTK utterances after full fine-tuning at dynamic context); at 30 s, which it was
    pretrained on, it stops. Only those utterances (and any that did not end) are decoded again, by
    ``redecode(features, batch_subset, max_new_tokens)``, so the speed of the short context is kept. Their
    features at 30 s are the short ones padded with each utterance's floor (:func:`floor_padded`).
    ``audio_context_fallback: false`` (a model setting) turns it off. Both
    backends (transformers, CTranslate2) use it.
    """
    from speechtl.models.gate import MAX_COMPRESSION_RATIO, compression_ratio

    feats = batch["input_features"]
    full = model.feature_extractor.nb_max_frames
    if model.audio_context != "dynamic" or not getattr(model.module.config, "audio_context_fallback", True) \
            or feats.shape[-1] >= full:
        return texts
    redo = [i for i, (t, e) in enumerate(zip(texts, ended, strict=True))
            if not e or compression_ratio(t) > MAX_COMPRESSION_RATIO]
    if not redo:
        return texts
    padded = floor_padded(torch.as_tensor(feats)[redo], full)
    subset = {"language_ids": batch["language_ids"][redo]} if "language_ids" in batch else {}
    redone = redecode(padded, subset, model.token_budget(feats.shape[-1]))
    LOG.info("%d of %d transcript(s) looped or did not end at dynamic context: decoded again at 30 s", len(redo),
             len(texts))
    out = list(texts)
    for i, t in zip(redo, redone, strict=True):
        out[i] = t
    return out


class WhisperASR(SpeechModel):
    family = "seq2seq"
    max_input_seconds = 30.0
    #: Every linear of the attention (self and cross) and feed-forward layers, in encoder and decoder.
    lora_targets = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    #: SpecAugment, plus the audio context: ``full`` pads every input to 30 s as Whisper was trained;
    #: ``dynamic`` pads a batch only to its longest utterance plus ``audio_context_margin`` seconds, and a
    #: batch to decode (no transcripts) plus ``audio_context_decode_margin`` where set (see :meth:`context_frames`).
    #: Saved in the checkpoint's config, so a model adapted at dynamic context decodes that way.
    settings = {**SPEC_AUGMENT, "audio_context": _audio_context, "audio_context_margin": _seconds,
                "audio_context_decode_margin": _seconds, "audio_context_fallback": flag}

    def __init__(self, module, feature_extractor, tokenizer, source: str = "", language: str | None = None,
                 task: str = "transcribe") -> None:
        self.module = module
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.source = source
        self.sampling_rate = feature_extractor.sampling_rate
        self.language = language
        self.task = task
        self._vocab: dict[str, int] | None = None  # the tokenizer's, for target_text; built on first use
        gen = module.generation_config
        self.multilingual = bool(getattr(gen, "is_multilingual", False))
        if self.multilingual and language is None:
            self.language = "en"
        encoder = module.model.encoder
        encoder.forward = _encoder_forward.__get__(encoder)  # any length up to 30 s; see _encoder_forward

    @property
    def audio_context(self) -> str:
        """``full`` or ``dynamic`` (see :attr:`settings`); a pretrained checkpoint is ``full``."""
        return getattr(self.module.config, "audio_context", "full")

    def context_frames(self, num_samples: int, decoding: bool = False) -> int:
        """Mel frames the encoder sees for a batch whose longest input has ``num_samples`` samples.

        A batch to decode may keep a wider margin (``audio_context_decode_margin``) than one to train on
        (``audio_context_margin``): training at a tight margin is what makes dynamic context cheap, and the
        adapted model reads its own accent well so; but real speech unlike the training data, decoded as tight,
        lost up to 3 WER points against the same model at 30 s, and a few seconds more of context cost
        decoding little (recipes/synthetic_caribbean/results/audio_context/RESULTS.md).
        """
        full = self.feature_extractor.nb_max_frames
        if self.audio_context == "full":
            return full
        config = self.module.config
        margin = getattr(config, "audio_context_margin", DEFAULT_MARGIN_SECONDS)
        if decoding and getattr(config, "audio_context_decode_margin", None) is not None:
            margin = config.audio_context_decode_margin
        frames = math.ceil(num_samples / self.feature_extractor.hop_length + margin * MEL_FRAMES_PER_SECOND)
        return min(full, frames + frames % 2)  # the encoder's second convolution has stride 2

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, source: str = "", **kwargs: Any) -> WhisperASR:
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

        module = WhisperForConditionalGeneration.from_pretrained(path, **kwargs)
        fe = WhisperFeatureExtractor.from_pretrained(path, **kwargs)
        tok = WhisperTokenizer.from_pretrained(path, **kwargs)
        return cls(module, fe, tok, source=source or str(path))

    # -- inputs ---------------------------------------------------------------------------------
    def prefix_ids(self, language: str | None = None) -> list[int]:
        """``<|startoftranscript|>`` [language, task] ``<|notimestamps|>``, as decoding forces them."""
        gen = self.module.generation_config
        ids = [gen.decoder_start_token_id]
        if self.multilingual:
            ids.append(self.language_id(language or self.language))
            ids.append(gen.task_to_id[self.task])
        ids.append(gen.no_timestamps_token_id)
        return ids

    def language_id(self, lang: str) -> int:
        """The token of language ``lang`` (a manifest's ``lang``: ``en``, ``en-NG`` and ``EN`` are all English)."""
        table = self.module.generation_config.lang_to_id
        code = lang.replace("_", "-").split("-")[0].lower()
        if f"<|{code}|>" not in table:
            raise ManifestError(f"language {lang!r} is not one of this Whisper model's {len(table)} languages "
                                f"({', '.join(sorted(t[2:-2] for t in table)[:12])}, …)")
        return table[f"<|{code}|>"]

    def prompts(self, batch: Mapping[str, Any]) -> list[list[int]]:
        """Each utterance's forced prefix: its own language when :meth:`collate` was given ``langs``."""
        n = len(batch["input_features"])
        if "language_ids" not in batch:
            return [self.prefix_ids()] * n
        base = self.prefix_ids()
        return [[base[0], int(lang), *base[2:]] for lang in batch["language_ids"]]

    def collate(self, audios: Sequence[np.ndarray], texts: Sequence[str] | None = None,
                langs: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Log-mel features (padded as :attr:`audio_context` says), and labels for ``texts``: a batch without
        them is one to decode (:meth:`context_frames`'s decoding margin).

        A multilingual model is told each utterance's language (``langs``: the manifest's ``lang``) in
        its prefix, in training and decoding alike; without ``langs`` it gets :attr:`language`. An
        English-only model has no language token and ignores ``langs``.
        """
        frames = self.context_frames(max(len(a) for a in audios), decoding=texts is None)
        batch = {"input_features": self.log_mel(audios, frames)}
        if langs is not None and self.multilingual:
            batch["language_ids"] = torch.tensor([self.language_id(lang) for lang in langs])
        if texts is not None:
            batch.update(self._labels(texts, self.prompts(batch)))
        return batch

    def log_mel(self, audios: Sequence[np.ndarray], frames: int) -> torch.Tensor:
        """The feature extractor's log-mel features of ``audios``, each padded with zeros to ``frames`` frames.

        Only the audio and a window of zeros after the longest go through the STFT; the frames after that are the
        floor value a window of zeros gets (:func:`floor_padded`), bit for bit what the extractor computes from the
        zeros itself (tested). At the full context that saves 30 s of STFT an utterance: 16 read sentences of
        about 4 s took 0.23 s to extract that way and 0.03 s this way on 2 cores (faster-whisper likewise computes
        the audio's features alone). A dithering extractor adds noise to the zeros, so it gets every frame computed.
        """
        fe = self.feature_extractor
        hop = fe.hop_length
        longest = max(len(a) for a in audios)
        computed = frames
        if not getattr(fe, "dither", 0.0):  # a window and a hop of zeros after the longest, to the next hop
            computed = min(frames, math.ceil((longest + fe.n_fft + hop) / hop))
        feats = fe(list(audios), sampling_rate=self.sampling_rate, return_tensors="pt", max_length=computed * hop,
                   truncation=True).input_features
        return floor_padded(feats, frames)

    def at_full_context(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``batch`` with its features padded to the full 30 s context (:func:`floor_padded`: exactly the features
        of its audio followed by zeros), the rest as it is: what a distillation teacher at 30 s reads."""
        return {**batch, "input_features": floor_padded(batch["input_features"], self.feature_extractor.nb_max_frames)}

    def _labels(self, texts: Sequence[str], prompts: Sequence[list[int]]) -> dict[str, torch.Tensor]:
        prefix = prompts[0]
        eos = self.module.generation_config.eos_token_id
        max_len = self.module.config.max_target_positions
        seqs = []
        for t, prompt in zip(texts, prompts, strict=True):
            ids = prompt + self.tokenizer.encode(" " + t.strip(), add_special_tokens=False) + [eos]
            if len(ids) > max_len:
                raise ManifestError(f"transcript is {len(ids)} tokens, longer than Whisper's {max_len}: {t[:60]!r}…")
            seqs.append(ids)
        width = max(len(s) for s in seqs) - 1
        dec_in = torch.full((len(seqs), width), eos, dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            dec_in[i, :len(s) - 1] = torch.tensor(s[:-1])
            labels[i, :len(s) - 1] = torch.tensor(s[1:])
            labels[i, :len(prefix) - 1] = -100  # forced at decoding time: nothing to learn
        return {"decoder_input_ids": dec_in, "labels": labels}

    # -- compute --------------------------------------------------------------------------------
    def logits(self, batch: dict[str, torch.Tensor],
               module: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced token logits; the mask is the label positions (the forced prefix and padding are out)."""
        out = (module or self.module)(input_features=batch["input_features"],
                                      decoder_input_ids=batch["decoder_input_ids"])
        return out.logits, (batch["labels"] != -100).to(out.logits.device)

    def loss_from_logits(self, batch: dict[str, torch.Tensor], logits: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                           batch["labels"].to(logits.device).reshape(-1), ignore_index=-100)

    def loss_items(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != -100).sum())

    def encode(self, feats: torch.Tensor, micro_batch: int | None = None) -> torch.Tensor:
        """Encoder states, computed ``micro_batch`` utterances at a time (default: :data:`ENCODER_PIECE_FRAMES`
        of mel frames a piece on CPU, the whole batch on an accelerator).

        On CPU the encoder runs fastest in small pieces (1500-frame activations stay in cache: 20 utterances at
        30 s took 3.2 s one by one against 4.7 s as one batch on 2 cores), side by side, one core each
        (:func:`~speechtl.models.threads.across_cores`), while the decoder gains from the whole batch; so decoding
        encodes in micro-batches and generates once.
        """
        on_cpu = feats.device.type == "cpu"
        if micro_batch is None:
            micro_batch = max(1, ENCODER_PIECE_FRAMES // feats.shape[-1]) if on_cpu else len(feats)
        enc = self.module.model.encoder
        pieces = [feats[i:i + micro_batch] for i in range(0, len(feats), micro_batch)]
        if not on_cpu:
            return torch.cat([enc(x).last_hidden_state for x in pieces])
        return torch.cat(across_cores(lambda x: enc(x).last_hidden_state, pieces))

    @torch.inference_mode()
    def transcribe(self, batch: dict[str, torch.Tensor], num_beams: int = 1, **options: Any) -> list[str]:
        """Greedy or beam decoding; at dynamic context, a transcript that loops or does not end is decoded again
        at the full 30 s context (see :meth:`_full_context_fallback`)."""
        texts, _, ended = self._decode(batch, num_beams, **options)
        return self._full_context_fallback(batch, texts, ended, num_beams, **options)

    def _full_context_fallback(self, batch: dict[str, torch.Tensor], texts: list[str], ended: list[bool],
                               num_beams: int = 1, **options: Any) -> list[str]:
        """:func:`full_context_fallback` with this model's own decoder."""

        def redecode(feats: torch.Tensor, subset: dict[str, torch.Tensor], budget: int | None) -> list[str]:
            with self.settings_as({"audio_context": "full"}):
                return self._decode({**subset, "input_features": feats}, num_beams,
                                    **{"max_new_tokens": budget, **options})[0]

        return full_context_fallback(self, batch, texts, ended, redecode)

    @torch.inference_mode()
    def transcribe_scored(self, batch: dict[str, torch.Tensor], num_beams: int = 1,
                          **options: Any) -> list[tuple[str, float]]:
        """Texts, each with the mean log-probability of its tokens and ``<|endoftext|>`` (teacher-forced on the
        encoder states the decode used: one decoder pass more, no second encoder pass)."""
        texts, states, ended = self._decode(batch, num_beams, **options)
        scores = self._self_scores(batch, states, texts)
        # a transcript cut by the token limit never ended: the model is not sure of it, however likely its tokens
        return [(t, c if e else -math.inf) for t, c, e in zip(texts, scores, ended, strict=True)]

    def gate_limits(self, audios: Sequence[np.ndarray]) -> dict[str, int]:
        """At most :data:`TOKENS_PER_SECOND` tokens a second of the longest input (plus slack) in the gate's base
        pass: a base model that loops on an accent (tiny.en wrote 956 insertions on 1,629 words of children's
        speech) would otherwise run to 448 tokens before the gate sends the utterance to the adapter anyway."""
        return {"max_new_tokens": self._tokens_for(max(len(a) for a in audios) / self.sampling_rate)}

    def _decode(self, batch: dict[str, torch.Tensor], num_beams: int = 1,
                **options: Any) -> tuple[list[str], torch.Tensor, list[bool]]:
        """Texts, the encoder states they were decoded from, and whether each ended (``<|endoftext|>``) before
        the token limit."""
        from transformers import LogitsProcessorList
        from transformers.modeling_outputs import BaseModelOutput

        gen = self.module.generation_config
        feats = batch["input_features"].to(self.device, dtype=next(self.module.parameters()).dtype)
        kwargs: dict[str, Any] = {"num_beams": num_beams, "do_sample": False, "return_timestamps": False}
        languages = None
        if self.multilingual:
            kwargs.update(language=self.language, task=self.task)
            if "language_ids" in batch:  # each utterance its own (transformers takes a list, one per item)
                names = {i: t[2:-2] for t, i in gen.lang_to_id.items()}
                languages = [names[int(i)] for i in batch["language_ids"]]
        budget = self.token_budget(feats.shape[-1])
        if budget is not None:
            kwargs["max_new_tokens"] = budget
        kwargs.update(options)
        states = self.encode(feats, kwargs.pop("encoder_batch_size", None))
        # Beam search over a whole batch on CPU was 4x slower than one utterance at a time (10 utterances,
        # beam 5: 87 s against 21 s, identical transcripts); greedy decoding gains from the batch.
        step = len(feats) if num_beams == 1 or feats.device.type == "cuda" else 1
        texts: list[str] = []
        ended: list[bool] = []
        eot = gen.eos_token_id
        # what generate was allowed: the budget or option in kwargs, else its own length limit less the prompt
        limit = kwargs.get("max_new_tokens") or gen.max_length - len(self.prefix_ids())
        for i in range(0, len(feats), step):
            if languages is not None:
                kwargs["language"] = languages[i:i + step]
            # Whisper's suppressions from masks built once (Suppression), in place of transformers' own processors
            suppress = Suppression(self.module.config.vocab_size, gen.suppress_tokens, gen.begin_suppress_tokens)
            out = self.module.generate(feats[i:i + step],
                                       encoder_outputs=BaseModelOutput(last_hidden_state=states[i:i + step]),
                                       logits_processor=LogitsProcessorList([suppress]), suppress_tokens=None,
                                       begin_suppress_tokens=None, **kwargs)
            seqs = out.sequences if hasattr(out, "sequences") else out
            texts += [t.strip() for t in self.tokenizer.batch_decode(seqs, skip_special_tokens=True)]
            # generate returns the text tokens alone (prompt and <|endoftext|> stripped, shorter rows padded with
            # it): a row that filled the whole allowance of new tokens had no room left to end
            ended += ((seqs != eot).sum(-1) < limit).tolist()
        return texts, states, ended

    def _self_scores(self, batch: dict[str, torch.Tensor], states: torch.Tensor, texts: Sequence[str]) -> list[float]:
        """Mean log-probability of each text's tokens (and end of text) given its encoder states.

        The text is tokenised again from its decoded string, as a user's transcript would be; one that ran to
        the decoder's length limit is cut to fit (it loops, which the gate's compression ratio catches).
        """
        room = self.module.config.max_target_positions - len(self.prefix_ids()) - 1
        cut = [self.tokenizer.decode(self.tokenizer.encode(" " + (t or "."), add_special_tokens=False)[:room]).strip()
               for t in texts]
        labels = self._labels(cut, self.prompts(batch))
        dec_in, target = labels["decoder_input_ids"].to(self.device), labels["labels"].to(self.device)
        logits = self.module(encoder_outputs=(states,), decoder_input_ids=dec_in).logits.float()
        logp = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        mask = target != -100
        return ((logp * mask).sum(1) / mask.sum(1)).tolist()

    def token_budget(self, mel_frames: int) -> int | None:
        """At dynamic context, the most tokens to generate for ``mel_frames`` of input (see
        :data:`TOKENS_PER_SECOND`); None at full context (generation's own limit). Both backends use it."""
        if self.audio_context != "dynamic":
            return None
        return self._tokens_for(mel_frames / MEL_FRAMES_PER_SECOND)

    def token_allowance(self, mel_frames: int, max_new_tokens: int | None = None) -> int:
        """New tokens a decode of ``mel_frames`` may make, resolved as :meth:`_decode` resolves them for generate:
        ``max_new_tokens`` when asked, else :meth:`token_budget`, else generation's length limit less the prompt.
        The CTranslate2 backend asks its runtime for exactly this; a transcript that used all of it did not end."""
        if max_new_tokens is None:
            max_new_tokens = self.token_budget(mel_frames)
        if max_new_tokens is None:
            max_new_tokens = self.module.generation_config.max_length - len(self.prefix_ids())
        return max_new_tokens

    def _tokens_for(self, seconds: float) -> int:
        """:data:`TOKENS_PER_SECOND` a second plus :data:`TOKEN_BUDGET_SLACK`, within the decoder's positions."""
        return min(self.module.config.max_target_positions - len(self.prefix_ids()),
                   math.ceil(seconds * TOKENS_PER_SECOND) + TOKEN_BUDGET_SLACK)

    def target_text(self, text: str) -> str:
        """Sentence case and end punctuation, as Whisper writes, for an all-capitals unpunctuated transcript
        (see :mod:`speechtl.models.truecase`); a styled transcript is kept as it is."""
        if self._vocab is None:
            self._vocab = self.tokenizer.get_vocab()
        return restore_case(text, self._vocab)

    def fit_vocabulary(self, texts: Sequence[str]) -> str:
        """Always "kept": Whisper's byte-level BPE spells any text, so its vocabulary never needs rebuilding."""
        return "kept"

    def enable_gradient_checkpointing(self) -> None:
        """As the base class, with the decoder's key/value cache off: recomputed blocks must not append to it."""
        self.module.config.use_cache = False
        super().enable_gradient_checkpointing()

    # -- structure ------------------------------------------------------------------------------
    def blocks(self) -> dict[str, list[nn.Module]]:
        m = self.module.model
        return {"encoder": list(m.encoder.layers), "decoder": list(m.decoder.layers)}

    @property
    def hidden_size(self) -> int:
        return int(self.module.config.d_model)

    def parts(self) -> dict[str, list[nn.Parameter]]:
        m = self.module.model
        feat = [*m.encoder.conv1.parameters(), *m.encoder.conv2.parameters(), *m.encoder.embed_positions.parameters()]
        return {"feature_encoder": feat, "encoder": list(m.encoder.parameters()),
                "decoder": list(m.decoder.parameters()) + [p for p in self.module.proj_out.parameters()],
                **{f"encoder.layers.{i}": list(layer.parameters()) for i, layer in enumerate(m.encoder.layers)},
                **{f"decoder.layers.{i}": list(layer.parameters()) for i, layer in enumerate(m.decoder.layers)}}

    def save(self, out_dir: str | os.PathLike) -> None:
        out_dir = Path(out_dir)
        self.module.save_pretrained(out_dir)
        self.feature_extractor.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
