"""LoRA, DoRA and bottleneck adapters on both families: training, the adapter artefact, switching, refusal."""

import json
import os

import pytest
import torch
from helpers import SMALL, kill_training_after, spoken_corpus

import speechtl
from speechtl.adapt.adapters import AdapterError, AdapterSet
from speechtl.adapt.config import ConfigError, TrainConfig, config_from_dict
from speechtl.adapt.export import export_adapter
from speechtl.adapt.registry import ADAPTER_METHODS
from speechtl.adapt.trainer import train
from speechtl.cli import main
from speechtl.data.manifest import read_manifest
from speechtl.features.audio import load_utterance
from speechtl.models import load_model

METHODS = ("lora", "adapters")
#: Every adapter method of the registry, for the tests that train or build each one.
ALL_ADAPTERS = ("lora", "dora", "adapters")


def cfg(method, **kw):
    base = dict(method=method, learning_rate=1e-2, warmup_steps=0, max_steps=12, batch_size=4, eval_every=0,
                save_every=4, log_every=1, lr_scheduler="constant", settings=SMALL.get(method))
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return spoken_corpus(tmp_path_factory.mktemp("adapter_corpus"), n=8)


@pytest.fixture
def bases(tiny_whisper, tiny_ctc):
    return {"seq2seq": tiny_whisper, "ctc": tiny_ctc}


def base_state(model):
    """The base weights under their own names (PEFT renames a wrapped linear's weight to base_layer.weight)."""
    return {k.replace(".base_layer", ""): v.detach().clone() for k, v in model.module.state_dict().items()
            if "lora_" not in k and "speechtl_adapters" not in k}


def losses(out):
    return [e["loss"] for e in map(json.loads, (out / "history.jsonl").read_text().splitlines()) if "loss" in e]


def batch_of(model, manifest, n=4):
    utts = read_manifest(manifest)[:n]
    return model.collate([load_utterance(u, model.sampling_rate) for u in utts], [u.text for u in utts])


def logits(model, batch, module=None):
    """The model's logits on ``batch``, or those of ``module`` (e.g. plain PEFT around the base) for its family."""
    with torch.no_grad():
        keys = ("input_features", "decoder_input_ids") if model.family == "seq2seq" else ("input_values",
                                                                                          "attention_mask")
        return (module or model.module)(**{k: batch[k] for k in keys if k in batch}).logits


def test_every_adapter_method_of_the_registry_is_tested():
    assert set(ALL_ADAPTERS) == set(ADAPTER_METHODS)


@pytest.mark.parametrize("family", ["seq2seq", "ctc"])
@pytest.mark.parametrize("method", ALL_ADAPTERS)
def test_method_trains_only_the_adapter_and_loss_falls(family, method, bases, corpus, tmp_path):
    model = load_model(str(bases[family]))
    before = base_state(model)
    whole = batch_of(model, corpus, n=8)
    with torch.no_grad():
        loss_before = model.loss(whole).item()
    summary = train(model, read_manifest(corpus), tmp_path / "exp", cfg(method))
    assert base_state(model).keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in base_state(model).items()), "a base weight moved"
    model.module.eval()
    with torch.no_grad():
        loss_after = model.loss(whole).item()
    print(family, method, loss_before, loss_after)
    assert loss_after < 0.99 * loss_before, (loss_before, loss_after, losses(tmp_path / "exp"))
    assert 0 < summary["trainable_parameters"] < 0.5 * summary["total_parameters"]
    assert summary["method"] == method and summary["peak_memory_bytes"] > 0
    trained = [n for n, p in model.module.named_parameters() if p.requires_grad]
    marker = "speechtl_adapters" if method == "adapters" else "lora_"
    assert trained and all(marker in n for n in trained)
    out = tmp_path / "exp" / "model"  # the run saves the adapter alone, with its card
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                               "speechtl_card.json"}
    card = json.loads((out / "speechtl_card.json").read_text())
    assert card["family"] == family and card["method"] == method and card["kind"] in ("lora", "bottleneck")
    assert card["training_data"]["speakers"] == 2 and card["base_model"] == str(bases[family].resolve())
    if family == "seq2seq" and method == "lora":  # Whisper LoRA reaches encoder and decoder, self and cross attention
        assert any("encoder_attn.q_proj.lora_A" in n for n in trained) and any("encoder.layers" in n for n in trained)
    if family == "seq2seq" and method == "adapters":  # one adapter after every block of both stacks
        assert any("decoder.layers.0.speechtl_adapters" in n for n in trained)
        assert any("encoder.layers.0.speechtl_adapters" in n for n in trained)
    # the experiment dir loads as base + adapter, and gives the trained model's outputs
    reloaded = speechtl.load_model(str(tmp_path / "exp"))
    batch = batch_of(model, corpus)
    model.module.eval()
    torch.testing.assert_close(logits(reloaded, batch), logits(model, batch))
    assert reloaded.transcribe(batch) == model.transcribe(batch)
    if method == "dora":  # PEFT's DoRA: a magnitude per output row trains too, and plain PEFT loads it
        from peft import PeftModel

        assert any("lora_magnitude_vector" in n for n in trained)
        assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True
        plain = PeftModel.from_pretrained(load_model(str(bases[family])).module, str(out)).eval()
        torch.testing.assert_close(logits(model, batch, plain), logits(model, batch))
        reloaded.merge()  # folds into the weights, as CTranslate2 export does
        assert not any("lora_" in k for k in reloaded.module.state_dict())
        torch.testing.assert_close(logits(reloaded, batch), logits(model, batch), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["seq2seq", "ctc"])
@pytest.mark.parametrize("method", ALL_ADAPTERS)
def test_a_new_adapter_starts_equal_to_the_base(family, method, bases, corpus):
    model = load_model(str(bases[family]))
    batch = batch_of(model, corpus)
    ref = logits(model, batch)
    from speechtl.adapt.methods import apply_method

    apply_method(model, cfg(method))
    model.module.eval()
    torch.testing.assert_close(logits(model, batch), ref, rtol=0, atol=0)


def test_export_loads_in_plain_peft_with_the_same_transcripts(tiny_whisper, corpus, tmp_path):
    from peft import PeftModel
    from transformers import WhisperForConditionalGeneration

    exp = tmp_path / "exp"
    train(load_model(str(tiny_whisper)), read_manifest(corpus), exp / "train", cfg("lora"))
    results = {"test_sets": {"test_x": {"role": "target", "before": {"utterances": 8, "wer": {"rate": 0.5},
                                                                      "cer": {"rate": 0.3}},
                                        "after": {"utterances": 8, "wer": {"rate": 0.25}, "cer": {"rate": 0.1}}}}}
    (exp / "results.json").write_text(json.dumps(results))
    assert main(["export", str(exp), "--out", str(tmp_path / "adapter"), "--accent", "caribbean"]) == 0
    adapter = tmp_path / "adapter"
    card = json.loads((adapter / "speechtl_card.json").read_text())
    assert card["name"] == "caribbean" and card["test_sets"]["test_x"]["wer_after"] == 0.25
    assert card["training"]["method"] == "lora" and len(card["base_sha256"]) == 64 and card["speechtl_version"]
    umask = os.umask(0)
    os.umask(umask)
    for f in adapter.iterdir():  # readable like any other output (safetensors alone would write 0600)
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4

    ours = speechtl.load_model(str(tiny_whisper), adapters={"caribbean": adapter})
    plain = PeftModel.from_pretrained(WhisperForConditionalGeneration.from_pretrained(tiny_whisper), str(adapter))
    plain.eval()
    batch = batch_of(ours, corpus, n=8)
    with torch.no_grad():
        ids = plain.generate(input_features=batch["input_features"], max_new_tokens=20)
    theirs = [t.strip() for t in ours.tokenizer.batch_decode(ids, skip_special_tokens=True)]
    assert ours.transcribe(batch, max_new_tokens=20) == theirs
    torch.testing.assert_close(logits(ours, batch), plain(input_features=batch["input_features"],
                                                        decoder_input_ids=batch["decoder_input_ids"]).logits)
    # an adapter dir is also a model source on its own: its card names the base
    alone = speechtl.load_model(str(adapter))
    assert alone.active_adapter == "caribbean"
    torch.testing.assert_close(logits(alone, batch), logits(ours, batch))
    with pytest.raises(AdapterError, match="no adapter to export"):
        train(load_model(str(tiny_whisper)), read_manifest(corpus), tmp_path / "full", cfg("full", max_steps=1))
        export_adapter(tmp_path / "full", tmp_path / "nothing")


def test_ctc_lora_export_loads_in_plain_peft(tiny_ctc, corpus, tmp_path):
    from peft import PeftModel
    from transformers import Wav2Vec2ForCTC

    train(load_model(str(tiny_ctc)), read_manifest(corpus), tmp_path / "exp", cfg("lora"))
    export_adapter(tmp_path / "exp", tmp_path / "adapter")
    ours = speechtl.load_model(str(tmp_path / "adapter"))
    plain = PeftModel.from_pretrained(Wav2Vec2ForCTC.from_pretrained(tiny_ctc), str(tmp_path / "adapter")).eval()
    batch = batch_of(ours, corpus, n=8)
    with torch.no_grad():
        theirs = plain(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(logits(ours, batch), theirs)
    lengths = ours.output_lengths(batch, theirs.shape[1])
    ids = theirs.argmax(-1)
    assert ours.transcribe(batch) == [" ".join(ours.tokenizer.decode(ids[i, :n].tolist()).split())
                                      for i, n in enumerate(lengths)]


def test_switching_disabling_and_merging(tiny_whisper, corpus, tmp_path):
    for method in METHODS:
        train(load_model(str(tiny_whisper)), read_manifest(corpus), tmp_path / method, cfg(method))
    model = speechtl.load_model(str(tiny_whisper), adapters={"lo": tmp_path / "lora", "bn": tmp_path / "adapters"})
    assert model.active_adapter == "lo" and model.adapters.names() == ["lo", "bn"]
    batch = batch_of(model, corpus)
    base = logits(load_model(str(tiny_whisper)), batch)
    one = {m: logits(speechtl.load_model(str(tmp_path / m)), batch) for m in METHODS}
    torch.testing.assert_close(logits(model, batch), one["lora"])
    model.set_adapter("bn")
    torch.testing.assert_close(logits(model, batch), one["adapters"])
    assert not torch.allclose(one["adapters"], one["lora"]) and not torch.allclose(one["adapters"], base)
    model.disable_adapters()
    assert model.active_adapter is None
    torch.testing.assert_close(logits(model, batch), base)
    model.set_adapter("lo")
    torch.testing.assert_close(logits(model, batch), one["lora"])
    with pytest.raises(AdapterError, match="no adapter named 'scottish'"):
        model.set_adapter("scottish")
    with pytest.raises(AdapterError, match="only LoRA adapters fold"):
        model.merge("bn")
    model.merge()  # folds the active LoRA adapter into the weights
    assert not any("lora_" in k for k in model.module.state_dict()) and model.adapters.names() == ["bn"]
    torch.testing.assert_close(logits(model, batch), one["lora"], rtol=1e-4, atol=1e-5)
    assert model.transcribe(batch) == speechtl.load_model(str(tmp_path / "lora")).transcribe(batch)
    with pytest.raises(ValueError, match="no adapters are attached"):
        load_model(str(tiny_whisper)).set_adapter("lo")


def test_an_adapter_for_other_base_weights_is_refused(tiny_whisper, corpus, tmp_path, caplog):
    train(load_model(str(tiny_whisper)), read_manifest(corpus), tmp_path / "exp", cfg("lora", max_steps=1))
    other = load_model(str(tiny_whisper))
    with torch.no_grad():
        other.module.model.encoder.layers[0].fc1.weight[0, 0] += 1e-3  # a fine-tuned cousin of the base
    other.save(tmp_path / "other")
    with pytest.raises(AdapterError, match="trained on .* weights SHA-256"):
        speechtl.load_model(str(tmp_path / "other"), adapters={"x": tmp_path / "exp" / "model"})
    model = speechtl.load_model(str(tmp_path / "other"), adapters={"x": tmp_path / "exp" / "model"}, check_base=False)
    assert model.active_adapter == "x" and "loading anyway" in caplog.text
    (tmp_path / "exp" / "model" / "adapter_model.safetensors").rename(tmp_path / "exp" / "model" / "adapter_model.bin")
    with pytest.raises(AdapterError, match="safetensors only"):
        speechtl.load_model(str(tiny_whisper), adapters={"x": tmp_path / "exp" / "model"})


@pytest.mark.parametrize("method", METHODS)
def test_adapters_train_the_encoder_under_gradient_checkpointing(method, tiny_whisper, corpus, tmp_path):
    """The Whisper + PEFT pitfall: with reentrant checkpointing and a frozen input layer, encoder adapter
    weights get no gradient. speechtl checkpoints non-reentrantly, so they train."""
    model = load_model(str(tiny_whisper))
    train(model, read_manifest(corpus), tmp_path / "exp", cfg(method, max_steps=3, gradient_checkpointing=True))
    zero_init = "lora_B" if method == "lora" else "up.weight"  # starts at zero: only gradients move it
    moved = [p for n, p in model.module.named_parameters() if "encoder.layers.0" in n and zero_init in n]
    assert moved and all(p.abs().sum() > 0 for p in moved)
    assert model.module.model.encoder.gradient_checkpointing


def test_lora_resume_after_a_kill_matches_an_uninterrupted_run(tiny_whisper, corpus, tmp_path, monkeypatch):
    utts = read_manifest(corpus)  # 8 utterances, batches of 3: a kill at step 5 is mid-epoch
    c = cfg("lora", max_steps=7, batch_size=3, save_every=2, learning_rate=3e-3)
    ref = load_model(str(tiny_whisper))
    train(ref, utts, tmp_path / "ref", c)
    revive = kill_training_after(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(load_model(str(tiny_whisper)), utts, tmp_path / "run", c)
    assert json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())["step"] == 4
    revive()
    model = load_model(str(tiny_whisper))
    assert train(model, utts, tmp_path / "run", c)["steps"] == 7
    mine, theirs = AdapterSet.of(model).state_dict("default"), AdapterSet.of(ref).state_dict("default")
    for k in theirs:
        torch.testing.assert_close(mine[k], theirs[k], rtol=1e-5, atol=1e-6, msg=k)


def test_adapter_config_errors(tiny_whisper, tiny_ctc, corpus, tmp_path):
    with pytest.raises(ConfigError, match="'lora' is only used with method: lora"):
        config_from_dict({"method": "full", "lora": {"targets": ["q_proj"]}})
    with pytest.raises(ConfigError, match=r"LoRA targets \['qproj'\] match no module"):
        train(load_model(str(tiny_whisper)), read_manifest(corpus), tmp_path / "a",
              cfg("lora", settings={**SMALL["lora"], "targets": ["qproj"]}))
    with pytest.raises(ConfigError, match="adapter stacks .*unknown"):
        train(load_model(str(tiny_ctc)), read_manifest(corpus), tmp_path / "b",
              cfg("adapters", settings={"size": 8, "stacks": ["decoder"]}))
    from helpers import build_tiny_ctc

    other = build_tiny_ctc(tmp_path / "abc", ["abc"])  # its letters can't spell the corpus: a new head is needed
    with pytest.raises(ConfigError, match="new CTC vocabulary"):
        train(load_model(str(other)), read_manifest(corpus), tmp_path / "c", cfg("lora"))


def test_lora_stacks_limit_lora_to_the_encoder_and_load_in_plain_peft(tiny_whisper, corpus, tmp_path):
    import peft

    model = load_model(str(tiny_whisper))
    train(model, read_manifest(corpus), tmp_path / "exp",
          cfg("lora", max_steps=2, settings={**SMALL["lora"], "stacks": ["encoder"]}))
    lora = [n for n, _ in model.module.named_parameters() if "lora_A" in n]
    assert lora and all(".encoder.layers." in n for n in lora)
    plain = peft.PeftModel.from_pretrained(load_model(str(tiny_whisper)).module, tmp_path / "exp" / "model")
    plain_lora = [n for n, _ in plain.named_parameters() if "lora_A" in n]
    assert len(plain_lora) == len(lora) and all(".encoder.layers." in n for n in plain_lora)
    with pytest.raises(ConfigError, match="'lora' is only used with method: lora"):
        config_from_dict({"method": "adapters", "lora": {"stacks": ["encoder"]}})
    with pytest.raises(AdapterError, match="LoRA stacks"):
        AdapterSet.of(load_model(str(tiny_whisper))).add("x", speechtl.adapt.adapters.LoraSpec(stacks=("middle",)))


def test_a_second_accent_adapts_an_adapted_experiment(tiny_whisper, corpus, tmp_path):
    """`train --model FIRST_EXP`: LoRA on LoRA stacks (loadable alone and in plain PEFT), full takes it whole."""
    from peft import PeftModel
    from transformers import WhisperForConditionalGeneration

    first, second, whole = tmp_path / "first", tmp_path / "second", tmp_path / "whole"
    train(load_model(str(tiny_whisper)), read_manifest(corpus), first / "train", cfg("lora", max_steps=4))
    conf = tmp_path / "lora.yaml"
    conf.write_text("method: lora\nlearning_rate: 1.0e-2\nwarmup_steps: 0\nmax_steps: 4\nbatch_size: 4\n"
                    "eval_every: 0\nlora: {rank: 4, alpha: 8, dropout: 0.0}\nlr_scheduler: constant\n")
    assert main(["train", "--model", str(first), "--train", str(corpus), "--config", str(conf),
                 "--out", str(second / "train")]) == 0
    adapter = second / "train" / "model"
    card = json.loads((adapter / "speechtl_card.json").read_text())
    assert [e["dir"] for e in card["stacked_on"]] == ["stacked_on/0"]
    assert card["base_sha256"] == json.loads((first / "train" / "model" / "speechtl_card.json").read_text())[
        "base_sha256"]  # tied to the base weights, and to what is folded into them

    ours = speechtl.load_model(str(second))
    batch = batch_of(ours, corpus, n=8)
    by_hand = speechtl.load_model(str(first))
    by_hand.adapters.merge()
    by_hand.adapters.load("second", adapter, check_base=False)
    torch.testing.assert_close(logits(ours, batch), logits(by_hand, batch))
    assert not torch.allclose(logits(ours, batch), logits(speechtl.load_model(str(first)), batch))
    plain = PeftModel.from_pretrained(WhisperForConditionalGeneration.from_pretrained(tiny_whisper),
                                      str(adapter / "stacked_on" / "0")).merge_and_unload()
    plain = PeftModel.from_pretrained(plain, str(adapter)).eval()
    torch.testing.assert_close(logits(ours, batch), plain(input_features=batch["input_features"],
                                                        decoder_input_ids=batch["decoder_input_ids"]).logits)
    # the stacked adapter on the bare base is refused: it is only right on base + first
    with pytest.raises(AdapterError, match="folded into the base weights"):
        speechtl.load_model(str(tiny_whisper), adapters={"x": adapter})
    # full fine-tuning of the adapted model saves it whole; its start is the first experiment's model
    assert main(["train", "--model", str(first), "--train", str(corpus), "--config", str(conf), "--set",
                 "method=full", "--set", "max_steps=1", "--out", str(whole / "train")]) == 0
    assert (whole / "train" / "model" / "model.safetensors").is_file()
    # an exported stacked adapter carries what it stands on
    (second / "results.json").write_text(json.dumps({"test_sets": {}}))
    export_adapter(second, tmp_path / "exported")
    torch.testing.assert_close(logits(speechtl.load_model(str(tmp_path / "exported")), batch), logits(ours, batch))


def test_a_model_carrying_a_bottleneck_adapter_is_not_adapted_further(tiny_whisper):
    from speechtl.adapt.adapters import BottleneckSpec
    from speechtl.adapt.methods import prepare_base

    model = load_model(str(tiny_whisper))
    AdapterSet.of(model).add("first", BottleneckSpec(size=4))
    with pytest.raises(ConfigError, match="bottleneck adapter 'first'.*can't be folded"):
        prepare_base(model, cfg("lora"))
