"""The CTC family on tiny wav2vec2-like models built here; and adapt/evaluate running it unchanged."""

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import SENTENCES, TINY_CTC, build_tiny_ctc, spoken, toy_corpus

from speechtl.adapt.config import TrainConfig
from speechtl.adapt.methods import apply_method
from speechtl.adapt.trainer import train
from speechtl.cli import main
from speechtl.data.manifest import read_manifest
from speechtl.errors import MissingPackageError
from speechtl.evaluate.decode import DecodeOptions, run_key, transcribe_utterances
from speechtl.evaluate.evaldir import score_hypotheses
from speechtl.features.audio import load_audio
from speechtl.models import FAMILIES, load_model
from speechtl.models.ctc import CTCASR

PAIR = ["the cat sat", "a dog ran"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: for models this small thread hand-offs cost more than the maths, and on a
    busy 2-core machine two threads made a training step 80x slower (0.86 s against 0.011 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """A tiny model trained on two utterances until greedy decoding gets both right (or 300 steps)."""
    model = load_model(str(build_tiny_ctc(tmp_path_factory.mktemp("overfit_src"), PAIR)))
    audios = [spoken(t) for t in PAIR]
    batch, inputs = model.collate(audios, PAIR), model.collate(audios)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.module.parameters(), lr=5e-3)
    losses, hyps = [], []
    for step in range(1, 301):
        model.module.train()
        loss = model.loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        if step % 10 == 0:
            model.module.eval()
            hyps = model.transcribe(inputs)
            if hyps == PAIR:
                break
    out = tmp_path_factory.mktemp("overfit") / "model"
    model.save(out)
    return {"model": model, "dir": out, "losses": losses, "hyps": hyps, "audios": audios}


def test_loss_falls_and_greedy_decoding_transcribes_the_overfit_pair(overfit):
    losses = overfit["losses"]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.1 * losses[0]
    assert overfit["hyps"] == PAIR


def test_save_and_reload_gives_identical_transcripts(overfit, tiny_ctc, tmp_path):
    again = load_model(str(overfit["dir"]))
    assert isinstance(again, CTCASR) and again.family == "ctc"
    assert again.transcribe(again.collate(overfit["audios"])) == PAIR
    random_model = load_model(str(tiny_ctc))  # a random model's (non-empty) outputs survive a round trip too
    audio = [np.random.default_rng(1).standard_normal(12000).astype(np.float32) * 0.1]
    before = random_model.transcribe(random_model.collate(audio))
    random_model.save(tmp_path / "copy")
    assert before[0] and load_model(str(tmp_path / "copy")).transcribe(random_model.collate(audio)) == before


def test_collate_pads_audio_and_labels(tiny_ctc):
    model = load_model(str(tiny_ctc))
    audios = [spoken("the cat"), spoken("a dog ran in the park")]
    batch = model.collate(audios, ["The Cat!", "a dog-ran, in the park"])
    n = max(len(a) for a in audios)
    assert batch["input_values"].shape == (2, n)
    assert batch["attention_mask"][0].sum().item() == len(audios[0]) and batch["attention_mask"][1].all()
    assert batch["input_lengths"].tolist() == [len(a) for a in audios]
    labels = batch["labels"]
    # case folded to the vocabulary's, punctuation dropped, a dash is a word break
    assert (labels[0, len("the cat"):] == -100).all() and (labels[0, :len("the cat")] >= 0).all()
    assert (labels[1] >= 0).all()
    assert model.tokenizer.decode(labels[1].tolist(), group_tokens=False) == "a dog ran in the park"
    assert "labels" not in model.collate(audios)
    # an upper-case vocabulary gets upper-case targets
    upper = load_model(str(build_tiny_ctc(tiny_ctc.parent / "upper", case="upper")))
    ids = upper.collate([audios[0]], ["the cat"])["labels"][0].tolist()
    assert upper.tokenizer.decode(ids, group_tokens=False) == "THE CAT"


def test_ctc_loss_stays_fp32_and_finite_under_bf16_autocast(tiny_ctc):
    model = load_model(str(tiny_ctc))
    batch = model.collate([spoken(t) for t in PAIR], PAIR)
    reference = model.loss(batch)
    logits = []
    model.module.lm_head.register_forward_hook(lambda m, i, o: logits.append(o))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(batch)
    assert logits[-1].dtype == torch.bfloat16  # the forward really ran in bf16…
    assert loss.dtype == torch.float32 and torch.isfinite(loss)  # …and the loss did not
    assert abs(loss.item() - reference.item()) < 0.05 * reference.item()
    # everything after the logits is full precision: same value as in float64 from those bf16 logits
    labels = batch["labels"]
    exact = torch.nn.functional.ctc_loss(
        torch.log_softmax(logits[-1].detach().double(), -1).transpose(0, 1), labels[labels >= 0],
        model.output_lengths(batch, logits[-1].shape[1]), (labels >= 0).sum(-1), blank=0)
    assert abs(loss.item() - exact.item()) < 1e-5 * exact.item()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.module.parameters() if p.grad is not None)


def test_zero_infinity_comes_from_the_config(tiny_ctc):
    model = load_model(str(tiny_ctc))
    model.configure(ctc_zero_infinity=False)
    batch = model.collate([spoken("a")[:3200]], ["the cat sat on the mat"])  # 0.2 s: 10 frames, 22 characters
    assert torch.isinf(model.loss(batch))
    model.configure(ctc_zero_infinity=True)
    assert model.loss(batch).item() == 0.0


def test_vocabulary_is_kept_when_it_covers_the_text_and_rebuilt_otherwise(tiny_ctc, tmp_path, caplog):
    model = load_model(str(tiny_ctc))
    head = model.module.lm_head
    assert model.fit_vocabulary(["The cat, sat on the mat.", "we LIKE green tea"]) == "kept"
    assert model.module.lm_head is head
    caplog.set_level(logging.INFO, logger="speechtl.models.ctc")
    texts = ["ça sent très bien", "the cat sat"]
    assert model.fit_vocabulary(texts) == "rebuilt"
    assert "rebuilt the CTC vocabulary" in caplog.text and "'çè'" in caplog.text
    vocab = model.tokenizer.get_vocab()
    assert {"ç", "è", "<pad>", "<unk>", "|"} <= set(vocab) and "m" not in vocab
    assert model.module.lm_head.out_features == len(vocab) != head.out_features
    assert model.module.config.vocab_size == len(vocab) and model.module.config.pad_token_id == vocab["<pad>"]
    labels = model.collate([spoken("a")], ["Ça sent"])["labels"][0]
    assert vocab["<unk>"] not in labels.tolist()
    model.save(tmp_path / "rebuilt")
    again = load_model(str(tmp_path / "rebuilt"))
    assert again.module.lm_head.out_features == len(vocab) and again.fit_vocabulary(texts) == "kept"


def test_a_pretrained_only_checkpoint_gets_its_vocabulary_from_the_texts(tiny_ctc, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_ctc, bare)
    for f in ("vocab.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        (bare / f).unlink(missing_ok=True)
    model = load_model(str(bare))
    assert model.tokenizer is None
    with pytest.raises(ValueError, match="fit_vocabulary"):
        model.collate([spoken("a")], ["a"])
    assert model.fit_vocabulary(PAIR) == "rebuilt"
    assert len(model.transcribe(model.collate([spoken("a")]))) == 1


def test_parts_name_the_feature_encoder_encoder_layers_and_head(tiny_ctc):
    model = load_model(str(tiny_ctc))
    parts = model.parts()
    assert {"feature_encoder", "encoder", "head", "encoder.layers.0", "encoder.layers.1"} <= set(parts)
    conv = {id(p) for p in parts["feature_encoder"]}
    enc = {id(p) for p in parts["encoder"]}
    head = {id(p) for p in parts["head"]}
    assert conv and not conv & enc and not head & (conv | enc)
    assert conv | enc | head == {id(p) for p in model.module.parameters()}
    assert {id(p) for p in parts["encoder.layers.1"]} < enc
    assert {id(p) for p in model.module.wav2vec2.feature_extractor.parameters()} == conv
    apply_method(model, TrainConfig(method="freeze", settings=["feature_encoder"]))
    assert not any(p.requires_grad for p in parts["feature_encoder"])
    assert all(p.requires_grad for p in parts["encoder"] + parts["head"])
    model.module.train()
    model.loss(model.collate([spoken("a dog")], ["a dog"])).backward()
    assert model.module.wav2vec2.feature_extractor._requires_grad is False  # no backward through frozen convs
    assert all(p.grad is None for p in parts["feature_encoder"])


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_ctc):
    model = load_model(str(tiny_ctc))
    batch = model.collate([spoken(t) for t in PAIR], PAIR)
    model.module.train()
    plain = model.loss(batch)
    plain.backward()
    grads = [p.grad.clone() for p in model.module.parameters()]
    model.module.zero_grad()
    model.enable_gradient_checkpointing()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.module.modules())
    again = model.loss(batch)
    again.backward()
    assert torch.allclose(plain, again)
    assert all(torch.allclose(g, p.grad, atol=1e-6) for g, p in zip(grads, model.module.parameters(), strict=True))


def test_configure_sets_spec_augment_and_rejects_unknown_settings(tiny_ctc):
    model = load_model(str(tiny_ctc))
    assert not hasattr(model.module.wav2vec2, "masked_spec_embed")  # built with mask_time_prob 0
    model.configure(mask_time_prob=0.5, mask_time_length=2, mask_feature_prob=0.2, mask_feature_length=4,
                    layerdrop=0.0, ctc_zero_infinity=True)
    cfg = model.module.config
    assert (cfg.mask_time_prob, cfg.mask_time_length) == (0.5, 2)
    assert (cfg.mask_feature_prob, cfg.mask_feature_length) == (0.2, 4)
    batch = model.collate([spoken("the cat sat")])
    model.module.eval()
    with torch.no_grad():
        clean = model._forward(batch)
        model.module.train()
        masked = model._forward(batch)
    assert not torch.allclose(clean, masked)  # masking is on in training only
    with pytest.raises(ValueError, match="unknown ctc model setting.*mask_time_prob"):
        model.configure(mask_time_probability=0.1)
    with pytest.raises(ValueError, match="probability"):
        model.configure(mask_time_prob=1.5)
    with pytest.raises(ValueError, match="integer"):
        model.configure(mask_time_length=0)
    with pytest.raises(ValueError):
        model.configure(mask_time_prob=0.1, mask_time_length=-1)
    assert (cfg.mask_time_prob, cfg.mask_time_length) == (0.5, 2)  # a rejected call changes nothing


def test_beam_search_through_pyctcdecode_agrees_with_greedy(overfit):
    pytest.importorskip("pyctcdecode")
    model = load_model(str(overfit["dir"]))
    batch = model.collate(overfit["audios"])
    assert model.transcribe(batch, num_beams=8) == PAIR
    with pytest.raises(ValueError, match="num_beams"):
        model.transcribe(batch, lm="x.arpa")
    with pytest.raises(TypeError, match="unknown decoding option"):
        model.transcribe(batch, temperature=0.5)


def bigram_arpa(sentences: list[str]) -> str:
    """A bigram KenLM model (ARPA text, tab-separated as KenLM requires) of ``sentences``, by hand."""
    words = ["<unk>", "<s>", "</s>", *dict.fromkeys(" ".join(sentences).split())]
    prob = {"<unk>": "-1.2", "<s>": "0"}
    unigrams = [(prob.get(w, "-0.8"), w, "0" if w in ("<unk>", "</s>") else "-0.3") for w in words]
    bigrams = [("-0.1", f"{a} {b}") for t in sentences
               for a, b in zip(["<s>", *t.split()], [*t.split(), "</s>"], strict=True)]
    return "\n".join(["\\data\\", f"ngram 1={len(unigrams)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:",
                      *("\t".join(u) for u in unigrams), "", "\\2-grams:", *("\t".join(b) for b in bigrams), "",
                      "\\end\\", ""])


def test_beam_search_with_a_kenlm_model(overfit, tmp_path):
    """The LM path end to end: kenlm reads the ARPA file, an LM of the right sentences keeps a right beam right,
    with its weights at zero the search is the LM-free one, and a heavily weighted LM that knows only one of the
    sentences drags the other away from what the acoustics say (so the LM is really in the search)."""
    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    lm = tmp_path / "pair.arpa"
    lm.write_text(bigram_arpa(PAIR))
    model = load_model(str(overfit["dir"]))
    batch = model.collate(overfit["audios"])
    assert model.transcribe(batch, num_beams=8, lm=lm) == PAIR
    scored = model.transcribe_scored(batch, num_beams=8, lm=lm, lm_alpha=0.0, lm_beta=0.0)
    assert [t for t, _ in scored] == model.transcribe(batch, num_beams=8)
    assert len(model._beam_decoders) == 3  # one decoder per (lm, alpha, beta), built once
    cats = tmp_path / "cats.arpa"
    cats.write_text(bigram_arpa(PAIR[:1]))
    heavy = model.transcribe(batch, num_beams=8, lm=cats, lm_alpha=5.0)
    assert heavy[0] == PAIR[0] and heavy[1] != PAIR[1]
    with pytest.raises(FileNotFoundError, match="no such KenLM model"):
        model.transcribe(batch, num_beams=8, lm=tmp_path / "absent.arpa")


def test_eval_fuses_a_kenlm_model_from_the_command_line(overfit, tiny_whisper, tmp_path, capsys):
    """``speechtl eval --beams N --lm F``: the LM reaches the search (a heavy LM that knows one sentence changes
    the other), the options are in scores.json and the run key (an edited LM file decodes again), and what can't
    work is refused before any decoding: no beam, no file, a Whisper model, the CTranslate2 backend."""
    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    manifest = toy_corpus(tmp_path / "pair", n=2, texts=PAIR)
    utts = read_manifest(manifest)
    for u in utts:
        sf.write(u.audio, spoken(u.text), 16000)
    cats = tmp_path / "cats.arpa"
    cats.write_text(bigram_arpa(PAIR[:1]))
    model = str(overfit["dir"])

    def run(out, *extra):
        code = main(["eval", "--model", model, "--manifest", str(manifest), "--out", str(tmp_path / out),
                     "--device", "cpu", *map(str, extra)])
        return code, capsys.readouterr().err

    def hyps(out):
        return [json.loads(x)["hyp"] for x in (tmp_path / out / "hyp.jsonl").read_text().splitlines()]

    assert run("beam", "--beams", 8)[0] == 0 and hyps("beam") == PAIR
    assert run("lm", "--beams", 8, "--lm", cats, "--lm-alpha", 5)[0] == 0
    assert hyps("lm")[0] == PAIR[0] and hyps("lm")[1] != PAIR[1]
    options = json.loads((tmp_path / "lm" / "scores.json").read_text())["options"]
    assert (options["lm"], options["lm_alpha"], options["lm_beta"]) == (str(cats), 5.0, None)

    keys = {name: run_key(model, manifest, DecodeOptions(**kw), utts) for name, kw in {
        "greedy": {}, "beam": {"num_beams": 8}, "lm": {"num_beams": 8, "lm": str(cats)},
        "alpha": {"num_beams": 8, "lm": str(cats), "lm_alpha": 5.0}}.items()}
    assert len(set(keys.values())) == 4
    cats.write_text(bigram_arpa(PAIR))  # the same path, another model: not the same decode
    assert run_key(model, manifest, DecodeOptions(num_beams=8, lm=str(cats), lm_alpha=5.0), utts) != keys["alpha"]

    for extra, said in [(("--lm", cats), "give --beams > 1"),
                        (("--beams", 8, "--lm", tmp_path / "absent.arpa"), "no such KenLM model file"),
                        (("--beams", 8, "--lm", cats, "--backend", "ctranslate2"), "CTranslate2 runs Whisper")]:
        code, err = run("refused", *extra)
        assert code == 2 and said in err
    code = main(["eval", "--model", str(tiny_whisper), "--manifest", str(manifest), "--out", str(tmp_path / "w"),
                 "--beams", "2", "--lm-alpha", "1"])
    assert code == 2 and "seq2seq model, whose decoder is its own language model" in capsys.readouterr().err
    assert not (tmp_path / "refused" / "scores.json").exists() and not (tmp_path / "w" / "scores.json").exists()


def test_beam_search_without_pyctcdecode_or_kenlm_says_what_to_install(tiny_ctc, toy_manifest, tmp_path, monkeypatch,
                                                                        capsys):
    """An ImportError that is the user's to fix: `speechtl eval` prints it and exits 2, not as an internal error."""
    import importlib.util

    real = importlib.util.find_spec
    model = load_model(str(tiny_ctc))
    batch = model.collate([spoken("a")])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyctcdecode" else real(name, *a))
    with pytest.raises(MissingPackageError, match="pip install --no-deps pyctcdecode pygtrie"):
        model.transcribe(batch, num_beams=4)
    assert main(["eval", "--model", str(tiny_ctc), "--manifest", str(toy_manifest), "--out", str(tmp_path / "ev"),
                 "--beams", "4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps pyctcdecode" in err and "internal error" not in err
    faked = {"pyctcdecode": real("json"), "kenlm": None}  # pyctcdecode "installed", kenlm not
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: faked[name] if name in faked else real(name, *a))
    with pytest.raises(ImportError, match="pip install kenlm"):
        model.transcribe(batch, num_beams=4, lm=tmp_path / "lm.arpa")


def _tiny_checkpoint(out, model_type: str):
    from transformers import AutoConfig, AutoModelForCTC

    from speechtl.models.ctc import CTCASR, character_vocabulary, ctc_tokenizer

    vocab = character_vocabulary(PAIR)
    sizes = dict(vocab_size=len(vocab), pad_token_id=0, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, conv_dim=[16] * 3, conv_kernel=[10, 8, 4], conv_stride=[5, 8, 8],
                 mask_time_prob=0.0, layerdrop=0.0)
    if model_type != "data2vec-audio":  # there it counts positional conv layers
        sizes.update(num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    torch.manual_seed(0)
    module = AutoModelForCTC.from_config(AutoConfig.for_model(model_type, **sizes))
    from transformers import Wav2Vec2FeatureExtractor

    # data2vec-audio has no feat_extract_norm: its convs are always layer-normed
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=getattr(module.config, "feat_extract_norm", "layer") == "layer")
    CTCASR(module, fe, ctc_tokenizer(vocab), source=str(out)).save(out)
    return out


@pytest.mark.parametrize("model_type", sorted(t for t, c in FAMILIES.items() if c.endswith(":CTCASR")))
def test_every_registered_ctc_type_loads_trains_and_decodes(model_type, tmp_path):
    model = load_model(str(_tiny_checkpoint(tmp_path / model_type, model_type)))
    saved = json.loads((tmp_path / model_type / "config.json").read_text())
    assert isinstance(model, CTCASR) and saved["model_type"] == model_type
    assert {"feature_encoder", "encoder", "head", "encoder.layers.1"} <= set(model.parts())
    audios = [spoken(t) for t in PAIR]
    model.module.train()
    loss = model.loss(model.collate(audios, PAIR))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    model.module.eval()
    hyps = model.transcribe(model.collate(audios))
    assert len(hyps) == 2 and all(isinstance(h, str) for h in hyps)


def test_evaluate_decodes_a_manifest_with_no_knowledge_of_the_family(tiny_ctc, toy_manifest):
    model = load_model(str(tiny_ctc))
    utts = read_manifest(toy_manifest)
    hyps = transcribe_utterances(model, utts, DecodeOptions(batch_size=3))
    assert set(hyps) == {u.id for u in utts}
    alone = {u.id: model.transcribe(model.collate([load_audio(u.audio, 16000)]))[0] for u in utts}
    assert hyps == alone and any(alone.values())  # batching and padding change nothing
    rows, scores = score_hypotheses(utts, hyps)
    assert len(rows) == len(utts) and scores.wer.ref > 0


def test_adapt_trains_it_with_a_frozen_feature_encoder(tiny_ctc, toy_manifest, tmp_path):
    model = load_model(str(tiny_ctc))
    assert model.fit_vocabulary([u.text for u in read_manifest(toy_manifest)]) == "kept"
    before = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    utts = read_manifest(toy_manifest)

    def dev_wer(m):
        _, scores = score_hypotheses(utts[:2], transcribe_utterances(m, utts[:2], DecodeOptions(batch_size=2)))
        return scores.wer.rate

    cfg = TrainConfig(method="freeze", settings=["feature_encoder"], learning_rate=3e-3, warmup_steps=0, max_steps=3,
                      batch_size=4, eval_every=0, save_every=2, log_every=1, lr_scheduler="constant")
    summary = train(model, utts, tmp_path / "exp", cfg, evaluator=dev_wer)
    assert summary["steps"] == 3 and summary["best_dev_wer"] is not None
    assert summary["trainable_parameters"] < summary["total_parameters"]
    after = load_model(str(tmp_path / "exp"))
    assert isinstance(after, CTCASR)
    changed = {k for k, v in after.module.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and not any(k.startswith("wav2vec2.feature_extractor.") for k in changed)
    assert any(k.startswith("wav2vec2.encoder.layers.") for k in changed) and "lm_head.weight" in changed


def test_whisper_keeps_its_byte_level_vocabulary(tiny_whisper):
    assert load_model(str(tiny_whisper)).fit_vocabulary(["ça va très bien ✓"]) == "kept"


def test_new_model_rejects_mismatched_conv_settings(tmp_path):
    from speechtl.models.ctc import new_ctc_model

    with pytest.raises(ValueError, match="conv_dim has 2 widths for 3 conv layers"):
        new_ctc_model(tmp_path / "m", SENTENCES, **{**TINY_CTC, "conv_dim": [16, 16]})


def test_new_ctc_model_command(toy_manifest, tmp_path, capsys):
    from speechtl.cli import main

    conf = tmp_path / "arch.yaml"
    conf.write_text("hidden_size: 32\nnum_layers: 1\nnum_heads: 2\nconv_dim: 16\nconv_kernel: [10, 8, 4]\n"
                    "conv_stride: [5, 8, 8]\nnum_conv_pos_embeddings: 16\n")
    out = tmp_path / "init"
    assert main(["new-ctc-model", "--texts", str(toy_manifest), "--config", str(conf), "--out", str(out)]) == 0
    model = load_model(str(out))
    assert model.family == "ctc" and model.module.config.num_hidden_layers == 1
    assert model.fit_vocabulary([u.text for u in read_manifest(toy_manifest)]) == "kept"
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert main(["new-ctc-model", "--texts", str(toy_manifest), "--config", str(conf), "--out", str(out)]) == 0
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp  # an existing model is left alone
    conf.write_text("hidden_sise: 32\n")
    args = ["new-ctc-model", "--texts", str(toy_manifest), "--config", str(conf), "--out", str(tmp_path / "x")]
    assert main(args) == 2
    assert "hidden_sise" in capsys.readouterr().err


def test_freezing_the_first_n_layers(tiny_ctc):
    from speechtl.adapt.config import ConfigError

    model = load_model(str(tiny_ctc))
    apply_method(model, TrainConfig(method="freeze", settings=["feature_encoder", "encoder.layers.:1"]))
    layers = model.module.wav2vec2.encoder.layers
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    with pytest.raises(ConfigError, match="first 3 of 2 encoder layers"):
        apply_method(model, TrainConfig(method="freeze", settings=["encoder.layers.:3"]))
