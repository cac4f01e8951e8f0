"""One module per corpus, each with a ``prepare_<corpus>()`` that writes validated manifests.

Each corpus registers a :class:`Corpus` here: its command-line options and how to call its
``prepare_<corpus>()``. ``speechtl prepare <corpus>`` is built from this table, so adding a corpus
never touches the CLI.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Corpus:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    #: Called with the parsed arguments (``args.out`` is always there); returns {set name: manifest path}.
    prepare: Callable[[argparse.Namespace], dict[str, Path]]


def _espeak_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", required=True, help="YAML spec of speakers, sentence pools and sets")
    p.add_argument("--jobs", type=int, default=2, help="parallel synthesis jobs")


def _espeak_prepare(args: argparse.Namespace) -> dict[str, Path]:
    from speechtl.data.corpora.espeak import prepare_espeak

    return prepare_espeak(args.spec, args.out, jobs=args.jobs)


def _module_corpus(module: str, help: str) -> Corpus:
    """A corpus whose module defines ``add_arguments(parser)`` and ``from_args(args)``, imported when used."""

    def load():
        return importlib.import_module(f"speechtl.data.corpora.{module}")

    return Corpus(help, lambda p: load().add_arguments(p), lambda args: load().from_args(args))


CORPORA: dict[str, Corpus] = {
    "espeak": Corpus("a synthetic accented corpus spoken by espeak-ng (offline)", _espeak_args, _espeak_prepare),
    "l2arctic": _module_corpus("l2arctic", "L2-ARCTIC: Arabic, Mandarin, Hindi, Korean, Spanish, Vietnamese L1 "
                                           "English (local download)"),
    "afrispeech": _module_corpus("afrispeech", "AfriSpeech-200: 120 African accents, clinical and general domain"),
    "english_dialects": _module_corpus("english_dialects", "English dialects of the British Isles (OpenSLR 83)"),
    "vctk": _module_corpus("vctk", "CSTR VCTK 0.92: UK, Irish, American, … accents per speaker"),
    "edacc": _module_corpus("edacc", "EdAcc: conversational L1 and L2 Englishes (train/dev carved from dev)"),
    "svarah": _module_corpus("svarah", "Svarah: Indian English, 19 first languages (test only)"),
    "speechocean762": _module_corpus("speechocean762", "speechocean762: Mandarin-L1 English, adults and children"),
    "commonvoice": _module_corpus("commonvoice", "Common Voice English, filtered by self-reported accent"),
    "fabricated_noise": _module_corpus("fabricated_noise", "stand-in noise recordings and room impulse responses for "
                                                           "the noise/reverb augmentations (offline, seeded)"),
}
