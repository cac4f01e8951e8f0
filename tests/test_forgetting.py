"""Forgetting controls: distillation to the base model, replay of general speech, and augmentation wired
into training (train audio only)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import build_tiny_ctc, kill_training_after, tone, write_manifest_rows

from speechtl.adapt.config import ConfigError, TrainConfig, load_config
from speechtl.adapt.distill import Objective, distillation, parameter_bytes
from speechtl.adapt.methods import apply_method, prepare_base
from speechtl.adapt.replay import replay_batches
from speechtl.adapt.trainer import train
from speechtl.data.manifest import read_manifest
from speechtl.features.audio import load_utterance
from speechtl.models import load_model

REPLAY_TEXTS = ["green cat", "the red dog", "a fish", "bring the cup", "sing at dawn"]


def cfg(**kw):
    base = dict(learning_rate=3e-3, warmup_steps=0, max_steps=3, batch_size=4, eval_every=0, save_every=10,
                log_every=1, lr_scheduler="constant")
    return TrainConfig(**{**base, **kw})


def history(out):
    return [e for e in map(json.loads, (out / "history.jsonl").read_text().splitlines()) if "loss" in e]


@pytest.fixture
def replay_manifest(tmp_path):
    root = tmp_path / "general"
    root.mkdir()
    rows = [{"id": f"r{i}", "audio": tone(root / f"r{i}.wav", seconds=0.5 + 0.1 * i, freq=600 + 50 * i).name,
             "duration": 0.5 + 0.1 * i, "text": t, "speaker": f"g{i}", "accent": "general"}
            for i, t in enumerate(REPLAY_TEXTS)]
    return write_manifest_rows(root / "manifest.jsonl", rows)


def spy_on_collate(model):
    """Record every batch's (audios, texts) the trainer collates."""
    seen, real = [], model.collate

    def collate(audios, texts=None, langs=None):
        seen.append(([np.asarray(a).copy() for a in audios], list(texts)))
        return real(audios, texts, langs)

    model.collate = collate
    return seen


# -- distillation ----------------------------------------------------------------------------------------

def test_distillation_term():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 6, 9), torch.randn(2, 6, 9)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    assert distillation(student, student.clone(), mask, 1.0).item() == 0.0
    kd = distillation(student, teacher, mask, 1.0)
    p, q = torch.softmax(teacher[mask], -1), torch.log_softmax(student[mask], -1)
    torch.testing.assert_close(kd, (p * (p.log() - q)).sum(-1).mean())
    moved = student.clone()
    moved[~mask] += 5.0  # positions the loss does not count do not count here either
    assert distillation(moved, teacher, mask, 1.0).item() == pytest.approx(kd.item())
    t = 3.0
    torch.testing.assert_close(distillation(student, teacher, mask, t),
                               t * t * distillation(student / t, teacher / t, mask, 1.0))


@pytest.mark.parametrize("method", ["lora", "adapters", "full"])
def test_distillation_starts_at_zero_then_pulls(tiny_whisper, toy_manifest, tmp_path, method):
    summary = train(load_model(str(tiny_whisper)), read_manifest(toy_manifest), tmp_path / "exp",
                    cfg(method=method, distill_weight=1.0, distill_temperature=2.0))
    events = history(tmp_path / "exp")
    # The adapted model starts equal to the base (LoRA B = 0, bottleneck up = 0, the full model is the base).
    assert events[0]["distill"] == 0.0
    assert events[-1]["distill"] > 0.0
    assert summary["distill_weight"] == 1.0 and summary["distill_temperature"] == 2.0
    expected = parameter_bytes(load_model(str(tiny_whisper)).module) if method == "full" else 0
    assert summary["distill_teacher_bytes"] == expected
    assert "distill" in (tmp_path / "exp" / "train.log").read_text()


def test_without_distillation_nothing_is_logged_or_copied(tiny_whisper, toy_manifest, tmp_path):
    summary = train(load_model(str(tiny_whisper)), read_manifest(toy_manifest), tmp_path / "exp", cfg(max_steps=1))
    assert "distill" not in history(tmp_path / "exp")[0]
    assert summary["distill_teacher_bytes"] == 0 and summary["replay_utterances"] == 0 and summary["augment"] == {}


def test_the_adapter_teacher_is_the_base_and_training_flags_survive(tiny_whisper, toy_manifest):
    model = load_model(str(tiny_whisper))
    c = cfg(method="lora", distill_weight=0.5)
    prepare_base(model, c)
    apply_method(model, c)
    objective = Objective.build(model, c, "kept", torch.device("cpu"))
    model.module.train()
    trainable = [n for n, p in model.module.named_parameters() if p.requires_grad]
    with torch.no_grad():
        for n, p in model.module.named_parameters():
            if "lora_B" in n:
                p.normal_()  # as if trained: the adapted model now differs from the base
    utts = read_manifest(toy_manifest)[:3]
    batch = model.collate([load_utterance(u, 16000) for u in utts], [u.text for u in utts])
    base = load_model(str(tiny_whisper))
    base.module.eval()
    with torch.no_grad():
        torch.testing.assert_close(objective.teacher_logits(batch), base.logits(batch)[0])
    terms = objective(batch)
    assert terms.distill.item() > 0 and terms.positions == terms.items == base.loss_items(batch)
    assert [n for n, p in model.module.named_parameters() if p.requires_grad] == trainable
    assert model.active_adapter == "default" and model.module.training
    terms.total(0.5, [1.0, 1.0]).backward()
    assert all(p.grad is not None for p in model.module.parameters() if p.requires_grad)


def test_a_teacher_at_full_context_reads_the_batch_at_30_seconds(tiny_whisper, toy_manifest, tiny_ctc):
    """distill_teacher_context: full: the student at its dynamic context, the teacher (the base) at 30 s."""
    model = load_model(str(tiny_whisper))
    model.configure(audio_context="dynamic")
    c = cfg(method="full", distill_weight=0.5, distill_teacher_context="full")
    prepare_base(model, c)
    apply_method(model, c)
    objective = Objective.build(model, c, "kept", torch.device("cpu"))
    utts = read_manifest(toy_manifest)[:3]
    audios = [load_utterance(u, 16000) for u in utts]
    batch = model.collate(audios, [u.text for u in utts])
    assert batch["input_features"].shape[-1] < 3000
    base = load_model(str(tiny_whisper))  # pads every batch to 30 s: the features the teacher must read
    base.module.eval()
    full = base.collate(audios, [u.text for u in utts])
    torch.testing.assert_close(model.at_full_context(batch)["input_features"], full["input_features"], rtol=0, atol=0)
    with torch.no_grad():
        at_30 = base.logits(full)[0]
        torch.testing.assert_close(objective.teacher_logits(batch), at_30)
        assert not torch.allclose(base.logits(batch)[0], at_30)  # the context changes what the teacher says
    assert objective(batch).distill.item() > 0  # the student at its short context already differs from it
    ctc = load_model(str(tiny_ctc))
    with pytest.raises(ConfigError, match="no audio context"):
        Objective.build(ctc, cfg(distill_weight=1.0, distill_teacher_context="full"), "kept", torch.device("cpu"))


def test_ctc_distillation_on_frames_and_a_rebuilt_vocabulary_is_refused(tiny_ctc, toy_manifest, tmp_path):
    summary = train(load_model(str(tiny_ctc)), read_manifest(toy_manifest), tmp_path / "exp",
                    cfg(method="freeze", settings=["feature_encoder"], distill_weight=1.0))
    events = history(tmp_path / "exp")
    assert events[0]["distill"] == 0.0 and events[-1]["distill"] > 0.0
    assert summary["distill_teacher_bytes"] > 0
    narrow = build_tiny_ctc(tmp_path / "narrow", texts=["abc"])  # can't spell the corpus: a new head
    with pytest.raises(ConfigError, match="distill_weight: .*new CTC vocabulary"):
        train(load_model(str(narrow)), read_manifest(toy_manifest), tmp_path / "exp2", cfg(distill_weight=1.0))


# -- replay ----------------------------------------------------------------------------------------------

def test_replay_batches_are_a_pure_function_and_share_out_like_one_process():
    one = replay_batches(5, 2, 1, 0, seed=7, epoch=3, batches=6)
    assert one == replay_batches(5, 2, 1, 0, seed=7, epoch=3, batches=6)
    assert one != replay_batches(5, 2, 1, 0, seed=7, epoch=4, batches=6)
    assert all(len(b) == 2 for b in one)
    flat = [i for b in one for i in b]
    assert sorted(flat[:5]) == list(range(5))  # each replay utterance once before any twice
    two = [replay_batches(5, 1, 2, rank, seed=7, epoch=3, batches=6) for rank in (0, 1)]
    assert [a + b for a, b in zip(*two, strict=True)] == one
    assert replay_batches(5, 2, 1, 0, seed=7, epoch=3, batches=3) == one[:3]  # a prefix: resumption slices it


def test_replay_and_augmentation_reach_training_and_resume_exactly(tiny_whisper, toy_manifest, replay_manifest,
                                                                   tmp_path, monkeypatch):
    utts = read_manifest(toy_manifest)
    c = cfg(max_steps=5, batch_size=4, save_every=2, replay_manifest=str(replay_manifest), replay_fraction=0.5,
            distill_weight=0.5, augment={"volume": {"gain_db": [6.0, 6.0]}})
    model = load_model(str(tiny_whisper))
    seen = spy_on_collate(model)
    summary = train(model, utts, tmp_path / "ref", c)
    assert summary["replay_utterances"] == 5 and summary["replay_per_batch"] == 2
    assert summary["replay_manifest"] == str(replay_manifest)
    assert summary["augment"] == {"volume": {"prob": 1.0, "gain_db": [6.0, 6.0]}}
    plain = lambda text: text.lower().strip(" .")  # noqa: E731 (transcripts may be restyled as the model writes)
    by_text = {plain(u.text): u for u in [*utts, *read_manifest(replay_manifest)]}
    gain = np.float32(10 ** (6 / 20))
    assert len(seen) == 5
    for audios, texts in seen:
        texts = [plain(t) for t in texts]
        assert sum(t in REPLAY_TEXTS for t in texts) == 2 and len(texts) == 4
        for audio, text in zip(audios, texts, strict=True):
            clean = load_utterance(by_text[text], 16000)
            if text in REPLAY_TEXTS:  # replay audio as recorded
                np.testing.assert_array_equal(audio, clean)
            else:  # training audio through the augmenter
                np.testing.assert_allclose(audio, clean * gain, rtol=1e-6)

    revive = kill_training_after(monkeypatch, 3)  # killed while fetching step 4: checkpoint of step 2 on disk
    with pytest.raises(KeyboardInterrupt):
        train(load_model(str(tiny_whisper)), utts, tmp_path / "run", c)
    revive()
    resumed = load_model(str(tiny_whisper))
    assert train(resumed, utts, tmp_path / "run", c)["steps"] == 5
    ref = load_model(str(tmp_path / "ref")).module.state_dict()
    for k, v in load_model(str(tmp_path / "run")).module.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=1e-5, atol=1e-6, msg=k)


def test_dev_audio_is_decoded_as_recorded_while_training_audio_is_augmented(tiny_whisper, toy_manifest, tmp_path):
    from speechtl.cli import dev_evaluator

    utts = read_manifest(toy_manifest)
    model = load_model(str(tiny_whisper))
    decoded, real = [], model.collate

    def collate(audios, texts=None, *rest, **kw):
        if texts is None:  # decoding: the dev evaluation
            decoded.extend(np.asarray(a).copy() for a in audios)
        return real(audios, texts, *rest, **kw)

    model.collate = collate
    c = cfg(max_steps=2, eval_every=1, augment={"volume": {"gain_db": [6.0, 6.0]}})
    train(model, utts, tmp_path / "run", c, dev_evaluator(utts[:3], 4))
    clean = [load_utterance(u, 16000) for u in utts[:3]]
    assert len(decoded) >= 3 and all(any(np.array_equal(d, x) for x in clean) for d in decoded)


# -- configuration ---------------------------------------------------------------------------------------

def test_bad_augment_block_names_file_and_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: lora\naugment:\n  speed: {}\n  volume:\n    gain_db: [6, -6]\n")
    with pytest.raises(ConfigError, match=r"c.yaml:5: 'augment.volume.gain_db' must be \[low, high\]"):
        load_config(f)
    f.write_text("augment:\n  sped: {}\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: 'augment.sped' is not an augmentation"):
        load_config(f)
    f.write_text("augment:\n  speed: {}\n")
    assert load_config(f).augment == {"speed": {"prob": 1.0, "factors": [0.9, 1.0, 1.1]}}
    assert load_config(None, ["augment={volume: {}}"]).augment["volume"]["gain_db"] == [-6.0, 6.0]


@pytest.mark.parametrize("settings, message", [
    ({"distill_weight": -0.1}, "'distill_weight' must be >= 0"),
    ({"distill_temperature": 0.0}, "'distill_temperature' must be positive"),
    ({"distill_teacher_context": "full"}, "'distill_teacher_context' full .* needs distill_weight > 0"),
    ({"distill_weight": 1.0, "distill_teacher_context": "half"}, "'distill_teacher_context' must be 'same' or 'full'"),
    ({"replay_fraction": 0.5}, "'replay_fraction' needs replay_manifest"),
    ({"replay_fraction": 1.0, "replay_manifest": "{m}"}, r"'replay_fraction' must lie in \[0, 1\)"),
    ({"replay_manifest": "{m}"}, "'replay_manifest' is only used with replay_fraction"),
    ({"replay_fraction": 0.5, "replay_manifest": "nowhere.jsonl"}, "'replay_manifest' names nowhere.jsonl"),
    ({"replay_fraction": 0.1, "replay_manifest": "{m}"}, "gives 0 replay utterance"),
    ({"replay_fraction": 0.9, "replay_manifest": "{m}", "batch_size": 2}, "leave one for training"),
])
def test_bad_forgetting_controls_are_refused(tmp_path, settings, message):
    m = tmp_path / "general.jsonl"
    m.write_text("")
    settings = {k: v.format(m=m) if isinstance(v, str) else v for k, v in settings.items()}
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{"batch_size": 4, **settings}).validate()


# -- several processes -----------------------------------------------------------------------------------

CONFIG = """method: {method}
{block}
learning_rate: 3.0e-3
lr_scheduler: constant
warmup_steps: 0
max_steps: 3
batch_size: {batch_size}
eval_every: 0
save_every: 10
log_every: 1
seed: 3
distill_weight: 1.0
distill_temperature: 2.0
replay_manifest: {replay}
replay_fraction: 0.5
"""


def run_train(model, manifest, replay, out, batch_size, processes, method):
    conf = out.parent / f"{out.name}.yaml"
    # lora: dropout off (its draws differ between one process and two), and a gate calibrated after training
    block = "lora: {dropout: 0.0}\ngate: {base_share: 0.5}" if method == "lora" else ""
    conf.write_text(CONFIG.format(batch_size=batch_size, replay=replay, method=method, block=block))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    cmd = [*launcher, "-m", "speechtl.cli", "train", "--model", str(model), "--train", str(manifest),
           "--config", str(conf), "--out", str(out), *(["--dev", str(manifest)] if method == "lora" else [])]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_distillation_and_replay_under_two_processes_match_one(tiny_whisper, toy_manifest, replay_manifest,
                                                               tmp_path, method):
    run_train(tiny_whisper, toy_manifest, replay_manifest, tmp_path / "one", 4, 1, method)
    run_train(tiny_whisper, toy_manifest, replay_manifest, tmp_path / "two", 2, 2, method)
    assert "2 utterance(s) per micro-batch x 2 process(es)" in (tmp_path / "two" / "train.log").read_text()
    assert history(tmp_path / "one")[0]["distill"] == history(tmp_path / "two")[0]["distill"] == 0.0
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["replay_per_batch"] == 1 and summary["replay_utterances"] == len(REPLAY_TEXTS)
    if method == "full":
        a, b = (load_model(str(tmp_path / d)).module.state_dict() for d in ("one", "two"))
    else:
        from speechtl.adapt.adapters import load

        a, b = (load(str(tmp_path / d)).module.state_dict() for d in ("one", "two"))
        one, two = (json.loads((tmp_path / d / "model" / "speechtl_card.json").read_text())["gate"]
                    for d in ("one", "two"))  # calibrated once, by the main process, on the same weights
        assert one["threshold"] == pytest.approx(two["threshold"], abs=1e-4) and two["calibration"]["dev"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
