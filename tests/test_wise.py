"""WiSE-FT scales each method's own update, and the best checkpoint can be chosen on a target/general trade-off."""

import json

import pytest
import torch
from helpers import SMALL, spoken_corpus

import speechtl
from speechtl.adapt.adapters import AdapterSet
from speechtl.adapt.bottleneck import ADAPTERS
from speechtl.adapt.config import ConfigError, TrainConfig, load_config
from speechtl.adapt.trainer import train
from speechtl.data.manifest import read_manifest
from speechtl.models import load_model
from speechtl.report.results import train_lines

ALPHA = 0.3  # not 0.5: blending LoRA's A and B separately would then be harder to tell from alpha squared


def cfg(method, **kw):
    base = dict(method=method, learning_rate=1e-2 if method in ("lora", "adapters") else 3e-3, warmup_steps=0,
                max_steps=6, batch_size=4, eval_every=2, save_every=2, log_every=1, lr_scheduler="constant",
                settings=["decoder"] if method == "freeze" else SMALL.get(method))
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return spoken_corpus(tmp_path_factory.mktemp("wise_corpus"), n=8)


def state(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def lora_layers(model):
    from peft.tuners.lora import LoraLayer

    name = model.adapters.active
    return name, {n: m for n, m in model.module.named_modules() if isinstance(m, LoraLayer) and name in m.lora_A}


def bottlenecks(model):
    name = model.adapters.active
    return {n: getattr(m, ADAPTERS)[name] for n, m in model.module.named_modules()
            if hasattr(m, ADAPTERS) and name in getattr(m, ADAPTERS)}


@pytest.mark.parametrize(("family", "method"), [("seq2seq", "full"), ("seq2seq", "freeze"), ("seq2seq", "lora"),
                                                ("seq2seq", "adapters"), ("ctc", "lora"), ("ctc", "adapters")])
def test_wise_keeps_alpha_of_each_methods_update(family, method, tiny_whisper, tiny_ctc, corpus, tmp_path):
    source = {"seq2seq": tiny_whisper, "ctc": tiny_ctc}[family]
    base = state(load_model(str(source)))
    wers = iter([0.5, 0.3, 0.6, 0.2])  # steps 2, 4, 6, then the WiSE model's
    exp = tmp_path / "exp"
    summary = train(load_model(str(source)), read_manifest(corpus), exp, cfg(method, wise_alpha=ALPHA),
                    evaluator=lambda m: next(wers))
    assert summary["best_step"] == 4 and summary["wise_alpha"] == ALPHA and summary["final_dev_wer"] == 0.2
    # best/ holds the adapted model, model/ the WiSE one: both go through save and load
    adapted = speechtl.load_model(str(exp / "best"))
    final = speechtl.load_model(str(exp))
    if method in ("full", "freeze"):
        a, f = state(adapted), state(final)
        moved = [k for k in base if not torch.equal(a[k], base[k])]
        assert moved
        for k in base:
            torch.testing.assert_close(f[k], ALPHA * a[k] + (1 - ALPHA) * base[k], msg=k)
        if method == "freeze":
            assert not any(k.startswith("model.decoder.") for k in moved)
    elif method == "lora":
        name, layers = lora_layers(adapted)
        final_name, final_layers = lora_layers(final)
        assert layers.keys() == final_layers.keys() and layers
        updates = {n: m.lora_B[name].weight @ m.lora_A[name].weight * m.scaling[name] for n, m in layers.items()}
        assert any(u.abs().max() > 1e-4 for u in updates.values())
        AdapterSet.of(final).merge(final_name)  # W_eff: what PEFT's merge (and CTranslate2 export) produce
        merged = state(final)
        for n, update in updates.items():
            key = n.replace("base_model.model.", "") + ".weight"
            torch.testing.assert_close(merged[key] - base[key], ALPHA * update, rtol=1e-4, atol=1e-6, msg=n)
    else:
        ref, got = bottlenecks(adapted), bottlenecks(final)
        assert ref.keys() == got.keys() and ref
        width = next(iter(ref.values())).norm.normalized_shape[0]
        hidden = torch.randn(3, 5, width, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for n in ref:
                residual = ref[n](hidden)
                assert residual.abs().max() > 0, n
                torch.testing.assert_close(got[n](hidden), ALPHA * residual, msg=n)


def test_wise_alpha_one_leaves_the_adapter_as_trained(tiny_whisper, corpus, tmp_path):
    exp = tmp_path / "exp"
    summary = train(load_model(str(tiny_whisper)), read_manifest(corpus), exp, cfg("lora", max_steps=2),
                    evaluator=lambda m: 0.5)
    assert "wise_alpha" not in summary
    assert (exp / "best" / "adapter_model.safetensors").read_bytes() == \
        (exp / "model" / "adapter_model.safetensors").read_bytes()


def events(exp):
    return [e for e in map(json.loads, (exp / "history.jsonl").read_text().splitlines()) if "dev_wer" in e]


def snapshotting(wers, snapshots):
    """A fake evaluator: returns the next WER and keeps the weights it was shown."""
    def evaluate(model):
        snapshots.append(state(model))
        return next(wers)
    return evaluate


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_selection_on_the_target_general_trade_off(weight, tiny_whisper, corpus, tmp_path):
    exp = tmp_path / "exp"
    target, general = iter([0.5, 0.3, 0.4]), iter([0.1, 0.6, 0.5])  # steps 2, 4, 6
    # target alone: step 4 is best; 0.5/0.5: scores 0.30, 0.45, 0.45, so step 2
    seen = []
    c = cfg("freeze", dev_general=str(corpus), select_weight=weight)
    summary = train(load_model(str(tiny_whisper)), read_manifest(corpus), exp, c,
                    evaluator=snapshotting(target, seen), general_evaluator=lambda m: next(general))
    step, i = (4, 1) if weight == 0 else (2, 0)
    assert summary["best_step"] == step and summary["select_weight"] == weight
    assert summary["best_dev_wer"] == [0.5, 0.3, 0.4][i]
    assert summary["best_general_dev_wer"] == [0.1, 0.6, 0.5][i]
    assert summary["best_select_score"] == pytest.approx(0.3)  # the target WER at step 4; (0.5 + 0.1) / 2 at 2
    assert summary["dev_general"] == str(corpus)
    best = state(load_model(str(exp / "best")))
    k = "model.encoder.layers.0.fc1.weight"
    assert torch.equal(best[k], seen[i][k]) and not torch.equal(seen[0][k], seen[1][k])
    history = events(exp)
    assert [e["step"] for e in history] == [2, 4, 6]
    assert [e["general_dev_wer"] for e in history] == [0.1, 0.6, 0.5]
    expected = [0.5, 0.3, 0.4] if weight == 0 else [0.3, 0.45, 0.45]
    assert [e["select_score"] for e in history] == pytest.approx(expected)
    md = "\n".join(train_lines(summary))
    assert "general dev WER" in md
    assert ("0.5 × target dev WER + 0.5 × general dev WER" in md) == (weight > 0)


def test_wise_records_the_general_dev_wer_too(tiny_whisper, corpus, tmp_path):
    target, general = iter([0.5, 0.4, 0.3, 0.35]), iter([0.2, 0.3, 0.4, 0.25])
    summary = train(load_model(str(tiny_whisper)), read_manifest(corpus), tmp_path / "exp",
                    cfg("adapters", dev_general=str(corpus), wise_alpha=0.5),
                    evaluator=lambda m: next(target), general_evaluator=lambda m: next(general))
    assert summary["best_step"] == 6 and summary["final_dev_wer"] == 0.35 and summary["final_general_dev_wer"] == 0.25
    md = "\n".join(train_lines(summary))
    assert "base + 0.5 × each bottleneck adapter's residual output" in md and "general dev WER 25.00%" in md


def test_selection_config_is_checked(tiny_whisper, corpus, tmp_path):
    with pytest.raises(ConfigError, match="select_weight.*needs dev_general"):
        load_config(None, ["select_weight=0.3"])
    with pytest.raises(ConfigError, match=r"select_weight.*\[0, 1\]"):
        load_config(None, [f"dev_general={corpus}", "select_weight=1.5"])
    with pytest.raises(ConfigError, match="dev_general.*nowhere/general_dev.jsonl.*not a file"):
        load_config(None, ["dev_general=nowhere/general_dev.jsonl"])
    assert load_config(None, [f"dev_general={corpus}", "select_weight=1"]).select_weight == 1.0
    with pytest.raises(ConfigError, match="no evaluator for dev_general"):
        train(load_model(str(tiny_whisper)), read_manifest(corpus), tmp_path / "exp",
              cfg("full", dev_general=str(corpus), select_weight=0.5), evaluator=lambda m: 0.5)


def test_speechtl_train_decodes_the_general_dev_set(tiny_whisper, corpus, tmp_path):
    from speechtl.cli import main

    exp = tmp_path / "exp"
    assert main(["train", "--model", str(tiny_whisper), "--train", str(corpus), "--dev", str(corpus), "--out",
                 str(exp), "--set", "max_steps=2", "--set", "batch_size=4", "--set", "eval_every=1",
                 "--set", f"dev_general={corpus}", "--set", "select_weight=0.5", "--set", "eval_max_utts=2"]) == 0
    summary = json.loads((exp / "summary.json").read_text())
    history = events(exp)
    assert [e["step"] for e in history] == [1, 2] and summary["select_weight"] == 0.5
    for e in history:  # the same manifest twice: the trade-off is the WER itself
        assert e["general_dev_wer"] == e["dev_wer"] == pytest.approx(e["select_score"])
    assert summary["best_general_dev_wer"] is not None


def test_dora_is_refused_for_wise_ft_with_the_reason(tiny_whisper, tmp_path):
    """DoRA's change is not linear in its weights: no DoRA adapter keeps exactly alpha of it, so it is refused,
    in a config file and for a config made in Python before any training step."""
    from speechtl.adapt.merge import wise_base

    conf = tmp_path / "dora.yaml"
    conf.write_text("method: dora\ndora: {rank: 4}\nwise_alpha: 0.5\n")
    with pytest.raises(ConfigError, match=r"dora.yaml:3: 'wise_alpha' 0.5 can't be used with method dora: .*not "
                                          r"linear in B"):
        load_config(conf)
    with pytest.raises(ConfigError, match="can't be used with method dora"):
        wise_base(load_model(str(tiny_whisper)), "dora")
