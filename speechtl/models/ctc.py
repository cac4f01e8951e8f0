"""The CTC family: wav2vec2 and its kin (HuBERT, WavLM, Data2VecAudio, wav2vec2-conformer, UniSpeech, SEW, MMS).

One code path serves every transformers ``*ForCTC`` model whose base has a convolutional
``feature_extractor``, a transformer ``encoder.layers`` and an ``lm_head`` over characters.

Three things here are easy to get wrong elsewhere, so they live in this file:

- The CTC loss is computed here, in fp32 with autocast off: under fp16 the log-softmax over long
  sequences underflows and CTC goes NaN, and bf16 loses the precision the forward-backward sums need.
- Targets must use the characters the head was trained on. :meth:`CTCASR.fit_vocabulary` keeps the
  pretrained vocabulary when it covers the target text and otherwise builds a new one and a fresh
  head; and transcripts are case-folded and stripped of punctuation the vocabulary can't spell,
  since a character recogniser cannot hear a comma.
- Decoding stops at each utterance's own last frame, so padding in a batch never adds characters;
  and it never picks the sentence markers (``<s>``, ``</s>``) that pretrained vocabularies such as
  ``facebook/wav2vec2-base-960h``'s carry: they are no characters of a transcript, yet a new or barely
  trained head spells them out.

Example (a new, random model; real use starts from a pretrained checkpoint)::

    >>> from speechtl.models import load_model
    >>> path = new_ctc_model("/tmp/ctc-demo", ["hello world"], hidden_size=32, num_layers=1,
    ...                      conv_dim=16)  # doctest: +SKIP
    >>> model = load_model(path)  # doctest: +SKIP
    >>> model.fit_vocabulary(["hello world"])  # doctest: +SKIP
    'kept'
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import tempfile
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from speechtl.data.text import APOSTROPHES
from speechtl.errors import MissingPackageError
from speechtl.models.base import SPEC_AUGMENT, ModelLoadError, SpeechModel, flag, probability

LOG = logging.getLogger("speechtl.models.ctc")

#: The special tokens of a vocabulary built here: CTC blank, unknown character, word delimiter.
PAD, UNK, WORD_DELIMITER = "<pad>", "<unk>", "|"
#: Punctuation a rebuilt vocabulary keeps, because it changes words ("it's" is not "its").
KEPT_PUNCTUATION = frozenset("'")


#: Settings :meth:`CTCASR.configure` may change: all are read from the config at each forward (or
#: by this file's loss), so changing them on a loaded model takes effect without rebuilding it.
SETTINGS = {**SPEC_AUGMENT, "layerdrop": probability, "ctc_zero_infinity": flag}


# -- vocabulary --------------------------------------------------------------------------------------
def vocabulary_case(vocab: Collection[str]) -> Literal["upper", "lower"] | None:
    """The case a character vocabulary spells letters in (None: mixed, or no cased letters)."""
    letters = [t for t in vocab if len(t) == 1 and t.lower() != t.upper()]
    if letters and all(t.isupper() for t in letters):
        return "upper"
    if letters and all(t.islower() for t in letters):
        return "lower"
    return None


def normalise_transcript(text: str, case: str | None, keep: Collection[str] = ()) -> str:
    """``text`` as a character model is trained on it: case-folded, punctuation dropped unless in ``keep``.

    Dashes become spaces ("well-known" is two words to the ear); other punctuation vanishes.
    """
    text = text.translate(APOSTROPHES)  # as scoring folds them
    text = text.upper() if case == "upper" else text.lower() if case == "lower" else text
    out = []
    for ch in text:
        kind = unicodedata.category(ch)
        if ch in keep or not kind.startswith("P"):
            out.append(" " if ch.isspace() else ch)
        elif kind == "Pd":
            out.append(" ")
    return " ".join("".join(out).split())


def character_vocabulary(texts: Iterable[str]) -> dict[str, int]:
    """``<pad>`` (the CTC blank, id 0), ``<unk>``, ``|`` (between words), then every character of ``texts``."""
    chars = sorted({c for t in texts for c in t if not c.isspace()} - {PAD, UNK, WORD_DELIMITER})
    return {tok: i for i, tok in enumerate([PAD, UNK, WORD_DELIMITER, *chars])}


def ctc_tokenizer(vocab: dict[str, int]):
    """A Wav2Vec2CTCTokenizer over ``vocab`` with no ``<s>``/``</s>``, so it has exactly ``len(vocab)`` ids."""
    from transformers import Wav2Vec2CTCTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.json"
        path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        tok = Wav2Vec2CTCTokenizer(str(path), unk_token=UNK, pad_token=PAD, word_delimiter_token=WORD_DELIMITER,
                                   bos_token=None, eos_token=None, do_lower_case=False)
    if len(tok) != len(vocab):
        raise ValueError(f"the CTC tokenizer has {len(tok)} ids for a vocabulary of {len(vocab)}")
    return tok


WAV2VEC2_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
WAV2VEC2_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)


def new_ctc_model(out_dir: str | os.PathLike, texts: Iterable[str], hidden_size: int = 256, num_layers: int = 4,
                  num_heads: int = 4, intermediate_size: int | None = None, conv_dim: int | Sequence[int] = 256,
                  conv_kernel: Sequence[int] = WAV2VEC2_CONV_KERNEL, conv_stride: Sequence[int] = WAV2VEC2_CONV_STRIDE,
                  case: Literal["lower", "upper"] | None = "lower", seed: int = 0, **config: Any) -> Path:
    """Write a randomly initialised wav2vec2-architecture CTC checkpoint with a vocabulary from ``texts``.

    For training a source model from scratch where no pretrained weights can be had. The default
    conv stack is wav2vec2's (20 ms frames at 16 kHz); ``conv_dim`` may be one width for every
    conv layer. The layer-norm ("large", XLS-R) variant is used, with attention masks, because it
    trains stably from scratch and keeps padding out of every utterance's features; its convs have
    biases, as XLS-R's do, since a bias-free conv over silence gives a layer norm a zero-variance
    input whose gradient explodes. ``config`` overrides
    any other :class:`transformers.Wav2Vec2Config` field (dropouts, ``mask_time_prob``…).
    Returns ``out_dir``, which :func:`speechtl.models.load_model` reads.
    """
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    if len(conv_kernel) != len(conv_stride):
        raise ValueError(f"conv_kernel {tuple(conv_kernel)} and conv_stride {tuple(conv_stride)} differ in length")
    dims = [conv_dim] * len(conv_kernel) if isinstance(conv_dim, int) else list(conv_dim)
    if len(dims) != len(conv_kernel):
        raise ValueError(f"conv_dim has {len(dims)} widths for {len(conv_kernel)} conv layers")
    texts = [normalise_transcript(t, case, KEPT_PUNCTUATION) for t in texts]
    vocab = character_vocabulary(texts)
    tok = ctc_tokenizer(vocab)
    settings: dict[str, Any] = dict(
        vocab_size=len(vocab), pad_token_id=vocab[PAD], hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size or 4 * hidden_size,
        conv_dim=dims, conv_kernel=list(conv_kernel), conv_stride=list(conv_stride), conv_bias=True,
        feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embedding_groups=math.gcd(16, hidden_size),
        ctc_loss_reduction="mean", ctc_zero_infinity=True)
    unknown = sorted(set(config) - set(Wav2Vec2Config().to_dict()))
    if unknown:  # Wav2Vec2Config would keep a misspelt key as an attribute nobody reads
        raise ValueError(f"unknown wav2vec2 architecture setting(s) {unknown}: not arguments of new_ctc_model "
                         "nor Wav2Vec2Config fields")
    settings.update(config)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = Wav2Vec2ForCTC(Wav2Vec2Config(**settings))
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=True)
    out = Path(out_dir)
    CTCASR(module, fe, tok, source=str(out)).save(out)
    LOG.info("new wav2vec2 CTC model in %s: %d parameters, vocabulary of %d characters", out,
             sum(p.numel() for p in module.parameters()), len(vocab))
    return out


# -- the model ---------------------------------------------------------------------------------------
class CTCASR(SpeechModel):
    family = "ctc"
    #: The attention and feed-forward linears of every transformer layer (not the conv feature encoder,
    #: not the output head).
    lora_targets = ("q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense")

    def __init__(self, module, feature_extractor, tokenizer, source: str = "") -> None:
        self.module = module
        self.feature_extractor = feature_extractor
        #: None for a pretrained-only checkpoint until :meth:`fit_vocabulary` gives it one.
        self.tokenizer = tokenizer
        self.source = source
        self.sampling_rate = feature_extractor.sampling_rate
        self._beam_decoders: dict[tuple, Any] = {}
        self._warned_unknown = False
        base = module.base_model
        if not hasattr(base, "feature_extractor") or not hasattr(getattr(base, "encoder", None), "layers") \
                or not hasattr(module, "lm_head"):
            raise ModelLoadError(f"{source}: {type(module).__name__} lacks the wav2vec2 layout (feature_extractor, "
                                 "encoder.layers, lm_head) that the CTC family needs; remove its model_type from "
                                 "speechtl.models.FAMILIES or give it its own family")
        if tokenizer is not None and len(tokenizer) > module.lm_head.out_features:
            raise ModelLoadError(f"{source}: the vocabulary has {len(tokenizer)} tokens but the CTC head only "
                                 f"{module.lm_head.out_features} outputs; call fit_vocabulary(texts) to rebuild it")
        if module.config.ctc_loss_reduction != "mean":
            # SpeechModel.loss is a mean, whatever the checkpoint's own loss did; say so in the saved config.
            LOG.info("%s: ctc_loss_reduction '%s' set to 'mean' (speechtl averages over target lengths)", source,
                     module.config.ctc_loss_reduction)
            module.config.ctc_loss_reduction = "mean"

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, source: str = "", target_lang: str | None = None,
                        **kwargs: Any) -> CTCASR:
        """Load any ``*ForCTC`` checkpoint; ``target_lang`` picks an MMS adapter and its vocabulary."""
        from transformers import AutoModelForCTC

        model_kwargs = dict(kwargs)
        if target_lang is not None:
            model_kwargs.update(target_lang=target_lang, ignore_mismatched_sizes=True)
        module = AutoModelForCTC.from_pretrained(path, **model_kwargs)
        fe = _feature_extractor(path, module.config, **kwargs)
        tok = _tokenizer(path, target_lang, **kwargs)
        return cls(module, fe, tok, source=source or str(path))

    # -- text -----------------------------------------------------------------------------------
    def _vocab(self) -> dict[str, int]:
        if self.tokenizer is None:
            raise ModelLoadError(f"{self.source}: this checkpoint has no CTC vocabulary (no vocab.json); call "
                                 "model.fit_vocabulary(train_texts) first to build one and a fresh head")
        return self.tokenizer.get_vocab()

    def normalise(self, text: str) -> str:
        """``text`` as this model's vocabulary spells it (case, punctuation, spaces)."""
        vocab = self._vocab()
        return normalise_transcript(text, vocabulary_case(vocab), keep=vocab)

    def fit_vocabulary(self, texts: Iterable[str]) -> Literal["kept", "rebuilt"]:
        """Keep the pretrained vocabulary if it spells every target text, else build one and a fresh head.

        A fresh head loses what the old one knew, so it is only built when needed, and the log says
        which characters forced it.
        """
        texts = list(texts)
        old = self.tokenizer.get_vocab() if self.tokenizer is not None else {}
        case = vocabulary_case(old) if old else "lower"
        if old:
            seen = {c for t in texts for c in normalise_transcript(t, case, keep=old) if not c.isspace()}
            uncovered = sorted(seen - set(old))
            if not uncovered:
                LOG.info("%s: keeping the pretrained CTC vocabulary (%d tokens): it covers every character of "
                         "the %d target texts", self.source, len(old), len(texts))
                return "kept"
        else:
            uncovered = []
        keep = KEPT_PUNCTUATION | {t for t in old if len(t) == 1}
        vocab = character_vocabulary(normalise_transcript(t, case, keep) for t in texts)
        self.tokenizer = ctc_tokenizer(vocab)
        self._reset_head(len(vocab), vocab[PAD])
        why = (f"{len(uncovered)} character(s) of the target texts are not in the pretrained one: "
               f"{''.join(uncovered)!r}" if old else "the checkpoint had none")
        LOG.warning("%s: rebuilt the CTC vocabulary (%d tokens) because %s; the output head is new and random",
                    self.source, len(vocab), why)
        return "rebuilt"

    def _reset_head(self, size: int, pad_id: int) -> None:
        old = self.module.lm_head
        head = nn.Linear(old.in_features, size, device=old.weight.device, dtype=old.weight.dtype)
        nn.init.normal_(head.weight, mean=0.0, std=self.module.config.initializer_range)
        nn.init.zeros_(head.bias)
        self.module.lm_head = head
        self.module.config.vocab_size = size
        self.module.config.pad_token_id = pad_id
        self._beam_decoders.clear()

    # -- inputs ---------------------------------------------------------------------------------
    def collate(self, audios: Sequence[np.ndarray], texts: Sequence[str] | None = None,
                langs: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """``input_values`` (normalised, zero-padded), ``input_lengths`` in samples, ``attention_mask`` when
        the checkpoint was trained with one (wav2vec2-base was not: it must see zero padding), ``labels``."""
        fe = self.feature_extractor
        # The mask is always requested so that normalisation sees each utterance's own samples only.
        feats = fe([np.asarray(a, dtype=np.float32) for a in audios], sampling_rate=self.sampling_rate,
                   padding=True, return_attention_mask=True, return_tensors="pt")
        batch = {"input_values": feats.input_values, "input_lengths": torch.tensor([len(a) for a in audios])}
        if fe.return_attention_mask:
            batch["attention_mask"] = feats.attention_mask
        if texts is not None:
            batch["labels"] = self._labels(texts)
        return batch

    def _labels(self, texts: Sequence[str]) -> torch.Tensor:
        vocab = self._vocab()
        seqs = [self.tokenizer.encode(self.normalise(t), add_special_tokens=False) for t in texts]
        unk = vocab.get(self.tokenizer.unk_token)
        if not self._warned_unknown and unk is not None and any(unk in s for s in seqs):
            self._warned_unknown = True
            LOG.warning("%s: some target characters are not in the CTC vocabulary and train as %s; "
                        "call fit_vocabulary(train_texts) before training", self.source, self.tokenizer.unk_token)
        labels = torch.full((len(seqs), max([1, *map(len, seqs)])), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            labels[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        return labels

    # -- compute --------------------------------------------------------------------------------
    def output_lengths(self, batch: dict[str, torch.Tensor], frames: int) -> torch.Tensor:
        """Frames of real audio per utterance (the rest of the ``frames`` are padding)."""
        if "input_lengths" in batch:
            samples = batch["input_lengths"]
        elif "attention_mask" in batch:
            samples = batch["attention_mask"].sum(-1)
        else:
            samples = torch.full((len(batch["input_values"]),), batch["input_values"].shape[-1])
        return self.module._get_feat_extract_output_lengths(samples).long().clamp(max=frames)

    def _forward(self, batch: dict[str, torch.Tensor], module: nn.Module | None = None) -> torch.Tensor:
        values = batch["input_values"].to(self.device, dtype=next(self.module.parameters()).dtype)
        mask = batch.get("attention_mask")
        return (module or self.module)(input_values=values,
                                       attention_mask=mask.to(self.device) if mask is not None else None).logits

    def ctc_loss(self, logits: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean over utterances of each one's CTC loss divided by its target length, always in fp32."""
        with torch.autocast(device_type=logits.device.type, enabled=False), torch.backends.cudnn.flags(enabled=False):
            log_probs = nn.functional.log_softmax(logits.float(), dim=-1).transpose(0, 1)
            labels = labels.to(logits.device)
            mask = labels >= 0
            return nn.functional.ctc_loss(log_probs, labels[mask], lengths.to(logits.device), mask.sum(-1),
                                          blank=self.module.config.pad_token_id, reduction="mean",
                                          zero_infinity=bool(self.module.config.ctc_zero_infinity))

    def logits(self, batch: dict[str, torch.Tensor],
               module: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame logits; the mask is each utterance's real frames (see :meth:`output_lengths`)."""
        # transformers backpropagates into a conv stack flagged trainable even when its weights are frozen;
        # follow the weights, so a frozen feature encoder costs no backward pass.
        encoder = self.module.base_model.feature_extractor
        encoder._requires_grad = any(p.requires_grad for p in encoder.parameters())
        logits = self._forward(batch, module)
        frames = torch.arange(logits.shape[1], device=logits.device)
        return logits, frames < self.output_lengths(batch, logits.shape[1]).to(logits.device)[:, None]

    def loss_from_logits(self, batch: dict[str, torch.Tensor], logits: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        return self.ctc_loss(logits, batch["labels"], mask.sum(-1))

    @torch.inference_mode()
    def transcribe(self, batch: dict[str, torch.Tensor], num_beams: int = 1, lm: str | os.PathLike | None = None,
                   lm_alpha: float | None = None, lm_beta: float | None = None, **options: Any) -> list[str]:
        """Greedy CTC decoding, or with ``num_beams > 1`` pyctcdecode's beam search, with a KenLM ``lm`` if given.

        ``lm_alpha`` weighs the language model and ``lm_beta`` rewards each word (pyctcdecode's names and,
        when None, its defaults).
        """
        return [t for t, _ in self.transcribe_scored(batch, num_beams, lm, lm_alpha, lm_beta, **options)]

    @torch.inference_mode()
    def transcribe_scored(self, batch: dict[str, torch.Tensor], num_beams: int = 1,
                          lm: str | os.PathLike | None = None, lm_alpha: float | None = None,
                          lm_beta: float | None = None, **options: Any) -> list[tuple[str, float]]:
        """Texts as :meth:`transcribe` decodes them, each with the mean over its frames of the greedy path's
        log-posterior (the network's own confidence, whatever a beam search and LM then make of it)."""
        if options:
            raise TypeError(f"unknown decoding option(s) {sorted(options)} for a CTC model; it takes num_beams, "
                            "lm, lm_alpha, lm_beta")
        if lm is not None and num_beams <= 1:
            raise ValueError("lm= is used by beam search only: pass num_beams > 1 as well (e.g. 32)")
        vocab = self._vocab()
        logits = self._forward(batch).float()
        logits[..., self._sentence_markers()] = float("-inf")
        lengths = self.output_lengths(batch, logits.shape[1]).tolist()
        log_probs = nn.functional.log_softmax(logits, dim=-1)
        best = log_probs.max(-1)
        confidence = [float(best.values[i, :n].mean()) if n else 0.0 for i, n in enumerate(lengths)]
        if num_beams <= 1:
            ids = best.indices.cpu()
            texts = [self.tokenizer.decode(ids[i, :n].tolist()) for i, n in enumerate(lengths)]
        else:
            decoder = self._beam_decoder(vocab, lm, lm_alpha, lm_beta)
            lp = log_probs[..., :len(vocab)].cpu().numpy()
            texts = [decoder.decode(lp[i, :n], beam_width=num_beams) for i, n in enumerate(lengths)]
        return [(" ".join(t.split()), c) for t, c in zip(texts, confidence, strict=True)]

    def _sentence_markers(self) -> list[int]:
        """Ids of the tokenizer's ``<s>``/``</s>``, when its vocabulary has them (a vocabulary built here has not)."""
        tok = self.tokenizer
        ids = {tok.convert_tokens_to_ids(t) for t in (tok.bos_token, tok.eos_token) if t is not None}
        ids -= {None, tok.unk_token_id, self.module.config.pad_token_id}  # an absent token converts to <unk>
        return sorted(i for i in ids if i < self.module.lm_head.out_features)

    def _beam_decoder(self, vocab: dict[str, int], lm: str | os.PathLike | None, alpha: float | None,
                      beta: float | None):
        key = (str(lm) if lm else None, alpha, beta)
        if key in self._beam_decoders:
            return self._beam_decoders[key]
        if importlib.util.find_spec("pyctcdecode") is None:
            raise MissingPackageError("beam search for CTC models needs pyctcdecode (and kenlm for an n-gram LM): "
                                      "pip install --no-deps pyctcdecode pygtrie && pip install kenlm (pyctcdecode "
                                      "0.5 pins numpy<2 but runs on numpy 2; without --no-deps pip downgrades numpy "
                                      "under pandas) — or decode greedily with num_beams=1")
        if lm is not None:
            if importlib.util.find_spec("kenlm") is None:
                raise MissingPackageError(f"lm={lm}: reading a KenLM model needs the kenlm package: pip install kenlm")
            if not Path(lm).is_file():
                raise FileNotFoundError(f"lm={lm}: no such KenLM model file (.arpa or .bin)")
        from pyctcdecode import build_ctcdecoder

        if len(vocab) > self.module.lm_head.out_features:
            raise ModelLoadError(f"{self.source}: {len(vocab)} vocabulary tokens for "
                                 f"{self.module.lm_head.out_features} head outputs")
        labels = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        labels = ["" if i == self.module.config.pad_token_id else " " if t == self.tokenizer.word_delimiter_token
                  else t for i, t in enumerate(labels)]
        weights = {k: v for k, v in (("alpha", alpha), ("beta", beta)) if v is not None}
        decoder = build_ctcdecoder(labels, kenlm_model_path=str(lm) if lm else None, **weights)
        self._beam_decoders[key] = decoder
        return decoder

    settings = SETTINGS

    def configure(self, **settings: Any) -> None:
        """Set SpecAugment, LayerDrop and CTC settings on the model config (see :data:`SETTINGS`)."""
        super().configure(**settings)
        config, base = self.module.config, self.module.base_model
        if (config.mask_time_prob > 0 or config.mask_feature_prob > 0) and not hasattr(base, "masked_spec_embed"):
            # transformers only creates the mask vector for configs that masked from the start.
            ref = next(base.encoder.parameters())
            base.masked_spec_embed = nn.Parameter(torch.empty(config.hidden_size, device=ref.device,
                                                              dtype=ref.dtype).uniform_())

    # -- structure ------------------------------------------------------------------------------
    def blocks(self) -> dict[str, list[nn.Module]]:
        return {"encoder": list(self.module.base_model.encoder.layers)}

    @property
    def hidden_size(self) -> int:
        return int(self.module.config.hidden_size)

    def parts(self) -> dict[str, list[nn.Parameter]]:
        base = self.module.base_model
        conv = list(base.feature_extractor.parameters())
        conv_ids = {id(p) for p in conv}
        return {"feature_encoder": conv, "encoder": [p for p in base.parameters() if id(p) not in conv_ids],
                "head": list(self.module.lm_head.parameters()),
                **{f"encoder.layers.{i}": list(layer.parameters()) for i, layer in enumerate(base.encoder.layers)}}

    def save(self, out_dir: str | os.PathLike) -> None:
        out_dir = Path(out_dir)
        self.module.save_pretrained(out_dir)
        self.feature_extractor.save_pretrained(out_dir)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(out_dir)

    def describe(self) -> dict[str, Any]:
        vocab = self.tokenizer.get_vocab() if self.tokenizer is not None else {}
        return {**super().describe(), "vocabulary_size": len(vocab)}


def _feature_extractor(path: str | os.PathLike, config, **kwargs: Any):
    """The checkpoint's feature extractor, or wav2vec2's defaults where it ships none (many HuBERTs)."""
    from transformers import Wav2Vec2FeatureExtractor

    try:
        return Wav2Vec2FeatureExtractor.from_pretrained(path, **kwargs)
    except OSError:
        with_mask = getattr(config, "feat_extract_norm", "layer") == "layer"  # data2vec-audio: always layer
        LOG.warning("%s has no preprocessor_config.json; using wav2vec2's feature extractor (16 kHz, normalised, "
                    "attention mask %s)", path, "on" if with_mask else "off")
        return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                        return_attention_mask=with_mask)


def _tokenizer(path: str | os.PathLike, target_lang: str | None, **kwargs: Any):
    """The checkpoint's character tokenizer; None for a pretrained-only checkpoint (no ``vocab.json``)."""
    from transformers import Wav2Vec2CTCTokenizer
    from transformers.utils import cached_file

    hub = ("cache_dir", "token", "revision", "local_files_only", "subfolder")
    where = {k: v for k, v in kwargs.items() if k in hub}
    if cached_file(path, "vocab.json", _raise_exceptions_for_missing_entries=False, **where) is None:
        LOG.warning("%s has no CTC vocabulary (vocab.json): a pretrained-only checkpoint; fit_vocabulary(texts) "
                    "will build one with a fresh head", path)
        return None
    if target_lang is not None:
        kwargs["target_lang"] = target_lang
    return Wav2Vec2CTCTokenizer.from_pretrained(path, **kwargs)
