import logging
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import build_tiny_ctc, build_tiny_whisper, toy_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VCTK = ROOT.parent / "shared" / "data" / "vctk_p239" / "manifest.jsonl"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Conversions go to a per-session cache, never the user's ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "speechtl-cache"
    monkeypatch.setenv("SPEECHTL_CACHE", str(cache))
    yield
    logging.getLogger("speechtl").handlers.clear()


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper"))


@pytest.fixture(scope="session")
def tiny_ctc(tmp_path_factory) -> Path:
    return build_tiny_ctc(tmp_path_factory.mktemp("tiny_ctc"))


@pytest.fixture
def toy_manifest(tmp_path) -> Path:
    return toy_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is required (apt-get install espeak-ng; .ci/run installs it)")
    return exe


@pytest.fixture(scope="session")
def vctk_manifest() -> Path:
    if not VCTK.is_file():
        pytest.skip(f"the shared real-speech set is not beside this checkout ({VCTK})")
    return VCTK
