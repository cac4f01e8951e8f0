"""The CTC family against a vocabulary it did not build: facebook/wav2vec2-base-960h's, with tiny random weights.

The four files below are that checkpoint's own (upper-case letters, ``|`` between words, ``<s>``/``</s>``
it never uses, 32 symbols); only the weights are small and random.
"""

import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import write_manifest_rows

from speechtl.cli import main
from speechtl.data.manifest import read_manifest
from speechtl.evaluate.decode import DecodeOptions, evaluate_manifest
from speechtl.models import load_model
from speechtl.models.ctc import CTCASR

LETTERS = "ETAONIHSRDLUMWCFGYPBVK'XJQZ"  # by frequency in LibriSpeech, as the checkpoint numbers them
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate(LETTERS)}}
TOKENIZER_CONFIG = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
                    "do_lower_case": False, "return_attention_mask": False, "do_normalize": True}
SPECIAL_TOKENS_MAP = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
PREPROCESSOR_CONFIG = {"do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                       "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False,
                       "sampling_rate": 16000}
#: What Whisper writes for these utterances (cased, punctuated) is what the references say.
REFS = {"u0": "Hello, World! It's a well-known fact.", "u1": "Don’t stop; JAZZ quizzes?", "u2": "Mr. Smith's boat."}
FRAMES_PER_SECOND = 50  # the conv stack below: 320 samples a frame, as wav2vec2's


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_960h(tmp_path_factory):
    """wav2vec2-base-960h's tokenizer and feature-extractor files beside a tiny random model of its kind
    (group-norm conv stack without biases, no stable layer norm, no attention mask)."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    d = tmp_path_factory.mktemp("wav2vec2-base-960h")
    for name, obj in (("vocab.json", VOCAB), ("tokenizer_config.json", TOKENIZER_CONFIG),
                      ("special_tokens_map.json", SPECIAL_TOKENS_MAP),
                      ("preprocessor_config.json", PREPROCESSOR_CONFIG)):
        (d / name).write_text(json.dumps(obj), encoding="utf-8")
    config = Wav2Vec2Config(vocab_size=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, hidden_size=32,
                            num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16, 16),
                            conv_kernel=(10, 8, 4), conv_stride=(5, 8, 8), conv_bias=False, feat_extract_norm="group",
                            do_stable_layer_norm=False, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                            ctc_loss_reduction="sum")
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(d)
    return d


def spelling(model: CTCASR, text: str, frames: int) -> torch.Tensor:
    """Logits (frames × vocabulary) whose greedy path spells ``text`` as a CTC model does: each character on
    two frames, a blank between repeats, ``|`` (twice) between words, and blanks and a ``|`` around it all."""
    vocab = model.tokenizer.get_vocab()
    path = [0, vocab["|"]]
    for i, ch in enumerate(text):
        tok = vocab["|"] if ch == " " else vocab[ch]
        if i and ch == text[i - 1]:
            path.append(0)
        path += [tok, tok]
    path += [vocab["|"], 0]
    assert len(path) <= frames, "audio too short for the text"
    logits = torch.full((frames, len(vocab)), -5.0)
    logits[torch.arange(frames), torch.tensor(path + [0] * (frames - len(path)))] = 5.0
    return logits


def speak_references(monkeypatch, model: CTCASR, texts_by_samples: dict[int, str]) -> None:
    """Make the model's forward pass output the spelling of each utterance's text (known by its length)."""

    def forward(batch, module=None):
        lengths = batch["input_lengths"].tolist()
        frames = int(model.output_lengths(batch, 10**9).max())
        return torch.stack([spelling(model, texts_by_samples[n], frames) for n in lengths])

    monkeypatch.setattr(model, "_forward", forward)


def test_the_checkpoint_loads_with_its_own_vocabulary(base_960h):
    model = load_model(str(base_960h))
    assert isinstance(model, CTCASR)
    assert model.tokenizer.get_vocab() == VOCAB and len(model.tokenizer) == 32
    assert model.tokenizer.word_delimiter_token == "|" and not model.tokenizer.do_lower_case
    assert not model.feature_extractor.return_attention_mask and "attention_mask" not in model.collate(
        [np.zeros(16000, dtype=np.float32)])
    assert model.describe()["vocabulary_size"] == 32


def test_english_text_keeps_the_vocabulary_after_the_same_case_folding(base_960h):
    model = load_model(str(base_960h))
    head = model.module.lm_head.weight.detach().clone()
    assert model.fit_vocabulary(REFS.values()) == "kept"
    assert model.tokenizer.get_vocab() == VOCAB and torch.equal(model.module.lm_head.weight, head)
    assert [model.normalise(t) for t in REFS.values()] == ["HELLO WORLD IT'S A WELL KNOWN FACT",
                                                           "DON'T STOP JAZZ QUIZZES", "MR SMITH'S BOAT"]
    labels = model.collate([np.zeros(16000, dtype=np.float32)] * 3, list(REFS.values()))["labels"]
    assert VOCAB["<unk>"] not in labels and VOCAB["<s>"] not in labels and VOCAB["</s>"] not in labels
    spelt = [model.tokenizer.decode([i for i in row if i >= 0], group_tokens=False) for row in labels.tolist()]
    assert spelt == [model.normalise(t) for t in REFS.values()]
    # a character the vocabulary can't spell still asks for a new one
    assert load_model(str(base_960h)).fit_vocabulary(["Café at 10"]) == "rebuilt"


def test_decoding_restores_normal_word_spacing(base_960h, monkeypatch):
    model = load_model(str(base_960h))
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 24000, 32000)]
    # the random head's own output: characters and single spaces, never the sentence markers
    word = r"(?:[A-Z']|<unk>)+"
    for text in model.transcribe(model.collate(audios)):
        assert re.fullmatch(rf"(?:{word}(?: {word})*)?", text), text
    speak_references(monkeypatch, model, {16000: "HELLO WORLD", 24000: "IT'S  A WELL KNOWN FACT", 32000: "ALL"})
    assert model.transcribe(model.collate(audios)) == ["HELLO WORLD", "IT'S A WELL KNOWN FACT", "ALL"]


def test_scoring_treats_it_as_whisper_output(base_960h, monkeypatch, tmp_path):
    """The same words, upper-case and unpunctuated from the CTC model or cased and punctuated as Whisper
    writes them, give the same evaluation: same normalised hypotheses, same WER and CER."""
    model = load_model(str(base_960h))
    seconds = {"u0": 2.0, "u1": 2.5, "u2": 3.0}
    said = {"u0": REFS["u0"], "u1": "Don't stop jazz quizes?", "u2": "Mister Smith's boat."}  # one word wrong
    rows = []
    for uid, s in seconds.items():
        sf.write(str(tmp_path / f"{uid}.wav"), np.zeros(int(16000 * s), dtype=np.float32), 16000)
        rows.append({"id": uid, "audio": f"{uid}.wav", "duration": s, "text": REFS[uid], "speaker": f"s{uid}",
                     "accent": "x"})
    manifest = write_manifest_rows(tmp_path / "test.jsonl", rows)
    utts = read_manifest(manifest)
    speak_references(monkeypatch, model, {int(16000 * seconds[u]): model.normalise(said[u]) for u in said})
    ctc = evaluate_manifest(str(base_960h), lambda: model, utts, manifest, tmp_path / "ctc" / "test",
                            DecodeOptions(batch_size=2))
    whisper_hyps = tmp_path / "whisper.jsonl"
    whisper_hyps.write_text("".join(json.dumps({"id": u, "hyp": t}) + "\n" for u, t in said.items()))
    assert main(["score", "--ref", str(manifest), "--hyp", str(whisper_hyps), "--out",
                 str(tmp_path / "whisper" / "test")]) == 0
    whisper = json.loads((tmp_path / "whisper" / "test" / "scores.json").read_text())

    def norm_rows(d):
        return {r["id"]: (r["ref_norm"], r["hyp_norm"]) for r in map(json.loads, (d / "hyp.jsonl").read_text()
                                                                      .splitlines())}

    ctc_rows = norm_rows(tmp_path / "ctc" / "test")
    assert {u: hyp for u, (_, hyp) in ctc_rows.items()} == {
        "u0": "hello world it is a well known fact", "u1": "do not stop jazz quizes", "u2": "mister smith is boat"}
    assert ctc_rows == norm_rows(tmp_path / "whisper" / "test")
    assert ctc["wer"] == whisper["wer"] and ctc["cer"] == whisper["cer"]
    assert ctc["wer"]["errors"] == 1
