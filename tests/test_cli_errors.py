"""speechtl's own errors are bad input, said in one line (exit 2); anything else is a bug (exit 1, traceback kept)."""

import tempfile

import pytest
from helpers import tone, write_manifest_rows

from speechtl.cli import main
from speechtl.errors import SpeechtlError


def rows(tmp_path):
    tone(tmp_path / "u0.wav")
    return write_manifest_rows(tmp_path / "m.jsonl", [{"id": "u0", "audio": "u0.wav", "duration": 1.0, "text": "hi",
                                                      "speaker": "s", "accent": "x"}])


@pytest.fixture(autouse=True)
def _temp_files_here(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()


def test_every_own_error_type_is_a_speechtl_error():
    from speechtl.adapt.adapters import AdapterError
    from speechtl.adapt.config import ConfigError
    from speechtl.data.manifest import ManifestError
    from speechtl.evaluate.external import HypothesisError
    from speechtl.features.audio import AudioError
    from speechtl.models.base import ModelLoadError
    from speechtl.models.ct2 import CT2FormatError

    for cls in (AdapterError, ConfigError, ManifestError, HypothesisError, AudioError, ModelLoadError, CT2FormatError):
        assert issubclass(cls, SpeechtlError), cls


@pytest.mark.parametrize("args, message", [
    (["manifest", "from-kaldi", "{tmp}/nowhere"], "from-kaldi needs --out MANIFEST.jsonl"),
    (["manifest", "to-kaldi", "{tmp}/missing.jsonl", "--out", "{tmp}/kd"], "manifest not found"),
    (["score", "--ref", "{tmp}/m.jsonl", "--hyp", "{tmp}/nohyp.txt", "--out", "{tmp}/s"], "hypothesis file not found"),
    (["score", "--ref", "{tmp}/m.jsonl", "--hyp", "{tmp}/m.jsonl", "--out", "{tmp}/s", "--n-boot", "0"],
     "n_boot must be at least 1"),
    (["compare", "{tmp}/nowhere", "--out", "{tmp}/c"], "not a directory"),
    (["report", "--before", "{tmp}", "--after", "{tmp}", "--role", "x=nonsense", "--out", "{tmp}/r"],
     "--role 'x=nonsense': expected SET=ROLE"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    rows(tmp_path)
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "internal error" not in err
    assert not list((tmp_path / "tmp").iterdir())


def test_any_other_error_is_a_bug_with_its_traceback_in_the_output_dir(tmp_path, capsys, monkeypatch):
    from speechtl.evaluate import external

    def broken(*args, **kwargs):
        raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")  # as numpy says it

    monkeypatch.setattr(external, "score_external", broken)
    out = tmp_path / "s"
    assert main(["score", "--ref", str(rows(tmp_path)), "--hyp", "h.txt", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "internal error" in err and "bug" in err and "ValueError: operands could not be broadcast" in err
    assert f"traceback in {out / 'error.log'}" in err
    log = (out / "error.log").read_text()
    assert "Traceback (most recent call last)" in log and "in broken" in log and "operands could not" in log


def test_a_bug_before_the_output_dir_exists_leaves_its_traceback_in_a_temp_file(tmp_path, capsys, monkeypatch):
    from speechtl.data import kaldi

    def broken(utts, data_dir):
        raise KeyError("rec")

    monkeypatch.setattr(kaldi, "write_kaldi_dir", broken)
    assert main(["manifest", "to-kaldi", str(rows(tmp_path)), "--out", str(tmp_path / "kd")]) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "KeyError: 'rec'" in err and not (tmp_path / "kd").exists()
    (log,) = (tmp_path / "tmp").iterdir()
    assert f"traceback in {log}" in err and "raise KeyError" in log.read_text()
