"""Miniature copies of the real accent corpora, laid out like the downloads (file names, folders, hub
columns and parquet metadata), with a fraction of a second of tone per utterance.

Hub corpora are written the way ``huggingface-cli download`` leaves them (``data/<split>-0000….parquet``
or ``<config>/<split>-….parquet``) or, for AfriSpeech, as a ``save_to_disk`` folder. The parquet files
carry the ``huggingface`` schema metadata the Hub's files have, so ``datasets`` sees a real Audio column.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
SENTENCES = ["author of the danger trail", "not at this particular case tom", "for the twentieth time that evening",
             "the two men passed out into the night", "please call stella", "ask her to bring these things"]


def audio(seconds: float = 0.4, freq: float = 220.0, fmt: str = "WAV", sr: int = SR) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format=fmt)
    return buf.getvalue()


def write_audio(path: Path, seconds: float = 0.4, freq: float = 220.0, fmt: str = "WAV") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(audio(seconds, freq, fmt))
    return path


# --- local layouts -------------------------------------------------------------------------------------

L2ARCTIC_L1 = {"arabic": ["ABA", "SKA", "YBAA", "ZHAA"], "mandarin": ["BWC", "LXC", "NCC", "TXHC"],
               "hindi": ["ASI", "RRBI", "SVBI", "TNI"], "korean": ["HJK", "HKK", "YDCK", "YKWK"],
               "spanish": ["EBVS", "ERMS", "MBMPS", "NJS"], "vietnamese": ["HQTV", "PNV", "THV", "TLV"]}


def make_l2arctic(root: Path, l1s: tuple[str, ...] = ("hindi", "arabic"), per_speaker: int = 3) -> Path:
    """<SPK>/wav/arctic_a000N.wav + transcript/ + annotation/ (first utterance), and the suitcase corpus."""
    for l1 in l1s:
        for k, spk in enumerate(L2ARCTIC_L1[l1]):
            for i in range(1, per_speaker + 1):
                stem = f"arctic_a{i:04d}"
                write_audio(root / spk / "wav" / f"{stem}.wav", 0.3 + 0.05 * i, 150 + 20 * k + 5 * i)
                (root / spk / "transcript").mkdir(parents=True, exist_ok=True)
                (root / spk / "transcript" / f"{stem}.txt").write_text(SENTENCES[i % len(SENTENCES)] + " \n")
            (root / spk / "annotation").mkdir(parents=True, exist_ok=True)
            (root / spk / "annotation" / "arctic_a0001.TextGrid").write_text('File type = "ooTextFile"\n')
            if spk not in ("ASI", "SKA"):  # they did not record the suitcase story
                write_audio(root / "suitcase_corpus" / "wav" / f"{spk.lower()}.wav", 1.0, 300)
                (root / "suitcase_corpus" / "transcript").mkdir(parents=True, exist_ok=True)
                (root / "suitcase_corpus" / "transcript" / f"{spk.lower()}.txt").write_text(
                    "so there was a man with a suitcase")
    return root


VCTK_SPEAKERS = {"p225": ("23", "F", "English", "Southern  England"), "p234": ("22", "F", "Scottish", "West Dumfries"),
                 "p237": ("22", "M", "Scottish", "Fife"), "p241": ("21", "M", "Scottish", "Perth"),
                 "p249": ("22", "F", "Scottish", "Aberdeen"), "p245": ("25", "M", "Irish", "Dublin"),
                 "p315": ("18", "M", "American", "Connecticut")}


def make_vctk(root: Path, per_speaker: int = 2) -> Path:
    """VCTK-Corpus-0.92: speaker-info.txt, txt/<spk>/<spk>_NNN.txt, wav48_silence_trimmed/<spk>/…_mic{1,2}.flac."""
    lines = ["ID  AGE  GENDER  ACCENTS  REGION COMMENTS "]
    lines += [f"{s}  {a}  {g}    {acc}  {reg}" for s, (a, g, acc, reg) in VCTK_SPEAKERS.items()]
    root.mkdir(parents=True, exist_ok=True)
    (root / "speaker-info.txt").write_text("\n".join(lines) + "\n")
    for k, spk in enumerate(VCTK_SPEAKERS):
        for i in range(1, per_speaker + 1):
            for mic in ("mic1", "mic2"):
                write_audio(root / "wav48_silence_trimmed" / spk / f"{spk}_{i:03d}_{mic}.flac", 0.4, 200 + 10 * k,
                            "FLAC")
            if spk != "p315":  # the release has no text for p315
                (root / "txt" / spk).mkdir(parents=True, exist_ok=True)
                (root / "txt" / spk / f"{spk}_{i:03d}.txt").write_text(SENTENCES[i].capitalize() + ".\n")
    return root


CV_ROWS = [  # client_id, accents
    ("c1" * 32, "Scottish English"), ("c2" * 32, "Scottish English"), ("c3" * 32, "Scottish English"),
    ("c4" * 32, "India and South Asia (India, Pakistan, Sri Lanka)"),
    ("c5" * 32, "India and South Asia (India, Pakistan, Sri Lanka)|Scottish English"),
    ("c6" * 32, "United States English"), ("c7" * 32, ""),
]
CV_HEADER = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
             "gender", "accents", "variant", "locale", "segment"]


def make_commonvoice(root: Path, per_speaker: int = 2) -> Path:
    """cv-corpus-*/en: validated.tsv (tab-separated, quotes as text), clips/*.mp3, clip_durations.tsv."""
    rows, durations = ["\t".join(CV_HEADER)], ["clip\tduration[ms]"]
    n = 0
    for client, accents in CV_ROWS:
        for i in range(per_speaker):
            n += 1
            clip = f"common_voice_en_{1000 + n}.mp3"
            write_audio(root / "clips" / clip, 0.5, 200 + 10 * n, "MP3")
            rows.append("\t".join([client, clip, f"s{n}", f'"{SENTENCES[i]}" she said', "", "2", "0", "twenties",
                                   "male_masculine", accents, "", "en", ""]))
            if n % 2:
                durations.append(f"{clip}\t500")
    (root / "validated.tsv").write_text("\n".join(rows) + "\n")
    (root / "clip_durations.tsv").write_text("\n".join(durations) + "\n")
    return root


# --- hub copies ---------------------------------------------------------------------------------------

def write_parquet(path: Path, features: dict, rows: list[dict]) -> Path:
    """A parquet file as the Hub stores it: Arrow schema plus the ``huggingface`` features metadata."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=datasets.Features(features).arrow_schema), path)
    return path


def _value(kind: str = "string"):
    import datasets

    return datasets.Value(kind)


def _audio_feature(sr: int = SR):
    import datasets

    return datasets.Audio(sampling_rate=sr)


def make_english_dialects(root: Path, configs: tuple[str, ...] = ("scottish_female", "scottish_male", "irish_male",
                                                                  "welsh_female", "welsh_male"),
                          lines: int = 4) -> Path:
    """``<config>/train-00000-of-00001-<hash>.parquet`` with line_id, audio, text, speaker_id (int64)."""
    feats = {"line_id": _value(), "audio": _audio_feature(48000), "text": _value(), "speaker_id": _value("int64")}
    for c, config in enumerate(configs):
        speakers = [3000 + 10 * c + k for k in range(3 if config == "irish_male" else 2)]
        code = config[:2] + config.split("_")[1][0]  # scottish_female -> scf, as in the OpenSLR file names
        rows = [{"line_id": f"EN{i:04d}", "audio": {"bytes": audio(0.4, 180 + spk % 50, "FLAC"),
                                                    "path": f"{code}_{spk:05d}_{i:08d}.wav"},
                 "text": SENTENCES[i], "speaker_id": spk} for spk in speakers for i in range(lines)]
        write_parquet(root / config / f"train-00000-of-00001-{c:04x}beef.parquet", feats, rows)
    return root


def make_edacc(root: Path) -> Path:
    """``data/validation-…parquet`` and ``data/test-…parquet``: speaker, text, accent, raw_accent, gender, l1, audio."""
    feats = {"speaker": _value(), "text": _value(), "accent": _value(), "raw_accent": _value(), "gender": _value(),
             "l1": _value(), "audio": _audio_feature()}
    ng, sc, ind = "Nigerian English", "Scottish English", "Indian English"
    convs = {"validation": [("C01", ng, sc), ("C02", ng, ind), ("C03", sc, ind), ("C04", ind, ng), ("C05", sc, ng)],
             "test": [("C06", ng, ind), ("C07", sc, sc)]}
    for split, items in convs.items():
        rows = []
        for conv, acc_a, acc_b in items:
            for side, acc in (("A", acc_a), ("B", acc_b)):
                for i in range(2):
                    rows.append({"speaker": f"EDACC-{conv}-{side}", "text": f"{SENTENCES[i]} <laugh>",
                                 "accent": acc, "raw_accent": acc.lower(), "gender": "female", "l1": acc.split()[0],
                                 "audio": {"bytes": audio(0.4, 250), "path": f"EDACC-{conv}-{side}-{i}.wav"}})
        rows.append({**rows[0], "text": "IGNORE_TIME_SEGMENT_IN_SCORING"})
        write_parquet(root / "data" / f"{split}-00000-of-00001-0123abcd.parquet", feats, rows)
    return root


SVARAH_PROFILES = [("Hindi", "Uttar Pradesh", "Lucknow", "Male", "18-30"), ("Tamil", "Tamil Nadu", "Chennai", "Female",
                                                                            "30-45"),
                   ("Bodo", "Assam", "Kokrajhar", "Male", "45-60")]


def make_svarah(root: Path, per_speaker: int = 2) -> Path:
    """``data/test-00000-of-00003-….parquet`` with audio_filepath (Audio) and the speaker metadata columns."""
    feats = {"audio_filepath": _audio_feature(), "duration": _value("float64"), "text": _value(),
             "gender": _value(), "age-group": _value(), "primary_language": _value(), "native_place_state": _value(),
             "native_place_district": _value(), "highest_qualification": _value(), "job_category": _value(),
             "occupation_domain": _value()}
    rows = []
    for k, (lang, state, district, gender, age) in enumerate(SVARAH_PROFILES):
        for i in range(per_speaker):
            rows.append({"audio_filepath": {"bytes": audio(0.5, 300 + k), "path": f"2814749768{k}_chunk_{i}.wav"},
                         "duration": 0.5, "text": SENTENCES[i], "gender": gender, "age-group": age,
                         "primary_language": lang, "native_place_state": state, "native_place_district": district,
                         "highest_qualification": "Graduate", "job_category": "Full Time",
                         "occupation_domain": "Education and Research"})
    write_parquet(root / "data" / "test-00000-of-00001-5f3e.parquet", feats, rows)
    return root


def make_speechocean762(root: Path, speakers: int = 4) -> Path:
    """``data/train-…parquet``, ``data/test-…parquet``: scores, words, text, speaker, gender, age, audio."""
    word = {"accuracy": _value("int64"), "phones": [_value()], "stress": _value("int64"), "text": _value(),
            "total": _value("int64")}
    feats = {"accuracy": _value("int64"), "completeness": _value("float64"), "fluency": _value("int64"),
             "prosodic": _value("int64"), "text": _value(), "total": _value("int64"), "words": [word],
             "speaker": _value(), "gender": _value(), "age": _value("int64"), "audio": _audio_feature()}
    for split, first in (("train", 1), ("test", 100)):
        rows = [{"accuracy": 8, "completeness": 10.0, "fluency": 9, "prosodic": 9, "text": "MARK IS GOING TO SEE",
                 "total": 8, "words": [{"accuracy": 10, "phones": ["M", "AA0", "R", "K"], "stress": 10,
                                        "text": "MARK", "total": 10}],
                 "speaker": f"{first + s:04d}", "gender": "m", "age": 9 + s,
                 "audio": {"bytes": audio(0.4, 260 + s), "path": f"{first + s:04d}00{i}{s}.wav"}}
                for s in range(speakers) for i in range(2)]
        write_parquet(root / "data" / f"{split}-00000-of-00001-aa{first}.parquet", feats, rows)
    return root


AFRISPEECH = [  # speaker, accent, country, domain, split
    ("spk_ng1", "yoruba", "NG", "clinical", "train"), ("spk_ng2", "yoruba", "NG", "general", "train"),
    ("spk_ng3", "igbo", "NG", "clinical", "train"), ("spk_ng4", "hausa", "NG", "general", "dev"),
    ("spk_ng5", "yoruba", "NG", "clinical", "test"), ("spk_ng1", "yoruba", "NG", "clinical", "test"),
    ("spk_gh1", "twi", "GH", "general", "train"), ("spk_ke1", "swahili", "KE", "clinical", "test"),
]


def make_afrispeech(root: Path) -> Path:
    """A ``DatasetDict.save_to_disk`` folder (train/dev/test) with the hub's columns. spk_ng1 is in train and
    test, as real corpora sometimes are; one transcript is empty."""
    import datasets
    import pyarrow as pa

    feats = datasets.Features({"speaker_id": _value(), "path": _value(), "audio_id": _value(),
                               "audio": _audio_feature(44100), "transcript": _value(), "age_group": _value(),
                               "gender": _value(), "accent": _value(), "domain": _value(), "country": _value(),
                               "duration": _value("float32")})
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for k, (spk, accent, country, domain, split) in enumerate(AFRISPEECH):
        for i in range(2):
            aid = f"{k:02d}{i}a9f/{spk}_{k}{i}.wav"
            splits[split].append({"speaker_id": spk, "path": aid, "audio_id": aid,
                                  "audio": {"bytes": audio(0.45, 220 + 7 * k), "path": aid.split("/")[1]},
                                  "transcript": "" if (k, i) == (2, 1) else f"the patient {SENTENCES[i]}",
                                  "age_group": "26-40", "gender": "Female", "accent": accent, "domain": domain,
                                  "country": country, "duration": 0.45})
    dd = datasets.DatasetDict({s: datasets.Dataset(pa.Table.from_pylist(r, schema=feats.arrow_schema))
                               for s, r in splits.items()})
    dd.save_to_disk(str(root))
    return root


# --- checks shared by the corpus and recipe tests -----------------------------------------------------

def read_sets(manifests: dict[str, Path]) -> dict:
    """Every manifest read back through the validator the later stages use (audio must exist)."""
    from speechtl.data.manifest import read_manifest

    return {name: read_manifest(path) for name, path in manifests.items()}


def assert_speaker_disjoint(sets: dict, names: tuple[str, ...] | None = None) -> None:
    names = names or tuple(sets)
    spk = {n: {u.speaker for u in sets[n]} for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not spk[a] & spk[b], f"{a} and {b} share speakers {spk[a] & spk[b]}"


def tree(root: Path, skip: Path | None = None) -> dict[str, int]:
    """{relative path: mtime_ns} of every file and folder under root (but not under ``skip``)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if skip is None or not p.is_relative_to(skip)}
