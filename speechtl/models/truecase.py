"""Training targets in the style a pretrained model writes: case and end punctuation restored.

Many accent corpora (speechocean762, LibriSpeech, most Kaldi corpora) are transcribed in capitals
without punctuation. Whisper writes sentence case with punctuation; fine-tuned on capitals, it
learns to write capitals, a form its language knowledge barely covers, and ordinary speech
suffers: on speechocean762, LoRA on the corpus as it is took VCTK p239 from 11.4% to 50.1% WER,
the same run on hand-made sentence case to 21.9% (and the accent gained more too). Scoring is not
affected either way: both sides go through the same normaliser.

Why not a truecasing model (e.g. a CRF or a BERT punctuator)? None ships offline, and the model
being adapted already knows how it writes each word: its byte-level BPE learnt ``" John"`` as one
early token and ``" john"`` late or not at all. A word is capitalised when its capitalised form is a
single token and its lower-case form is not, or is one at least :data:`PROPER_RATIO` times rarer (a
later merge rank). That gives names, places, languages, days and months, and keeps common nouns
that are also names (``park``, ``green``, ``house``) lower case; it errs on a few (``Hen``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: How much rarer (later in the BPE merge order) the lower-case form must be for a word to count as a name.
PROPER_RATIO = 3
#: A sentence opening with one of these, followed by a subject, is a question ("Is it", "Where do you").
QUESTION_OPENERS = frozenset(
    "what where when why how who whom whose which is are was were do does did can could would will shall should "
    "have has had may might must am".split())
_CONTRACTION_I = re.compile(r"^i('(m|ve|ll|d))?$")


def is_unstyled(text: str) -> bool:
    """All capitals (or all lower case) and no sentence punctuation: a transcript to restore."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    one_case = all(c.isupper() for c in letters) or all(c.islower() for c in letters)
    return one_case and not re.search(r"[.,?!;:]", text)


def is_name(word: str, vocab: Mapping[str, int], space: str = "\u0120") -> bool:
    """Whether the tokenizer ranks `` Word`` well ahead of `` word`` (see the module docstring)."""
    lower, upper = vocab.get(space + word.lower()), vocab.get(space + word.capitalize())
    if upper is None:
        return False
    return lower is None or lower > PROPER_RATIO * upper


def restore_case(text: str, vocab: Mapping[str, int]) -> str:
    """``"WHERE DID JOHN GO"`` -> ``"Where did John go?"``; text with case or punctuation is kept as it is.

    ``vocab`` is a byte-level BPE vocabulary (GPT-2 / Whisper: ``Ġ`` marks a leading space).
    """
    if not is_unstyled(text):
        return text
    words = text.lower().split()
    out = []
    for i, w in enumerate(words):
        if _CONTRACTION_I.match(w):
            w = "I" + w[1:]
        elif i == 0 or is_name(w, vocab):
            w = w[:1].upper() + w[1:]
        out.append(w)
    question = len(words) > 1 and words[0] in QUESTION_OPENERS and words[1] not in ("a", "an", "the", "to")
    return " ".join(out) + ("?" if question else ".")
