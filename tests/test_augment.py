"""Augmentation of training audio: what each augmentation does to a signal, determinism, the config block.

Noise and impulse responses are fabricated here (white noise, a decaying random tail); nothing is downloaded.
"""

import pickle

import numpy as np
import pytest
import soundfile as sf
import yaml
from helpers import write_manifest_rows

from speechtl.adapt.config import ConfigError
from speechtl.cli import main
from speechtl.data.kaldi import write_kaldi_dir
from speechtl.data.manifest import ManifestError, read_manifest
from speechtl.data.splits import check_speaker_disjoint, source_speaker, split_by_speaker
from speechtl.features.audio import load_utterance, speed_perturb
from speechtl.features.augment import AugmentConfig, Augmenter, add_noise, reverberate, speed_copies, yaml_key_lines

SR = 16000


def sine(freq: float, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(x: np.ndarray, sr: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size), 16 * x.size))
    return float(np.argmax(spectrum) * sr / (16 * x.size))


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    clean64, noise64 = clean.astype(np.float64), noisy.astype(np.float64) - clean.astype(np.float64)
    return 10 * np.log10(np.mean(clean64 ** 2) / np.mean(noise64 ** 2))


@pytest.fixture
def noise_manifest(tmp_path):
    """Two noise recordings: 3 s of white noise at 16 kHz and 0.3 s at 8 kHz (shorter than speech: tiled)."""
    rng = np.random.default_rng(0)
    rows = []
    for name, seconds, sr in (("white", 3.0, 16000), ("short8k", 0.3, 8000)):
        sf.write(str(tmp_path / f"{name}.wav"), (0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32), sr)
        rows.append({"id": name, "audio": f"{name}.wav", "duration": seconds, "text": "<noise>", "speaker": name,
                     "accent": "none"})
    return write_manifest_rows(tmp_path / "noise.jsonl", rows)


@pytest.fixture
def rir_manifest(tmp_path):
    """Two impulse responses: a direct path after 5 ms followed by an exponentially decaying random tail."""
    rng = np.random.default_rng(1)
    rows = []
    for i, t60 in enumerate((0.2, 0.5)):
        n = int(t60 * SR)
        rir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * 0.2
        rir[:80] = 0.0
        rir[80] = 1.0
        sf.write(str(tmp_path / f"rir{i}.wav"), rir.astype(np.float32), SR)
        rows.append({"id": f"rir{i}", "audio": f"rir{i}.wav", "duration": t60, "text": "<rir>", "speaker": "room",
                     "accent": "none"})
    return write_manifest_rows(tmp_path / "rirs.jsonl", rows)


def augmenter(blocks: dict, seed: int = 7, **kwargs) -> Augmenter:
    return Augmenter(AugmentConfig.from_dict(blocks), seed=seed, sampling_rate=SR, **kwargs)


@pytest.mark.parametrize("factor", [1.1, 0.9])
def test_speed_factor_changes_length_and_pitch_together(factor):
    tone = sine(440.0)
    out = augmenter({"speed": {"factors": [factor]}})(tone, "u1", epoch=0)
    assert abs(out.size - tone.size / factor) <= 1
    assert peak_frequency(out) == pytest.approx(440.0 * factor, abs=0.5)
    assert peak_frequency(tone) == pytest.approx(440.0, abs=0.5)


def test_default_speed_is_kaldis_three_way_perturbation():
    cfg = AugmentConfig.from_dict({"speed": {}})
    assert cfg.to_dict() == {"speed": {"prob": 1.0, "factors": [0.9, 1.0, 1.1]}}
    aug = Augmenter(cfg, seed=3, sampling_rate=SR)
    tone = sine(440.0, 0.5)
    lengths = [aug(tone, f"utt{i}", epoch=0).size for i in range(300)]
    counts = {round(tone.size / n, 2): lengths.count(n) for n in set(lengths)}
    assert set(counts) == {0.9, 1.0, 1.1}
    assert min(counts.values()) > 60  # about 100 each


def test_a_slowing_factor_is_not_applied_past_max_seconds():
    tone = sine(440.0, 1.0)
    assert augmenter({"speed": {"factors": [0.9]}}, max_seconds=1.05)(tone, "u", epoch=0).size == tone.size
    assert augmenter({"speed": {"factors": [0.9]}}, max_seconds=1.2)(tone, "u", epoch=0).size > tone.size


@pytest.mark.parametrize("target", [0.0, 7.5, 20.0])
def test_noise_at_snr_has_that_power_ratio(noise_manifest, target):
    speech = sine(300.0, 1.2)
    aug = augmenter({"noise": {"manifest": str(noise_manifest), "prob": 1.0, "snr_db": [target, target]}})
    for utt in ("a", "b", "c", "d"):  # both noise files are drawn among these (the short one tiled and resampled)
        noisy = aug(speech, utt, epoch=0)
        assert noisy.size == speech.size
        assert snr_db(speech, noisy) == pytest.approx(target, abs=0.02)


def test_snr_is_drawn_within_its_range(noise_manifest):
    speech = sine(300.0, 0.5)
    aug = augmenter({"noise": {"manifest": str(noise_manifest), "prob": 1.0, "snr_db": [0, 20]}})
    measured = [snr_db(speech, aug(speech, f"u{i}", epoch=0)) for i in range(20)]
    assert all(-0.02 < s < 20.02 for s in measured)
    assert max(measured) - min(measured) > 5


def test_add_noise_leaves_audio_alone_when_either_side_is_silent():
    speech = sine(300.0, 0.1)
    assert add_noise(speech, np.zeros_like(speech), 10.0) is speech
    silence = np.zeros(100, dtype=np.float32)
    assert add_noise(silence, np.ones(100, dtype=np.float32), 10.0) is silence


def test_reverberation_keeps_length_timing_and_power(rir_manifest):
    # A broadband burst between silences, so that the cross-correlation has one clear peak.
    speech = np.zeros(int(0.8 * SR), dtype=np.float32)
    speech[3200:9600] = 0.2 * np.random.default_rng(2).standard_normal(6400)
    wet = augmenter({"reverb": {"manifest": str(rir_manifest), "prob": 1.0}})(speech, "u", epoch=0)
    assert wet.size == speech.size
    assert np.mean(wet ** 2) == pytest.approx(np.mean(speech ** 2), rel=1e-3)
    assert not np.allclose(wet, speech, atol=1e-3)
    lags = np.arange(-200, 201)
    xcorr = [float(np.dot(np.roll(wet, -k), speech)) for k in lags]
    assert abs(lags[int(np.argmax(xcorr))]) <= 2  # shifted back by the direct path's 5 ms
    # A pure delayed impulse is no room at all: the audio comes back as it was.
    impulse = np.zeros(400, dtype=np.float32)
    impulse[123] = 0.5
    assert np.allclose(reverberate(speech, impulse), speech, atol=1e-5)
    assert np.max(np.abs(wet[:3200])) < 1e-6  # nothing arrives before the direct path


def test_volume_gain_within_range():
    tone = sine(200.0, 0.2)
    aug = augmenter({"volume": {"gain_db": [-6, 6]}})
    gains = [20 * np.log10(np.max(np.abs(aug(tone, f"u{i}", 0))) / np.max(np.abs(tone))) for i in range(20)]
    assert all(-6.001 <= g <= 6.001 for g in gains)
    assert max(gains) - min(gains) > 3


def test_same_seed_epoch_and_utterance_give_the_same_audio(noise_manifest, rir_manifest):
    blocks = {"speed": {}, "reverb": {"manifest": str(rir_manifest), "prob": 0.7},
              "noise": {"manifest": str(noise_manifest), "prob": 0.7}, "volume": {}}
    speech = [sine(200.0 + 50 * i, 0.5 + 0.1 * i) for i in range(6)]
    ids = [f"spk1-utt{i}" for i in range(6)]
    first = augmenter(blocks)
    run = [first(a, u, epoch=3) for a, u in zip(speech, ids, strict=True)]
    # A resumed run: a fresh augmenter (in another worker process: pickled), utterances in another order.
    resumed = pickle.loads(pickle.dumps(augmenter(blocks)))
    for i in reversed(range(6)):
        assert np.array_equal(resumed(speech[i], ids[i], epoch=3), run[i])
    assert any(not np.array_equal(a, b) for a, b in zip(run, speech, strict=True))  # it did augment
    # Another epoch or another seed hears other audio.
    for other in (first(speech[0], ids[0], epoch=4), augmenter(blocks, seed=8)(speech[0], ids[0], epoch=3)):
        assert other.size != run[0].size or not np.array_equal(other, run[0])


def test_each_augmentation_draws_on_its_own(noise_manifest):
    """Switching one augmentation on does not change what another one draws."""
    tone = sine(440.0, 0.5)
    speed_only = augmenter({"speed": {}})
    with_volume = augmenter({"speed": {}, "volume": {"gain_db": [0, 0]}})
    for i in range(10):
        assert np.array_equal(speed_only(tone, f"u{i}", 1), with_volume(tone, f"u{i}", 1))


def test_probability_zero_changes_nothing(noise_manifest):
    tone = sine(440.0, 0.3)
    aug = augmenter({"speed": {"prob": 0}, "noise": {"manifest": str(noise_manifest), "prob": 0.0},
                     "volume": {"prob": 0}})
    assert all(np.array_equal(aug(tone, f"u{i}", 0), tone) for i in range(10))
    assert not AugmentConfig.from_dict({}).enabled and not AugmentConfig.from_dict(None).enabled


def test_config_round_trips_through_its_dict(noise_manifest):
    cfg = AugmentConfig.from_dict({"noise": {"manifest": str(noise_manifest), "snr_db": [5, 15]},
                                   "volume": {"prob": 0.5}})
    assert cfg.to_dict() == {"noise": {"manifest": str(noise_manifest), "prob": 0.5, "snr_db": [5.0, 15.0]},
                             "volume": {"prob": 0.5, "gain_db": [-6.0, 6.0]}}
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg


TRAIN_YAML = """\
method: lora
learning_rate: 1.0e-4
augment:
  speed:
    factors: [0.9, 1.0, 1.1]
{bad}
max_steps: 100
"""


@pytest.mark.parametrize("bad, line, message", [
    ("  sped: {}", 6, r"'augment.sped' is not an augmentation \(known: speed, reverb, noise, volume\)"),
    ("  volume:\n    gain: [-3, 3]", 7, r"'augment.volume.gain' is not a setting of volume \(known: prob, gain_db\)"),
    ("  volume:\n    prob: 1.5", 7, r"'augment.volume.prob' must lie in \[0, 1\], got 1.5"),
    ("  volume:\n    prob: often", 7, r"'augment.volume.prob' must be a number, got str 'often'"),
    ("  volume:\n    gain_db: [6, -6]", 7, r"'augment.volume.gain_db' must be \[low, high\] with low <= high"),
    ("  volume:\n    gain_db: [-6]", 7, r"'augment.volume.gain_db' must be \[low, high\]"),
    ("  noise:\n    prob: 0.5", 6, r"'augment.noise.manifest' is required"),
    ("  noise:\n    manifest: nowhere/noise.jsonl", 7, r"'augment.noise.manifest' names no file: nowhere/noise.jsonl"),
    ("  reverb: true", 6, r"'augment.reverb' must be a mapping of settings \(write `reverb: \{\}` for the defaults\)"),
])
def test_a_bad_augment_block_is_refused_with_file_and_line(tmp_path, bad, line, message):
    path = tmp_path / "train.yaml"
    path.write_text(TRAIN_YAML.format(bad=bad), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    lines = yaml_key_lines(yaml.compose(text))
    assert lines["augment"] == 3 and lines["augment.speed.factors"] == 5
    with pytest.raises(ConfigError, match=rf"^{path}:{line}: {message}"):
        AugmentConfig.from_dict(yaml.safe_load(text)["augment"], str(path), lines)


def test_bad_speed_factors_and_a_bad_block_type(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("augment:\n  speed:\n    factors: [0.9, 3.0]\n", encoding="utf-8")
    lines = yaml_key_lines(yaml.compose(path.read_text()))
    with pytest.raises(ConfigError, match=rf"^{path}:3: 'augment.speed.factors' must lie in \[0.5, 2.0\]"):
        AugmentConfig.from_dict(yaml.safe_load(path.read_text())["augment"], str(path), lines)
    with pytest.raises(ConfigError, match=r"^c.yaml:9: 'augment' must be a mapping of augmentations"):
        AugmentConfig.from_dict(["speed"], "c.yaml", {"augment": 9})
    with pytest.raises(ConfigError, match=r"^c.yaml: 'augment.speed.factors' must list at least one"):
        AugmentConfig.from_dict({"speed": {"factors": []}}, "c.yaml")


@pytest.fixture
def tone_manifest(tmp_path):
    """Two speakers, two 1 s tones each; the second line of speaker b is the 0.5 s segment starting at 0.25 s."""
    rows = []
    for spk, freq in (("a", 300.0), ("b", 500.0)):
        for i in range(2):
            sf.write(str(tmp_path / f"{spk}{i}.wav"), sine(freq), SR)
            rows.append({"id": f"{spk}{i}", "audio": f"{spk}{i}.wav", "duration": 1.0, "text": "a tone",
                         "speaker": spk, "accent": "x"})
    rows[-1].update(offset=0.25, duration=0.5)
    return write_manifest_rows(tmp_path / "tones.jsonl", rows)


def test_speed_copies_are_pseudo_speakers_whose_audio_is_perturbed_when_read(tone_manifest, tmp_path):
    out = tmp_path / "sp.jsonl"
    assert main(["manifest", "perturb-speed", str(tone_manifest), "--out", str(out)]) == 0
    utts = {u.id: u for u in read_manifest(out)}
    assert len(utts) == 12
    assert {u.speaker for u in utts.values()} == {"a", "b", "sp0.9-a", "sp0.9-b", "sp1.1-a", "sp1.1-b"}
    fast, orig = utts["sp1.1-a0"], utts["a0"]
    assert fast.duration == pytest.approx(1.0 / 1.1, abs=1e-4) and fast.meta["source_id"] == "a0"
    assert "speed_perturb" not in orig.meta and orig.duration == 1.0
    audio = load_utterance(fast, SR)
    assert abs(audio.size - SR / 1.1) <= 1
    assert peak_frequency(audio) == pytest.approx(300.0 * 1.1, abs=0.5)
    # a segment keeps its offset and reads 1/f of the source segment's length
    seg = utts["sp0.9-b1"]
    assert seg.offset == 0.25 and seg.duration == pytest.approx(0.5 / 0.9, abs=1e-4)
    assert abs(load_utterance(seg, SR).size - 0.5 * SR / 0.9) <= 2  # durations are written to 0.1 ms
    read, expected = load_utterance(seg, SR), speed_perturb(load_utterance(utts["b1"], SR), 0.9, SR)
    n = min(read.size, expected.size)  # the rounded duration may read one sample more of the recording
    assert abs(read.size - expected.size) <= 1 and np.allclose(read[:n - 8], expected[:n - 8], atol=1e-3)


def test_a_speaker_and_its_pseudo_speakers_stay_on_one_side_of_a_split(tone_manifest, tmp_path):
    utts = speed_copies(read_manifest(tone_manifest), [0.9, 1.0, 1.1])
    sets = split_by_speaker(utts, {"train": 0.5, "dev": 0.5}, seed=3)
    sides = {name: {source_speaker(u) for u in members} for name, members in sets.items()}
    assert sides["train"] and sides["dev"] and not sides["train"] & sides["dev"]
    wrong = {"train": [u for u in utts if u.speaker == "a"], "dev": [u for u in utts if u.speaker == "sp1.1-a"]}
    with pytest.raises(ManifestError, match="not speaker-disjoint"):
        check_speaker_disjoint(wrong, where="sets")


def test_speed_copies_refuse_a_copy_of_a_copy_and_a_kaldi_dir(tone_manifest, tmp_path):
    utts = speed_copies(read_manifest(tone_manifest), [1.1])
    with pytest.raises(ManifestError, match="already speed-perturbed"):
        speed_copies(utts, [0.9])
    with pytest.raises(ManifestError, match="perturb_data_dir_speed_3way"):
        write_kaldi_dir(utts, tmp_path / "kd")
    assert main(["manifest", "perturb-speed", str(tone_manifest), "--out", str(tmp_path / "x.jsonl"),
                 "--factors", "3"]) == 2


def test_the_report_names_the_augmentation_and_forgetting_controls_a_run_used():
    from speechtl.report.results import train_lines

    summary = {"method": "lora", "trainable_parameters": 10, "total_parameters": 100, "train_utterances": 8,
               "train_hours": 0.1, "train_speakers": 2, "steps": 4, "utterances_per_step": 4, "best_dev_wer": 0.5,
               "best_step": 4, "distill_weight": 0.3, "distill_temperature": 2.0, "replay_per_batch": 2,
               "replay_manifest": "general.jsonl", "replay_utterances": 50,
               "augment": AugmentConfig.from_dict({"speed": {}}).to_dict()}
    text = "\n".join(train_lines(summary))
    assert "- distillation to the base model: weight 0.3, temperature 2" in text
    assert "- replay: 2 utterance(s) of each batch from `general.jsonl` (50 utterances)" in text
    assert "- augmentation of the training audio: speed (prob 1.0, factors [0.9, 1.0, 1.1])" in text
    plain = "\n".join(train_lines({**summary, "distill_weight": 0.0, "replay_per_batch": 0, "augment": {}}))
    assert "distillation" not in plain and "replay" not in plain and "augmentation" not in plain


def test_fabricated_noise_and_rooms_feed_the_noise_and_reverb_augmentations(tmp_path):
    from speechtl.data.corpora.fabricated_noise import T60S, prepare_fabricated_noise

    assert main(["prepare", "fabricated_noise", "--out", str(tmp_path / "n")]) == 0
    noise, rirs = read_manifest(tmp_path / "n" / "noise.jsonl"), read_manifest(tmp_path / "n" / "rirs.jsonl")
    assert [u.id for u in noise] == ["noise-white", "noise-pink", "noise-brown", "noise-hum"]
    assert [u.duration for u in rirs] == list(T60S)
    again = prepare_fabricated_noise(tmp_path / "m")  # seeded: the same files again
    assert (tmp_path / "m" / "noise" / "pink.wav").read_bytes() == (tmp_path / "n" / "noise" / "pink.wav").read_bytes()
    assert set(again) == {"noise", "rirs"}
    tone = sine(300.0)
    noisy = augmenter({"noise": {"manifest": str(tmp_path / "n" / "noise.jsonl"), "prob": 1.0, "snr_db": [10, 10]}})
    assert snr_db(tone, noisy(tone, "u", 0)) == pytest.approx(10.0, abs=0.01)
    wet = augmenter({"reverb": {"manifest": str(tmp_path / "n" / "rirs.jsonl"), "prob": 1.0}})(tone, "u", 0)
    assert wet.size == tone.size and not np.allclose(wet, tone)
