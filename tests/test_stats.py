"""The statistics against cases whose answer is known: identical systems, uniform gains, seeds, jiwer."""

import random

import jiwer
import numpy as np
import pytest
from fabricate_eval import hypotheses, make_utterances

from speechtl.evaluate.evaldir import score_hypotheses
from speechtl.evaluate.stats import (
    BlockCounts,
    BootstrapConfig,
    bootstrap_rate,
    forgetting_score,
    group_blocks,
    paired_bootstrap,
    resampled_sums,
    resampling_blocks,
    word_blocks,
)

CFG = BootstrapConfig(n_boot=2000, seed=7)


def blocks(errors, ref, unit="speaker"):
    return BlockCounts([f"s{i:02d}" for i in range(len(errors))], np.array(errors), np.array(ref), unit)


def test_identical_systems_give_one_half_and_an_interval_around_zero():
    rng = np.random.default_rng(0)
    ref = rng.integers(50, 200, size=30)
    b = blocks(rng.binomial(ref, 0.2), ref)
    r = paired_bootstrap(b, b, CFG)
    assert r.p_better == 0.5
    assert r.abs_change.low <= 0 <= r.abs_change.high
    assert r.before.low < r.before.value < r.before.high


def test_system_better_on_every_speaker_gives_probability_near_one():
    rng = np.random.default_rng(1)
    ref = rng.integers(50, 200, size=12)
    err_b = rng.binomial(ref, 0.3)
    err_a = np.maximum(err_b - rng.integers(1, 10, size=12), 0)
    assert (err_a < err_b).all()
    r = paired_bootstrap(blocks(err_b, ref), blocks(err_a, ref), CFG)
    assert r.p_better == 1.0
    assert r.abs_change.high < 0 and r.rel_change.high < 0
    worse = paired_bootstrap(blocks(err_a, ref), blocks(err_b, ref), CFG)
    assert worse.p_better == 0.0 and worse.abs_change.low > 0


def test_mixed_small_difference_is_uncertain():
    """Half the speakers better, half worse by the same amount: P near 0.5 and the interval spans 0."""
    ref = np.full(20, 100)
    err_b = np.full(20, 20)
    err_a = err_b + np.array([3, -3] * 10)
    r = paired_bootstrap(blocks(err_b, ref), blocks(err_a, ref), CFG)
    assert 0.35 < r.p_better < 0.65
    assert r.abs_change.low < 0 < r.abs_change.high


def test_same_seed_same_figures_other_seed_other_figures():
    rng = np.random.default_rng(2)
    ref = rng.integers(20, 80, size=15)
    b, a = blocks(rng.binomial(ref, 0.3), ref), blocks(rng.binomial(ref, 0.25), ref)
    one = paired_bootstrap(b, a, BootstrapConfig(500, seed=3)).to_dict()
    two = paired_bootstrap(b, a, BootstrapConfig(500, seed=3)).to_dict()
    other = paired_bootstrap(b, a, BootstrapConfig(500, seed=4)).to_dict()
    assert one == two
    assert one["before"]["low"] != other["before"]["low"] or one["p_after_better"] != other["p_after_better"]
    cfg = BootstrapConfig(500, seed=3)
    assert cfg.derive("test_us", "wer") == cfg.derive("test_us", "wer")
    assert cfg.derive("test_us", "wer").seed != cfg.derive("test_ca", "wer").seed


def test_resampling_two_blocks_gives_the_three_possible_rates():
    """Blocks at 10% and 30% WER (equal size): replicates are 10%, 20% or 30% with prob 1/4, 1/2, 1/4."""
    err, ref = resampled_sums([np.array([1, 3]), np.array([10, 10])], 4000, seed=0)
    rates = err / ref
    assert set(np.round(rates, 6)) == {0.1, 0.2, 0.3}
    assert np.mean(rates == 0.2) == pytest.approx(0.5, abs=0.03)
    est = bootstrap_rate(blocks([1, 3], [10, 10]), BootstrapConfig(4000, 0))
    assert (est.value, est.low, est.high) == pytest.approx((0.2, 0.1, 0.3))


def test_speaker_blocks_are_wider_than_utterance_blocks_when_speakers_differ():
    """Utterances of a speaker share its error rate: resampling them as independent understates uncertainty."""
    speakers = {f"spk{i}": "x" for i in range(12)}
    utts = make_utterances(speakers, per_speaker=20, seed=3)
    rates = {s: 0.05 + 0.05 * i for i, s in enumerate(speakers)}
    rows, _ = score_hypotheses(utts, hypotheses(utts, rates, seed=4))
    by_spk = bootstrap_rate(word_blocks(rows, "speaker"), CFG)
    by_utt = bootstrap_rate(word_blocks(rows, None), CFG)
    assert by_spk.value == by_utt.value
    assert (by_spk.high - by_spk.low) > 1.5 * (by_utt.high - by_utt.low)


def test_block_rates_match_jiwer_on_the_same_normalised_text():
    speakers = {f"spk{i}": "x" for i in range(6)}
    utts = make_utterances(speakers, per_speaker=10, seed=5)
    rows, scores = score_hypotheses(utts, hypotheses(utts, {s: 0.25 for s in speakers}, seed=6))
    refs, hyps = [r["ref_norm"] for r in rows], [r["hyp_norm"] for r in rows]
    assert word_blocks(rows).rate == pytest.approx(jiwer.wer(refs, hyps))
    assert group_blocks(scores.to_dict()["per_speaker"], "cer").rate == pytest.approx(jiwer.cer(refs, hyps))
    r = paired_bootstrap(word_blocks(rows), word_blocks(rows), CFG)
    assert r.before.value == pytest.approx(jiwer.wer(refs, hyps))


def test_one_speaker_gives_no_interval_instead_of_a_false_certainty():
    r = paired_bootstrap(blocks([10], [50]), blocks([2], [50]), CFG)
    assert r.p_better is None and r.abs_change.low is None
    assert r.abs_change.value == pytest.approx(-0.16)
    assert bootstrap_rate(blocks([10], [50]), CFG).low is None


def test_different_speakers_or_references_refuse_to_pair():
    with pytest.raises(ValueError, match="different speakers"):
        paired_bootstrap(blocks([1, 2], [10, 10]), BlockCounts(["s00", "zz"], [1, 2], [10, 10]), CFG)
    with pytest.raises(ValueError, match="reference lengths differ"):
        paired_bootstrap(blocks([1, 2], [10, 10]), blocks([1, 2], [10, 11]), CFG)


def test_forgetting_score_formula_on_known_numbers():
    # target 50% -> 25% (gain 0.5); source 20% -> 25% (damage 0.25); tolerance 0.05, weight 1 -> 0.5 - 0.2
    tb, ta = blocks([25, 25], [50, 50]), blocks([12, 13], [50, 50])
    sb, sa = blocks([10, 10], [50, 50]), blocks([12, 13], [50, 50])
    fs = forgetting_score({"t": (tb, ta)}, {"s": (sb, sa)}, CFG, weight=1.0, tolerance=0.05)
    assert fs.gain.value == pytest.approx(0.5)
    assert fs.damage.value == pytest.approx(0.25)
    assert fs.score.value == pytest.approx(0.3)
    assert fs.score.low <= fs.score.value <= fs.score.high
    heavy = forgetting_score({"t": (tb, ta)}, {"s": (sb, sa)}, CFG, weight=3.0, tolerance=0.05)
    assert heavy.score.value == pytest.approx(0.5 - 3 * 0.2)
    # damage within tolerance costs nothing; no source set: the score is the gain
    assert forgetting_score({"t": (tb, ta)}, {"s": (sb, sb)}, CFG).score.value == pytest.approx(0.5)
    assert forgetting_score({"t": (tb, ta)}, {}, CFG).score.value == pytest.approx(0.5)
    # the worst source set counts
    s2 = blocks([10, 10], [50, 50]), blocks([20, 20], [50, 50])
    both = forgetting_score({"t": (tb, ta)}, {"s": (sb, sa), "g": s2}, CFG, weight=1.0, tolerance=0.05)
    assert both.damage.value == pytest.approx(1.0) and both.score.value == pytest.approx(0.5 - 0.95)
    with pytest.raises(ValueError, match="target"):
        forgetting_score({}, {"s": (sb, sa)}, CFG)


def test_hundred_thousand_utterances_in_seconds():
    """The bootstrap is vectorised: 100k utterances over 1,000 speakers, paired, well under the budget."""
    import time

    rng = random.Random(0)
    n_spk = 1000
    ref = np.array([rng.randint(500, 1500) for _ in range(n_spk)])
    b = blocks(np.array([rng.randint(0, r // 3) for r in ref]), ref)
    a = blocks(np.maximum(b.errors - 5, 0), ref)
    t0 = time.perf_counter()
    r = paired_bootstrap(b, a, BootstrapConfig(1000, 0))
    u = bootstrap_rate(blocks(np.ones(100_000, dtype=int), np.full(100_000, 10), "utterance"), BootstrapConfig(200))
    assert time.perf_counter() - t0 < 20
    assert r.p_better == 1.0 and u.value == pytest.approx(0.1)


def test_one_speaker_sets_resample_utterances_instead():
    rows = [{"id": f"u{i}", "speaker": "solo", "sub": i % 3, "del": 0, "ins": 0, "ref_words": 5} for i in range(7)]
    solo = resampling_blocks(rows)
    assert solo.unit == "utterance" and len(solo) == 7 and solo.rate == pytest.approx(6 / 35)
    rows[0]["speaker"] = "other"
    both = resampling_blocks(rows)
    assert both.unit == "speaker" and both.names == ["other", "solo"]
