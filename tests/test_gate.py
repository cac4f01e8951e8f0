"""The confidence gate: base model first, the adapter where the base is unsure; calibrated after training,
carried in the adapter's card, applied by eval, and off for what can't route (merged, CTranslate2)."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import SMALL, spoken_corpus

import speechtl
from speechtl.adapt.config import ConfigError, GateConfig, TrainConfig, load_config
from speechtl.adapt.trainer import train
from speechtl.cli import main
from speechtl.data.manifest import read_manifest
from speechtl.errors import UsageError
from speechtl.evaluate.decode import DecodeOptions, load_for_eval, transcribe_utterances, with_gate
from speechtl.evaluate.gate import DevRoutes, choose_threshold
from speechtl.features.audio import load_utterance
from speechtl.models import load_model
from speechtl.models.gate import Gate, compression_ratio, route

CONF = ("method: lora\nlora: {rank: 4, alpha: 8, dropout: 0.0}\nlearning_rate: 1.0e-2\nwarmup_steps: 0\n"
        "max_steps: 12\nbatch_size: 4\neval_every: 0\nlr_scheduler: constant\n"
        "model_settings: {audio_context: dynamic, audio_context_margin: 0.5}\n")


@pytest.fixture(scope="module")
def base(tiny_whisper, corpus, tmp_path_factory):
    """The tiny Whisper trained a little (so that its transcripts end and differ) and saved at dynamic context
    (margin: the default, 1 s): at the full 30 s a random model writes one text for every short utterance."""
    out = tmp_path_factory.mktemp("base")
    model = load_model(str(tiny_whisper))
    model.configure(audio_context="dynamic")
    train(model, read_manifest(corpus), out / "pre", TrainConfig(learning_rate=1e-2, warmup_steps=0, max_steps=120,
                                                                 batch_size=4, eval_every=0, lr_scheduler="constant"))
    return out / "pre" / "model"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return spoken_corpus(tmp_path_factory.mktemp("gate_corpus"), n=8)


@pytest.fixture(scope="module")
def gated(base, corpus, tmp_path_factory):
    """A LoRA experiment (margin 0.5 s) with a gate calibrated on the (here: training) dev set."""
    root = tmp_path_factory.mktemp("gated")
    accent = root / "accent.jsonl"  # "the accent": each sentence read backwards, which the base doesn't write
    accent.write_text("".join(json.dumps({**r, "text": " ".join(r["text"].split()[::-1]),
                                          "audio": str(corpus.parent / r["audio"])}) + "\n"
                              for r in map(json.loads, corpus.read_text().splitlines())))
    conf = root / "lora.yaml"
    conf.write_text(CONF + "gate: {base_share: 0.5, max_compression_ratio: 100}\n")
    assert main(["train", "--model", str(base), "--train", str(accent), "--dev", str(accent), "--config",
                 str(conf), "--out", str(root / "exp")]) == 0
    return root / "exp"


def audios_of(model, manifest):
    utts = read_manifest(manifest)
    return utts, [load_utterance(u, model.sampling_rate) for u in utts]


def test_whisper_confidence_is_the_teacher_forced_mean_log_probability(tiny_whisper, corpus):
    model = load_model(str(tiny_whisper))
    _, audios = audios_of(model, corpus)
    batch = model.collate(audios[:4])
    texts, states, ended = model._decode(batch, max_new_tokens=10)
    assert texts == model.transcribe(batch, max_new_tokens=10)
    scores = model._self_scores(batch, states, texts)
    labelled = model.collate(audios[:4], [t or "." for t in texts])
    with torch.no_grad():
        logits, mask = model.logits(labelled)
        logp = torch.log_softmax(logits.float(), -1).gather(-1, labelled["labels"].clamp(min=0).unsqueeze(-1))[..., 0]
    np.testing.assert_allclose(scores, ((logp * mask).sum(1) / mask.sum(1)).tolist(), rtol=1e-4, atol=1e-5)
    scored = model.transcribe_scored(batch, max_new_tokens=10)
    assert [c for _, c in scored] == [s if e else -math.inf for s, e in zip(scores, ended, strict=True)]


def test_a_whisper_transcript_that_did_not_end_has_no_confidence(tiny_whisper, corpus):
    model = load_model(str(tiny_whisper))
    _, audios = audios_of(model, corpus)
    batch = model.collate(audios[:4])
    cut = model.transcribe_scored(batch, max_new_tokens=1)
    assert all(c == -math.inf for _, c in cut)  # one token: nothing ends that soon (the random model rambles)
    texts, states, ended = model._decode(batch, max_new_tokens=1)
    assert not any(ended) and all(np.isfinite(model._self_scores(batch, states, texts)))  # -inf for not ending


def test_ctc_confidence_is_the_greedy_paths_mean_frame_log_posterior(tiny_ctc, corpus):
    model = load_model(str(tiny_ctc))
    _, audios = audios_of(model, corpus)
    batch = model.collate(audios[:3])
    scored = model.transcribe_scored(batch)
    assert [t for t, _ in scored] == model.transcribe(batch)
    with torch.no_grad():
        logp = torch.log_softmax(model._forward(batch).float(), -1)
    n = model.output_lengths(batch, logp.shape[1]).tolist()
    np.testing.assert_allclose([c for _, c in scored], [float(logp[i, :k].max(-1).values.mean()) for i, k in
                                                          enumerate(n)], rtol=1e-5)
    assert all(c <= 0 for _, c in scored)


def test_compression_ratio_flags_loops():
    assert compression_ratio("") == 0.0
    assert compression_ratio("The cat sat on the mat.") < 2.4
    assert compression_ratio("the the the the " * 20) > 2.4
    assert not Gate(-1.0).keeps_base("the the the the " * 20, 0.0)
    assert Gate(-1.0).keeps_base("The cat.", -0.5) and not Gate(-1.0).keeps_base("The cat.", -1.5)


def test_gate_extremes_equal_the_base_and_the_adapter_decoded_alone(gated, corpus, base):
    """Threshold -inf (and no loop check): every transcript is the base model's, decoded with its own settings
    (margin 1 s); +inf: the adapter's (margin 0.5 s); in between, each utterance is one of the two, as its
    confidence says."""
    model = speechtl.load_model(str(gated / "model"))
    assert isinstance(model.gate, Gate) and model.module.config.audio_context_margin == 0.5
    assert model.base_settings == {"audio_context": "dynamic", "audio_context_margin": None}
    utts, audios = audios_of(model, corpus)
    plain = load_model(str(base))
    limits = plain.gate_limits(audios)
    assert limits["max_new_tokens"] < 64 - 2  # 12 tokens a second of the longest, plus 16
    base_texts = plain.transcribe(plain.collate(audios), **limits)
    adapter_texts = model.transcribe(model.collate(audios))
    assert adapter_texts != base_texts
    low = route(model, audios, Gate(-math.inf, math.inf))
    assert low.texts == base_texts and not any(low.to_adapter)
    high = route(model, audios, Gate(math.inf))
    assert high.texts == adapter_texts and all(high.to_adapter)
    assert model.module.config.audio_context_margin == 0.5 and model.active_adapter is not None  # restored
    assert len(set(low.confidence)) > 1
    t = float(np.median(low.confidence))
    mid = route(model, audios, Gate(t, math.inf))
    unsure = [i for i, c in enumerate(low.confidence) if c < t]
    # the unsure ones are decoded as one batch of their own (at dynamic context a batch's padding is its own)
    alone = model.transcribe(model.collate([audios[i] for i in unsure]))
    assert [mid.texts[i] for i in unsure] == alone
    assert [x for i, x in enumerate(mid.texts) if i not in unsure] == [x for i, x in enumerate(base_texts)
                                                                         if i not in unsure]
    assert mid.to_adapter == [i in unsure for i in range(len(audios))] and 0 < len(unsure) < len(audios)


def test_settings_as_restores_what_was_there(tiny_whisper):
    model = load_model(str(tiny_whisper))
    model.configure(audio_context="dynamic", audio_context_margin=0.5)
    with model.settings_as({"audio_context": None, "audio_context_margin": 2.0}):
        assert model.audio_context == "full" and model.module.config.audio_context_margin == 2.0
    assert model.audio_context == "dynamic" and model.module.config.audio_context_margin == 0.5


def test_training_calibrates_the_gate_into_the_card_and_eval_applies_it(gated, corpus, tmp_path):
    card = json.loads((gated / "model" / "speechtl_card.json").read_text())
    summary = json.loads((gated / "summary.json").read_text())
    gate = card["gate"]
    assert summary["gate"] == gate and gate["calibration"]["rule"] == "base_share"
    dev = gate["calibration"]["dev"]
    assert dev["utterances"] == 8 and dev["to_adapter"] == 4  # base_share 0.5 of 8 distinct confidences
    # eval: routes per utterance in hyp.jsonl, totals in scores.json; --gate off is the adapter alone
    assert main(["eval", "--model", str(gated), "--manifest", str(corpus), "--out", str(tmp_path / "on")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "on" / "hyp.jsonl").read_text().splitlines()]
    scores = json.loads((tmp_path / "on" / "scores.json").read_text())
    assert {r["gate"] for r in rows} <= {"base", "adapter"} and all("confidence" in r for r in rows)
    assert scores["gate"]["to_adapter"] == sum(r["gate"] == "adapter" for r in rows) and \
        scores["gate"]["threshold"] == gate["threshold"]
    for r in rows:  # None: the base transcript did not end within its limits
        assert (r["gate"] == "base") == (r["confidence"] is not None and r["confidence"] >= gate["threshold"])
    assert main(["eval", "--model", str(gated), "--manifest", str(corpus), "--out", str(tmp_path / "off"),
                 "--gate", "off"]) == 0
    off = [json.loads(x) for x in (tmp_path / "off" / "hyp.jsonl").read_text().splitlines()]
    model = speechtl.load_model(str(gated))
    utts, audios = audios_of(model, corpus)
    alone = dict(zip([u.id for u in utts], model.transcribe(model.collate(audios)), strict=True))
    assert {r["id"]: r["hyp"] for r in off} == alone and "gate" not in off[0]
    assert "gate" not in json.loads((tmp_path / "off" / "scores.json").read_text())


def test_changing_the_gate_recalibrates_without_retraining(gated, corpus, tmp_path):
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(gated, exp)
    before = (exp / "history.jsonl").read_text()
    conf = tmp_path / "lora.yaml"
    conf.write_text(CONF + "gate: {threshold: -0.5}\n")
    base = str(json.loads((exp / "train_key.json").read_text())["base_model"]["name_or_path"])
    accent = str(gated.parent / "accent.jsonl")
    args = ["train", "--model", base, "--train", accent, "--dev", accent, "--config", str(conf), "--out", str(exp)]
    assert main(args) == 0
    assert (exp / "history.jsonl").read_text() == before  # not trained again
    card = json.loads((exp / "model" / "speechtl_card.json").read_text())
    assert card["gate"]["threshold"] == -0.5 and card["gate"]["calibration"]["rule"] == "fixed"
    # a gate calibrated by an older revision of the calibration is calibrated again
    from speechtl.adapt.adapters import write_card
    from speechtl.evaluate.gate import REVISION

    write_card(exp / "model", {"gate": {**card["gate"], "threshold": 9.0,
                                        "calibration": {**card["gate"]["calibration"], "revision": REVISION - 1}}})
    assert main(args) == 0
    card = json.loads((exp / "model" / "speechtl_card.json").read_text())
    assert card["gate"]["threshold"] == -0.5 and card["gate"]["calibration"]["revision"] == REVISION
    conf.write_text(CONF)  # no gate: it is taken out of the card
    assert main(args) == 0
    assert json.loads((exp / "model" / "speechtl_card.json").read_text())["gate"] is None
    assert speechtl.load_model(str(exp)).gate is None
    assert "gate" not in json.loads((exp / "summary.json").read_text())


def test_what_cannot_route_is_refused_or_drops_the_gate(gated):
    with pytest.raises(UsageError, match="can't apply"):
        load_for_eval(str(gated), DecodeOptions(backend="ctranslate2"))
    model = speechtl.load_model(str(gated))
    model.merge()
    assert model.gate is None  # the base it fell back on is folded away
    with pytest.raises(ValueError, match="no adapter is active"):
        route(model, [np.zeros(16000, dtype=np.float32)], Gate(0.0))
    with pytest.raises(UsageError, match="no adapter to route to"):
        with_gate(model, "-0.3")
    with pytest.raises(UsageError, match="must be 'off' or a threshold"):
        load_for_eval(str(gated), DecodeOptions(gate="sometimes"))


def test_eval_folds_a_lora_adapter_into_the_weights_unless_it_is_gated(gated, corpus, tiny_whisper, tmp_path):
    """speechtl eval decodes a LoRA adapter merged (faster, same transcripts); with a gate it needs the base under
    the adapter, so it stays unmerged; the run key tells merged from unmerged decodes of the same adapter only."""
    from speechtl.evaluate.decode import run_key

    utts = read_manifest(corpus)
    gated_model = load_for_eval(str(gated), DecodeOptions())
    assert gated_model.gate is not None and gated_model.adapters.active is not None  # not merged
    merged = load_for_eval(str(gated), DecodeOptions(gate="off"))
    unmerged = load_for_eval(str(gated), DecodeOptions(gate="off", merge_lora=False))
    assert merged.adapters.active is None and not any("lora_" in n for n, _ in merged.module.named_parameters())
    assert unmerged.adapters.active is not None
    opts = DecodeOptions(gate="off")
    hyps = transcribe_utterances(merged, utts, opts)
    assert hyps == transcribe_utterances(unmerged, utts, opts)
    unmerged.adapters.disable()  # the adapter matters here, so a merge that lost it would show
    assert hyps != transcribe_utterances(unmerged, utts, opts)

    def key(source, **kw):
        return run_key(str(source), corpus, DecodeOptions(**kw), utts)

    assert key(gated, gate="off") != key(gated, gate="off", merge_lora=False)
    assert key(gated) == key(gated, merge_lora=False)  # the card's gate: nothing is merged either way
    assert key(tiny_whisper) == key(tiny_whisper, merge_lora=False)  # no adapter: earlier evaluations still count
    assert main(["eval", "--model", str(gated), "--manifest", str(corpus), "--out", str(tmp_path / "ev"),
                 "--gate", "off", "--no-merge"]) == 0
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert scores["options"]["merge_lora"] is False and scores["run_key"] == key(gated, gate="off", merge_lora=False)
    assert {r["id"]: r["hyp"] for r in map(json.loads, (tmp_path / "ev" / "hyp.jsonl").read_text().splitlines())} \
        == hyps


def test_choose_threshold_rules():
    target = DevRoutes(np.array([-1.0, -0.8, -0.5, -0.2, -0.1]), np.array([3, 3, 2, 1, 1]), np.array([1, 1, 1, 1, 1]),
                       20)
    t, rule = choose_threshold(GateConfig(base_share=0.4), target)
    assert rule == "base_share" and (target.confidence >= t).sum() == 2
    assert choose_threshold(GateConfig(threshold=-0.3), target) == (-0.3, "fixed")
    # general dev: the base is right wherever it is sure, the adapter wrong on all of it
    general = DevRoutes(np.array([-0.6, -0.3, -0.1]), np.array([0, 0, 0]), np.array([2, 2, 2]), 10)
    t, rule = choose_threshold(GateConfig(weight=0.5), target, general)
    assert rule == "weighted"
    score = lambda x: 0.5 * target.wer(x) + 0.5 * general.wer(x)  # noqa: E731
    assert score(t) == min(score(x) for x in np.linspace(-2, 1, 301))
    assert target.summary(t)["to_adapter"] == target.to_adapter(t)
    # the weighted rule is not the target dev's best: that would send everything to the adapter
    assert target.wer(math.inf) < target.wer(t)


def test_gate_config_is_checked(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("method: full\ngate: {base_share: 0.2}\n")
    with pytest.raises(ConfigError, match="c.yaml:2: 'gate' needs an adapter method"):
        load_config(conf)
    conf.write_text("method: lora\ngate:\n  base_share: 1.5\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: 'gate.base_share' must lie in \(0, 1\)"):
        load_config(conf)
    conf.write_text("method: lora\ngate:\n  treshold: -0.3\n")
    with pytest.raises(ConfigError, match="c.yaml:3: unknown key 'gate.treshold'"):
        load_config(conf)
    conf.write_text("method: lora\ngate: {weight: 0.5}\n")
    with pytest.raises(ConfigError, match="needs dev_general"):
        load_config(conf)
    cfg = load_config(None, ["method=lora", "gate.base_share=0.2"])
    assert cfg.gate == GateConfig(base_share=0.2).to_dict()
    # the gate does not change the weights: it is out of the training key
    from speechtl.adapt.rundir import keyed_config

    assert keyed_config(TrainConfig(method="lora", gate={"base_share": 0.2}).to_dict()) == \
        keyed_config(TrainConfig(method="lora").to_dict())


def test_train_without_dev_refuses_a_gate(tiny_whisper, corpus, tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(CONF + "gate: {base_share: 0.2}\n")
    assert main(["train", "--model", str(tiny_whisper), "--train", str(corpus), "--config", str(conf), "--out",
                 str(tmp_path / "exp")]) == 2
    assert not (tmp_path / "exp" / "summary.json").exists()


def test_transcribe_utterances_records_routes_and_resumes_them(gated, corpus, tmp_path):
    model = speechtl.load_model(str(gated))
    utts = read_manifest(corpus)
    routes, partial = {}, tmp_path / "p.jsonl"
    hyps = transcribe_utterances(model, utts, DecodeOptions(batch_size=4), partial, routes=routes)
    again: dict = {}
    assert transcribe_utterances(model, utts, DecodeOptions(batch_size=4), partial, routes=again) == hyps
    assert again == routes and len(routes) == len(utts)


def test_train_api_sets_no_gate(tiny_whisper, corpus, tmp_path):
    """The gate is calibrated by `speechtl train` (the CLI), after training; train() itself writes none."""
    train(load_model(str(tiny_whisper)), read_manifest(corpus), tmp_path / "exp",
          TrainConfig(method="lora", settings=SMALL["lora"], max_steps=1, batch_size=4, eval_every=0,
                      gate={"base_share": 0.2}))
    assert "gate" not in json.loads((tmp_path / "exp" / "model" / "speechtl_card.json").read_text())


def test_the_report_says_what_the_gate_does(gated):
    from speechtl.report.results import _control_lines

    lines = _control_lines(json.loads((gated / "summary.json").read_text()))
    assert any("confidence gate" in line and "4 of 8 went to the adapter" in line and "50% of the target dev" in line
               for line in lines), lines


def test_a_ctranslate2_export_of_a_gated_run_says_the_gate_is_not_in_it(gated, tmp_path, caplog):
    from speechtl.adapt.export import export_ctranslate2

    card = export_ctranslate2(gated, tmp_path / "ct2")
    assert card["gate"]["applied"] is False and "--gate off" in card["gate"]["note"]
    assert json.loads((tmp_path / "ct2" / "speechtl_card.json").read_text())["gate"]["applied"] is False
    assert "can't be exported to CTranslate2" in caplog.text


def test_the_longest_transcript_of_a_batch_ends_too(base, corpus):
    """generate strips <|endoftext|> and pads shorter rows with it: the longest row of a batch shows none, yet
    ended; only a row that used every allowed token did not."""
    model = load_model(str(base))
    _, audios = audios_of(model, corpus)
    batch = model.collate(audios)
    texts, _, ended = model._decode(batch)
    assert all(ended) and len({len(t) for t in texts}) > 1
    n = max(len(model.tokenizer.encode(" " + t, add_special_tokens=False)) for t in texts)
    assert not all(model._decode(batch, max_new_tokens=n)[2])  # the longest now has no room for its end
    assert all(model._decode(batch, max_new_tokens=n + 1)[2])


def test_the_report_of_a_gated_run_says_where_each_sets_utterances_went(gated, base, tmp_path):
    accent = str(gated.parent / "accent.jsonl")
    assert main(["eval", "--model", str(base), "--manifest", accent, "--out", str(tmp_path / "before" / "acc")]) == 0
    assert main(["eval", "--model", str(gated), "--manifest", accent, "--out", str(tmp_path / "after" / "acc")]) == 0
    went = json.loads((tmp_path / "after" / "acc" / "scores.json").read_text())["gate"]["to_adapter"]
    assert main(["report", "--before", str(tmp_path / "before"), "--after", str(tmp_path / "after"), "--train",
                 str(gated), "--out", str(tmp_path / "rep"), "--n-boot", "20", "--no-plots"]) == 0
    md = (tmp_path / "rep" / "RESULTS.md").read_text()
    assert f"utterances decoded by the adapter: acc {went} of 8." in md and "- confidence gate:" in md
