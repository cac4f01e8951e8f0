"""Text normalisation for scoring.

WER is only comparable when reference and hypothesis go through the same normaliser, so every
scoring path calls :func:`normalizer_for` and keeps the raw text beside the normalised one.
English uses OpenAI's Whisper English normaliser (package whisper-normalizer, which ships its
spelling table, so it works offline); other languages use Whisper's basic normaliser.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, lru_cache

from speechtl.errors import UsageError

Normalizer = Callable[[str], str]

#: Typographic apostrophes, folded to ``'`` before normalising: "Don’t" (as corpora and word processors
#: write it) and "Don't" (as recognisers write it) are one word, which Whisper's normaliser alone would
#: score as two errors ("don t" against "do not").
APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
#: Bumped whenever what speechtl does around the normaliser changes (the apostrophe folding above…), so that
#: scores made before are recomputed (:func:`normalizer_version`).
REVISION = 1


def normalizer_version(kind: str = "whisper") -> str:
    """What a score's normalisation depends on: speechtl's own revision and the normaliser package's version.

    Recorded with every score; an evaluation scored under another version is scored again from its
    hypotheses (no decoding), since the same text normalised otherwise is another WER.
    """
    if kind != "whisper":
        return f"{kind}:{REVISION}"
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("whisper-normalizer")
    except PackageNotFoundError:
        package = "unknown"
    return f"whisper:{REVISION}:whisper-normalizer {package}"


@cache
def normalizer_for(lang: str = "en", kind: str = "whisper") -> Normalizer:
    """Return the scoring normaliser for ``lang``; ``kind="none"`` only folds case and whitespace."""
    if kind == "none":
        return lambda s: " ".join(s.lower().split())
    if kind != "whisper":
        raise UsageError(f"unknown normaliser '{kind}': use 'whisper' or 'none'")
    if lang.split("-")[0].lower() == "en":
        from whisper_normalizer.english import EnglishTextNormalizer

        norm = EnglishTextNormalizer()
    else:
        from whisper_normalizer.basic import BasicTextNormalizer

        norm = BasicTextNormalizer()
    # Cached: corpora repeat their prompts, and the English normaliser costs ~250 µs a call.
    return lru_cache(maxsize=1 << 17)(lambda s: " ".join(norm(s.translate(APOSTROPHES)).split()))
