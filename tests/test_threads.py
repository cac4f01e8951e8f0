"""Pieces of CPU inference side by side, one core each (speechtl.models.threads), and Whisper's encoder using it."""

import threading

import pytest
import torch

from speechtl.models import load_model
from speechtl.models.threads import across_cores


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def seen(x: int) -> dict:
    """What a worker sees: its thread, its intra-op thread count and its autograd modes."""
    return {"x": x, "thread": threading.get_ident(), "threads": torch.get_num_threads(),
            "grad": torch.is_grad_enabled(), "inference": torch.is_inference_mode_enabled()}


def test_pieces_run_one_core_each_in_the_callers_modes_and_the_count_comes_back(two_threads):
    with torch.inference_mode():
        out = across_cores(seen, list(range(5)))
    assert [o["x"] for o in out] == list(range(5))  # in order
    assert {o["threads"] for o in out} == {1}
    assert threading.get_ident() not in {o["thread"] for o in out}
    assert all(o["inference"] and not o["grad"] for o in out)
    assert torch.get_num_threads() == 2
    with torch.no_grad():  # no grad without inference mode: the same in the workers
        assert all(not o["inference"] and not o["grad"] for o in across_cores(seen, [1, 2]))


def test_with_gradients_or_one_piece_it_is_the_plain_loop(two_threads):
    here = threading.get_ident()
    assert all(o["thread"] == here and o["threads"] == 2 and o["grad"] for o in across_cores(seen, [1, 2, 3]))
    with torch.inference_mode():
        assert across_cores(seen, [7])[0]["thread"] == here


def test_an_error_in_a_piece_reaches_the_caller_and_the_count_still_comes_back(two_threads):
    def fail(x: int) -> int:
        if x == 2:
            raise ValueError("piece 2")
        return x

    with torch.inference_mode(), pytest.raises(ValueError, match="piece 2"):
        across_cores(fail, [1, 2, 3])
    assert torch.get_num_threads() == 2


def test_whisper_encodes_in_pieces_side_by_side_as_in_one_batch(tiny_whisper, two_threads):
    model = load_model(str(tiny_whisper))
    feats = torch.randn(5, model.feature_extractor.feature_size, 200)
    with torch.inference_mode():
        whole = model.module.model.encoder(feats).last_hidden_state
        for micro_batch in (None, 1, 2):
            torch.testing.assert_close(model.encode(feats, micro_batch), whole, rtol=1e-5, atol=1e-5)
