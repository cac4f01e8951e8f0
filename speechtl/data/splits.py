"""Speaker-disjoint, accent-stratified, seeded splits, the filters before them, and their summary.

A WER measured on speakers the model was trained on says little about an accent, so every split
speechtl makes is speaker-disjoint (or coarser: a *group*, such as the two speakers of one recorded
conversation, never straddles splits). Each accent is split on its own, so a rare accent still
reaches every split when it has speakers enough, and the seed is mixed with the accent's name, so
adding one accent never reshuffles the others.

Example::

    >>> sets = split_by_speaker(utts, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=1)
    >>> check_speaker_disjoint(sets, where="data/l2arctic")
    >>> write_summary("data/l2arctic", sets)
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechtl.data.manifest import ManifestError, Utterance
from speechtl.errors import UsageError
from speechtl.io import atomic_write, write_json

LOG = logging.getLogger("speechtl.data.splits")

DEFAULT_FRACTIONS = {"train": 0.8, "dev": 0.1, "test": 0.1}


def parse_fractions(text: str, names: tuple[str, ...] = ("train", "dev", "test")) -> dict[str, float]:
    """Read ``"0.8,0.1,0.1"`` (one number per split name) as split fractions that sum to 1."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError as e:
        raise UsageError(f"split fractions '{text}' must be {len(names)} numbers, e.g. 0.8,0.1,0.1") from e
    if len(values) != len(names) or any(v < 0 or not math.isfinite(v) for v in values):
        raise UsageError(f"split fractions '{text}' must be {len(names)} numbers >= 0 for {', '.join(names)}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise UsageError(f"split fractions '{text}' must sum to 1 (they sum to {sum(values):g})")
    return dict(zip(names, values, strict=True))


@dataclass
class FilterReport:
    """What :func:`filter_utterances` dropped and why; written into the summary, never silent."""

    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def filter_utterances(utts: Iterable[Utterance], min_duration: float = 0.0, max_duration: float | None = 30.0,
                      report: FilterReport | None = None, what: str = "utterances"
                      ) -> tuple[list[Utterance], FilterReport]:
    """Drop empty transcripts and utterances outside [min_duration, max_duration], counting each reason.

    Whisper sees 30 s at most, so longer utterances would be cut mid-word in training and scoring.
    """
    mine = FilterReport()
    kept = []
    for u in utts:
        if not u.text.strip():
            mine.add("empty_text")
        elif u.duration <= 0 or u.duration < min_duration:
            mine.add(f"shorter_than_{min_duration:g}s")
        elif max_duration is not None and u.duration > max_duration:
            mine.add(f"longer_than_{max_duration:g}s")
        else:
            kept.append(u)
    report = report or FilterReport()
    report.kept += len(kept)
    for why, n in mine.dropped.items():
        report.dropped[why] = report.dropped.get(why, 0) + n
    if mine.dropped:
        LOG.warning("%s: kept %d, dropped %s", what, len(kept),
                    ", ".join(f"{n} ({why})" for why, n in sorted(mine.dropped.items())))
    else:
        LOG.info("%s: kept all %d", what, len(kept))
    return kept, report


def _majority_accent(utts: list[Utterance]) -> str:
    counts = Counter(u.accent for u in utts)
    return min(counts, key=lambda a: (-counts[a], a))


def _assign_groups(groups: list[tuple[str, float]], fractions: Mapping[str, float], rng: random.Random,
                   overall: dict[str, float] | None = None) -> dict[str, str]:
    """Give each (group, seconds) to a split: the one furthest below its share of the hours.

    With at least one group per split, shares are those of these groups alone (the stratum is split
    on its own) and no split is left empty. With fewer, each group goes where ``overall`` (the seconds
    already dealt across strata, updated here) lags its share most, so many small strata still add up
    to the right proportions instead of all landing in the first split.
    """
    order = sorted(groups)
    rng.shuffle(order)
    wanted = [name for name, f in fractions.items() if f > 0]
    overall = overall if overall is not None else dict.fromkeys(wanted, 0.0)
    few = len(order) < len(wanted)
    total = sum(sec for _, sec in order)
    have = dict.fromkeys(wanted, 0.0)
    out = {}
    for i, (group, sec) in enumerate(order):
        if few:
            base = sum(overall.values()) + sec
            split = max(wanted, key=lambda s: (fractions[s] * base - overall[s], fractions[s]))
        else:
            empty = [s for s in wanted if have[s] == 0 and s not in out.values()]
            split = empty[0] if empty and len(order) - i <= len(empty) else \
                max(wanted, key=lambda s: (fractions[s] * total - have[s], fractions[s]))
        out[group] = split
        have[split] += sec
        overall[split] = overall.get(split, 0.0) + sec
    return out


def deal(strata: Mapping[str, list[tuple[str, float]]], fractions: Mapping[str, float], seed: int
         ) -> dict[str, str]:
    """{group: split} for groups given as {stratum: [(group, seconds)]}: each stratum split on its own when
    it can be, small strata (dealt last) where the hours lag, and no split left empty if groups allow."""
    overall = {name: 0.0 for name, f in fractions.items() if f > 0}
    out: dict[str, str] = {}
    for stratum in sorted(strata, key=lambda a: (-len(strata[a]), a)):
        out.update(_assign_groups(strata[stratum], fractions, random.Random(f"{seed}:{stratum}"), overall))
    sizes = {g: sec for groups in strata.values() for g, sec in groups}
    for split in overall:
        counts = Counter(out.values())
        donors = [s for s in overall if counts[s] >= 2]
        if counts[split] or not donors:
            continue
        total = sum(sizes.values())
        have = {s: sum(sizes[g] for g, t in out.items() if t == s) for s in overall}
        donor = max(donors, key=lambda s: have[s] - fractions[s] * total)
        out[min((g for g, t in out.items() if t == donor), key=lambda g: (sizes[g], g))] = split
    return out


def source_speaker(utt: Utterance) -> str:
    """The speaker who spoke it: a speed-perturbed copy's pseudo-speaker (``sp0.9-spk``) is still ``spk``."""
    return str(utt.meta.get("source_speaker", utt.speaker))


def split_by_speaker(utts: Iterable[Utterance], fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 1,
                     group_of: Callable[[Utterance], str] | None = None) -> dict[str, list[Utterance]]:
    """Split utterances so no speaker (or group) is in two splits, accent by accent, by hours.

    Within an accent with at least as many groups as splits, the groups are shuffled with ``seed`` and
    dealt, one at a time, to the split furthest below its share of that accent's duration; such an
    accent's split does not change when other accents are added. Accents with fewer groups than splits
    (dealt last) fill whichever splits lag most overall. The result is a pure function of its inputs.
    """
    group_of = group_of or source_speaker
    by_group: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        by_group[group_of(u)].append(u)
    by_accent: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for g, members in by_group.items():
        by_accent[_majority_accent(members)].append((g, sum(u.duration for u in members)))
    assignment = deal(by_accent, fractions, seed)
    sets: dict[str, list[Utterance]] = {name: [] for name in fractions}
    for g, split in assignment.items():
        sets[split].extend(by_group[g])
    for members in sets.values():
        members.sort(key=lambda u: (u.accent, u.speaker, u.id))
    return sets


def make_text_disjoint(sets: dict[str, list[Utterance]], key_of: Callable[[Utterance], str],
                       fractions: Mapping[str, float], seed: int = 1) -> dict[str, int]:
    """Deal the prompts out to the sets too, and keep in each set only the utterances of its own prompts.

    In corpora where every speaker reads the same prompts (L2-ARCTIC, the British Isles dialects), a
    speaker-disjoint test set still holds the very sentences the decoder was trained on, and its WER
    measures memory, not accent. Returns the utterances dropped per set (also logged).
    """
    keys = sorted({key_of(u) for utts in sets.values() for u in utts})
    dealt = deal({"text": [(k, 1.0) for k in keys]}, {n: fractions.get(n, 0.0) for n in sets}, seed)
    dropped = {}
    for name, utts in sets.items():
        kept = [u for u in utts if dealt[key_of(u)] == name]
        if len(kept) != len(utts):
            dropped[name] = len(utts) - len(kept)
            sets[name] = kept
    LOG.info("text-disjoint sets: %d prompts dealt out; utterances of other sets' prompts dropped: %s", len(keys),
             dropped or "none")
    return dropped


def speaker_overlaps(sets: Mapping[str, Iterable[Utterance]]) -> list[str]:
    """``"a & b: [speakers]"`` for every pair of sets that share a speaker (a pseudo-speaker counts as its source)."""
    speakers = {name: {source_speaker(u) for u in utts} for name, utts in sets.items()}
    names = sorted(speakers)
    return [f"{a} & {b}: {sorted(speakers[a] & speakers[b])[:10]}" for i, a in enumerate(names)
            for b in names[i + 1:] if speakers[a] & speakers[b]]


def check_speaker_disjoint(sets: Mapping[str, Iterable[Utterance]], where: str) -> None:
    overlaps = speaker_overlaps(sets)
    if overlaps:
        raise ManifestError(f"{where}: sets share speakers, so they are not speaker-disjoint: {'; '.join(overlaps)}")


def drop_shared_speakers(sets: dict[str, list[Utterance]], keep_first: tuple[str, ...]) -> dict[str, int]:
    """Make official splits speaker-disjoint by removing a shared speaker from all but one set.

    ``keep_first`` orders the sets by priority (e.g. ``("test", "dev", "train")``: an official test set
    stays whole, so results stay comparable with published ones). Returns utterances dropped per set.
    """
    seen: set[str] = set()
    dropped: dict[str, int] = {}
    for name in keep_first:
        utts = sets.get(name, [])
        kept = [u for u in utts if u.speaker not in seen]
        if len(kept) != len(utts):
            dropped[name] = len(utts) - len(kept)
            LOG.warning("%s: dropped %d utterances of speakers already in %s, to keep the splits "
                        "speaker-disjoint", name, dropped[name], ", ".join(keep_first[:keep_first.index(name)]))
            sets[name] = kept
        seen |= {u.speaker for u in kept}
    return dropped


def summarize(sets: Mapping[str, Iterable[Utterance]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{split: {accent | "all": {hours, utterances, speakers}}}: what the summary file holds."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, utts in sets.items():
        rows: dict[str, list[Utterance]] = defaultdict(list)
        for u in utts:
            rows[u.accent].append(u)
            rows["all"].append(u)
        out[name] = {acc: {"hours": round(sum(u.duration for u in us) / 3600, 4), "utterances": len(us),
                           "speakers": len({u.speaker for u in us})} for acc, us in sorted(rows.items())}
    return out


def write_summary(stem: str | os.PathLike, sets: Mapping[str, Iterable[Utterance]],
                  extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``<stem>.json`` (with ``extra``: filters, seed, source) and a readable ``<stem>.tsv``.

    ``stem`` is e.g. ``data/summary``; a folder is taken to mean ``<folder>/summary``.
    """
    stem = Path(stem)
    if stem.is_dir():
        stem = stem / "summary"
    table = summarize(sets)
    write_json(stem.with_name(stem.name + ".json"), {"sets": table, **(extra or {})})
    with atomic_write(stem.with_name(stem.name + ".tsv")) as f:
        f.write("set\taccent\thours\tutterances\tspeakers\n")
        for name, accents in table.items():
            for acc, s in accents.items():
                f.write(f"{name}\t{acc}\t{s['hours']:.3f}\t{s['utterances']}\t{s['speakers']}\n")
    return stem.with_name(stem.name + ".json")
