import json

import numpy as np
import pytest
import soundfile as sf
from helpers import tone

from speechtl.features.audio import AudioError, load_audio, load_utterance
from speechtl.features.batching import length_grouped_batches, sorted_batches


def test_resample_and_downmix(tmp_path):
    wav = tone(tmp_path / "s.wav", seconds=2.0, sr=22050, channels=2)
    x = load_audio(wav, 16000)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 32000) <= 1
    # a 220 Hz tone stays a 220 Hz tone
    spec = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spec) * 16000 / len(x) - 220) < 2


def test_offset_and_duration(tmp_path):
    wav = tone(tmp_path / "s.wav", seconds=3.0)
    assert len(load_audio(wav, 16000, offset=1.0, duration=0.5)) == 8000


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"RIFF garbage that is not audio"), "can't decode audio file"),
    (lambda p: sf.write(str(p), np.zeros(0, dtype=np.float32), 16000), "is empty"),
    (lambda p: sf.write(str(p), np.array([0.1, np.nan, 0.2], dtype=np.float32), 16000, subtype="FLOAT"),
     "NaN or infinite"),
])
def test_bad_audio_is_named(tmp_path, make, message):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(AudioError) as e:
        load_audio(p, 16000, where="m.jsonl:7")
    assert message in str(e.value) and str(p) in str(e.value) and "m.jsonl:7" in str(e.value)


def test_missing_audio(tmp_path):
    with pytest.raises(AudioError, match="not found|can't decode"):
        load_audio(tmp_path / "nope.wav", 16000)


def test_batching_covers_everything_once_and_is_seeded():
    d = [float(i % 17) for i in range(100)]
    for batches in (sorted_batches(d, 8), length_grouped_batches(d, 8, seed=3, mega_factor=2)):
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(100))
    assert length_grouped_batches(d, 8, seed=3) == length_grouped_batches(d, 8, seed=3)
    assert length_grouped_batches(d, 8, seed=3) != length_grouped_batches(d, 8, seed=4)
    first, *rest = sorted_batches(d, 8)
    assert min(d[i] for i in first) >= max(d[i] for b in rest for i in b)  # longest first


@pytest.mark.parametrize("offset, expected", [(None, 48000), (0.0, 8000), (0, 8000), (1.0, 8000)])
def test_a_manifest_segment_is_offset_and_duration_whatever_the_offset(tmp_path, offset, expected):
    from speechtl.data.manifest import read_manifest

    tone(tmp_path / "s.wav", seconds=3.0)
    row = {"id": "u", "audio": "s.wav", "duration": 0.5, "text": "hi", "speaker": "s", "accent": "x"}
    if offset is not None:
        row["offset"] = offset
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    (utt,) = read_manifest(tmp_path / "m.jsonl")
    assert len(load_utterance(utt, 16000)) == expected
