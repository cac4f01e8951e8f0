"""One module per corpus, each with a ``prepare_<corpus>()`` that writes validated manifests.

Each corpus registers a :class:`Corpus` here: its command-line options and how to call its
``prepare_<corpus>()``. ``speechtl prepare <corpus>`` is built from this table, so adding a corpus
never touches the CLI.
"""

from __future__ import annotations

import argparse
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


CORPORA: dict[str, Corpus] = {
    "espeak": Corpus("a synthetic accented corpus spoken by espeak-ng (offline)", _espeak_args, _espeak_prepare),
}
