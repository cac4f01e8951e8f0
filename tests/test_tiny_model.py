import numpy as np
import pytest
import torch

from speechtl.models import load_model


def test_tiny_whisper_loads_collates_and_learns(tiny_whisper):
    model = load_model(str(tiny_whisper))
    t = np.arange(16000) / 16000
    audios = [(0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32),
              np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1]
    batch = model.collate(audios, ["the cat sat", "a dog ran in the park"])
    assert batch["input_features"].shape == (2, 80, 3000)
    prefix = model.prefix_ids()
    assert batch["decoder_input_ids"][0, : len(prefix)].tolist() == prefix
    # labels are decoder inputs shifted by one; the forced prefix is not learnt
    assert (batch["labels"][:, : len(prefix) - 1] == -100).all()
    assert batch["labels"][1, len(prefix) - 1].item() == batch["decoder_input_ids"][1, len(prefix)].item()
    model.module.train()
    opt = torch.optim.Adam(model.module.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = model.loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.module.eval()
    hyps = model.transcribe(model.collate(audios))
    assert hyps == ["the cat sat", "a dog ran in the park"]


def test_save_and_reload_gives_same_transcripts(tiny_whisper, tmp_path):
    model = load_model(str(tiny_whisper))
    audio = [np.zeros(8000, dtype=np.float32)]
    model.save(tmp_path / "copy")
    again = load_model(str(tmp_path / "copy"))
    assert again.transcribe(again.collate(audio)) == model.transcribe(model.collate(audio))


def test_beam_search_batched_equals_one_by_one(tiny_whisper):
    model = load_model(str(tiny_whisper))
    rng = np.random.default_rng(1)
    audios = [rng.standard_normal(8000 * (i + 1)).astype(np.float32) * 0.1 for i in range(3)]
    batch = model.collate(audios)
    together = model.transcribe(batch, num_beams=3)
    alone = [model.transcribe(model.collate([a]), num_beams=3)[0] for a in audios]
    assert together == alone and len(together) == 3


def test_multilingual_whisper_is_told_each_utterances_language(tmp_path):
    """Training labels and decoding prompts carry the manifest's ``lang`` per utterance, not one for all."""
    from helpers import build_tiny_whisper, spoken

    from speechtl.data.manifest import ManifestError

    model = load_model(str(build_tiny_whisper(tmp_path / "m", languages=("fr", "de"))))
    assert model.multilingual
    lang = {c: model.tokenizer.convert_tokens_to_ids(f"<|{c}|>") for c in ("en", "fr", "de")}
    audios = [spoken("the cat sat"), spoken("a dog ran")]
    batch = model.collate(audios, ["the cat sat", "a dog ran"], langs=["fr", "en-NG"])
    assert batch["decoder_input_ids"][:, 1].tolist() == [lang["fr"], lang["en"]]
    assert model.collate(audios, ["x", "y"])["decoder_input_ids"][:, 1].tolist() == [lang["en"]] * 2
    asked = []
    generate = model.module.generate

    def spy(*args, **kwargs):
        asked.append(kwargs.get("language"))
        return generate(*args, **kwargs)

    model.module.generate = spy
    mixed = model.transcribe(model.collate(audios, langs=["de", "fr"]), max_new_tokens=5)
    assert asked == [["de", "fr"]]
    one_by_one = []
    for audio, code in zip(audios, ["de", "fr"], strict=True):
        model.language = code
        one_by_one += model.transcribe(model.collate([audio]), max_new_tokens=5)
    assert mixed == one_by_one
    with pytest.raises(ManifestError, match="language 'xx' is not one of this Whisper model's 3 languages"):
        model.collate(audios, langs=["en", "xx"])


def test_suppression_is_transformers_own_processors(tiny_whisper):
    """speechtl's Suppression, in place of transformers' two processors: the same scores, step by step, and the
    same transcripts from generate, greedy and beam, with suppressions that change what the model writes."""
    from transformers.generation.logits_process import (
        SuppressTokensAtBeginLogitsProcessor,
        SuppressTokensLogitsProcessor,
    )

    from speechtl.models.whisper import Suppression

    model = load_model(str(tiny_whisper))
    gen = model.module.generation_config
    vocab = model.module.config.vocab_size
    scores, begin = torch.randn(3, vocab), len(model.prefix_ids())
    ours = Suppression(vocab, [5, 7], [9, 5])
    theirs = [SuppressTokensAtBeginLogitsProcessor([9, 5], begin), SuppressTokensLogitsProcessor([5, 7])]
    for length in (begin, begin + 1, begin):  # the first position is the first call's, whenever it comes again
        expected = scores
        for p in theirs:
            expected = p(torch.zeros(3, length, dtype=torch.long), expected)
        assert torch.equal(ours(torch.zeros(3, length, dtype=torch.long), scores), expected)

    rng = np.random.default_rng(2)
    batch = model.collate([rng.standard_normal(8000 * (i + 1)).astype(np.float32) * 0.1 for i in range(3)])
    feats = batch["input_features"]
    gen.suppress_tokens, gen.begin_suppress_tokens = [], []
    free = model.module.generate(feats, do_sample=False, max_new_tokens=12)
    written = [t for t in free[:, begin:].flatten().tolist() if t != gen.eos_token_id]
    gen.suppress_tokens = [max(set(written), key=written.count)]  # the model's favourite token
    gen.begin_suppress_tokens = [gen.eos_token_id, free[0, begin].item()]  # and utterance 0's first
    for beams in (3, 1):
        texts = model._decode(batch, num_beams=beams, max_new_tokens=12)[0]
        reference = model.module.generate(feats, num_beams=beams, do_sample=False, max_new_tokens=12)
        assert texts == [t.strip() for t in model.tokenizer.batch_decode(reference, skip_special_tokens=True)]
        assert gen.suppress_tokens[0] not in reference.flatten().tolist()
    assert not torch.equal(reference, free) and all(texts)  # greedy: the suppressions changed what it wrote


def test_a_token_budget_does_not_warn_at_every_batch(tiny_whisper):
    """Whisper's generation config sets max_length, so transformers warned at every budgeted generate that both
    were set; speechtl drops that one message and nothing else of that logger."""
    import logging

    model = load_model(str(tiny_whisper))
    batch = model.collate([np.zeros(8000, dtype=np.float32)])
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    gen_log = logging.getLogger("transformers.generation.utils")
    gen_log.addHandler(handler)
    try:
        model.transcribe(batch, max_new_tokens=3)
        gen_log.warning("Both `max_new_tokens` (=3) and `max_length`(=448) seem to have been set. x")
        gen_log.warning("another warning")
    finally:
        gen_log.removeHandler(handler)
    messages = [r.getMessage() for r in records]  # (transformers may warn once of other things on a first call)
    assert "another warning" in messages and not any("max_new_tokens" in m for m in messages)
