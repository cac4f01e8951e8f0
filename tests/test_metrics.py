import random

import jiwer
import pytest

from speechtl.evaluate.metrics import alignment, char_counts, score_rows, word_counts

WORDS = "the a cat dog sat ran on in mat park big small".split()


def test_matches_jiwer_on_random_pairs():
    rng = random.Random(0)
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(1, 9))) for _ in range(200)]
    hyps = [" ".join(rng.choices(WORDS, k=rng.randint(0, 9))) for _ in range(200)]
    scores = score_rows([{"ref_norm": r, "hyp_norm": h, "speaker": str(i % 3), "accent": "x"}
                         for i, (r, h) in enumerate(zip(refs, hyps, strict=True))])
    out = jiwer.process_words(refs, hyps)
    assert (scores.wer.sub, scores.wer.dele, scores.wer.ins) == (out.substitutions, out.deletions, out.insertions)
    assert scores.wer.rate == pytest.approx(jiwer.wer(refs, hyps))
    assert scores.cer.rate == pytest.approx(jiwer.cer(refs, hyps))
    per_spk = scores.groups["speaker"]
    assert sum(g["wer"].errors for g in per_spk.values()) == scores.wer.errors
    assert set(per_spk) == {"0", "1", "2"}


def test_edge_cases():
    assert word_counts("a b", "").dele == 2
    assert word_counts("", "x y").ins == 2
    c = char_counts("ab", "ab c")
    assert (c.ins, c.hits) == (2, 2)


def test_alignment_ops():
    al = alignment("the cat sat on the mat", "the cat sit on mat")
    assert [op for op, _, _ in al] == ["C", "C", "S", "C", "D", "C"]
    assert al[2] == ("S", "sat", "sit") and al[4] == ("D", "the", None)
    assert alignment("a", "a b")[-1] == ("I", None, "b")
