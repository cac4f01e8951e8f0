"""Progress in log files: plain lines every tenth of the way when stderr is not a terminal, tqdm when it is."""

import io

import pytest
from corpus_miniatures import make_l2arctic

from speechtl.io import LogProgress, progress, setup_logging


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def log_file(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())  # as under `run.sh > log 2>&1`
    path = tmp_path / "run.log"
    setup_logging(path)
    return path


def progress_lines(path):
    return [ln for ln in path.read_text().splitlines() if " speechtl.progress: " in ln]


def test_a_long_loop_logs_about_ten_plain_lines(log_file, monkeypatch):
    assert sum(1 for _ in progress(range(1000), desc="decode", unit="utt")) == 1000
    lines = progress_lines(log_file)
    assert len(lines) == 10 and "\r" not in log_file.read_text()
    assert [ln.split("decode: ")[1].split(",")[0] for ln in lines] == [f"{k}/1000 utt ({k // 10}%)"
                                                                       for k in range(100, 1001, 100)]
    assert lines[-1].split(", ")[-1].startswith("done in ")


def test_updates_resume_postfix_and_unknown_totals(log_file):
    with progress(total=50, initial=20, desc="train", unit="step") as bar:  # resumed at step 20 of 50
        for _ in range(30):
            bar.update(1)
            bar.set_postfix(loss="0.123")
    lines = progress_lines(log_file)
    assert [ln.split("train: ")[1].split(" ")[0] for ln in lines] == ["25/50", "30/50", "35/50", "40/50", "45/50",
                                                                     "50/50"]
    assert all(ln.endswith("loss=0.123") for ln in lines)
    list(progress(iter(range(1234)), desc="rows", unit="row"))  # no length: 10, 20, 50, … and the final count
    counts = [ln.split("rows: ")[1].split(" ")[0] for ln in progress_lines(log_file)[len(lines):]]
    assert counts == ["10", "20", "50", "100", "200", "500", "1000", "1234"]
    list(progress(range(100), desc="quiet", disable=True))
    assert not [ln for ln in progress_lines(log_file) if "quiet" in ln]


def test_a_terminal_gets_tqdm(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.setattr("sys.stderr", Terminal())
    bar = progress(range(3), desc="x", leave=False)
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2]
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(progress(range(3), desc="x", leave=False), LogProgress)


def test_corpus_preparation_logs_progress_lines(tmp_path, log_file):
    from speechtl.data.corpora.l2arctic import prepare_l2arctic

    src = make_l2arctic(tmp_path / "L2ARCTIC", l1s=("hindi", "arabic"), per_speaker=6)
    prepare_l2arctic(src, tmp_path / "data")
    lines = [ln for ln in progress_lines(log_file) if "l2arctic: " in ln]
    assert lines and lines[-1].split("l2arctic: ")[1].startswith("8/8 speaker (100%)")
    assert "\r" not in log_file.read_text()
