import json

import pytest
from helpers import tone, write_manifest_rows

from speechtl.data.kaldi import read_kaldi_dir, write_kaldi_dir
from speechtl.data.manifest import ManifestError, Utterance, parse_manifest, read_manifest, write_manifest
from speechtl.data.text import normalizer_for


def row(i, **kw):
    base = {"id": f"u{i}", "audio": f"u{i}.wav", "duration": 1.0, "text": "hello there", "speaker": "s1",
            "accent": "x"}
    base.update(kw)
    return base


def test_read_resolves_relative_audio_and_keeps_metadata(tmp_path):
    tone(tmp_path / "u0.wav")
    m = write_manifest_rows(tmp_path / "m.jsonl", [row(0, domain="clinical", offset=0.0, lang="en")])
    (u,) = read_manifest(m)
    assert u.audio == str(tmp_path / "u0.wav")
    assert u.meta == {"domain": "clinical"}
    write_manifest(tmp_path / "out.jsonl", [u], relative_to=tmp_path)
    back = json.loads((tmp_path / "out.jsonl").read_text())
    assert back["audio"] == "u0.wav" and back["domain"] == "clinical"


@pytest.mark.parametrize("bad, message", [
    (row(0, audio="missing.wav"), "field 'audio': file not found"),
    (row(0, duration="1.0"), "field 'duration' must be a number, got str"),
    (row(0, text="   "), "field 'text' is empty"),
    ({k: v for k, v in row(0).items() if k != "speaker"}, "field 'speaker' is missing"),
    (row(0, duration=-1), "'duration' must be a positive number"),
    (row(0, speaker=3), "field 'speaker' must be a string, got int"),
])
def test_errors_name_file_line_and_field(tmp_path, bad, message):
    tone(tmp_path / "u0.wav")
    tone(tmp_path / "u1.wav")
    m = write_manifest_rows(tmp_path / "m.jsonl", [row(1), bad])
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    assert f"{m}:2:" in str(e.value) and message in str(e.value)


def test_bad_json_non_utf8_and_duplicates(tmp_path):
    tone(tmp_path / "u0.wav")
    good = json.dumps(row(0))
    m = tmp_path / "m.jsonl"
    m.write_bytes(good.encode() + b"\n{not json\n" + '{"text": "caf\xe9"}'.encode("latin-1") + b"\n" + good.encode())
    utts, errors = parse_manifest(m)
    assert len(utts) == 1
    assert any(f"{m}:2: not valid JSON" in e for e in errors)
    assert any(f"{m}:3: not valid UTF-8" in e for e in errors)
    assert any(f"{m}:4: field 'id': duplicate id 'u0' (first on line 1)" in e for e in errors)


def test_missing_and_empty_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ManifestError, match="manifest is empty"):
        read_manifest(tmp_path / "empty.jsonl")


def test_kaldi_round_trip_with_segments(tmp_path):
    wav = tone(tmp_path / "rec.wav", seconds=3.0)
    utts = [Utterance(id="a-1", audio=str(wav), duration=1.0, text="one two", speaker="a", accent="scottish"),
            Utterance(id="a-2", audio=str(wav), duration=1.5, text="three", speaker="a", accent="scottish",
                      offset=1.2),
            Utterance(id="b-1", audio=str(wav), duration=0.5, text="four", speaker="b", accent="welsh", lang="cy")]
    write_kaldi_dir(utts, tmp_path / "kd")
    assert (tmp_path / "kd" / "segments").is_file()
    assert (tmp_path / "kd" / "spk2utt").read_text().splitlines() == ["a a-1 a-2", "b b-1"]
    back = {u.id: u for u in read_kaldi_dir(tmp_path / "kd")}
    for u in utts:
        b = back[u.id]
        assert (b.audio, b.text, b.speaker, b.accent, b.lang) == (u.audio, u.text, u.speaker, u.accent, u.lang)
        # in a dir with segments, an utterance without an offset is written as a segment from 0
        assert b.offset == pytest.approx(u.offset or 0.0) and b.duration == pytest.approx(u.duration)


def test_kaldi_import_errors(tmp_path):
    wav = tone(tmp_path / "x.wav")
    d = tmp_path / "kd"
    d.mkdir()
    (d / "wav.scp").write_text(f"u1 {wav}\nu2 sox x.wav -t wav - |\n")
    (d / "text").write_text("u1 hello\nu2 world\n")
    (d / "utt2spk").write_text("u1 s\n")
    with pytest.raises(ManifestError, match="no utt2accent file"):
        read_kaldi_dir(d)
    with pytest.raises(ManifestError, match=r"text:2: utterance 'u2' has no line in utt2spk"):
        read_kaldi_dir(d, accent="x")
    (d / "utt2spk").write_text("u1 s\nu2 s\n")
    with pytest.raises(ManifestError, match=r"wav.scp:2: piped commands are not supported"):
        read_kaldi_dir(d, accent="x")


def test_normalisers_treat_ref_and_hyp_alike():
    en = normalizer_for("en")
    assert en("Mr. Smith's colour, isn't it?") == en("mister smith's color isn't it")
    assert en("Twenty-one apples") == en("21 apples")
    assert en("Don\u2019t stop, it\u2019s late") == en("don't stop it's late") == "do not stop it is late"
    other = normalizer_for("fr")
    assert other("Bonjour, le Monde!") == "bonjour le monde"
    assert normalizer_for("en", "none")("  Hello   World ") == "hello world"


def test_manifest_cli_validates_and_converts(tmp_path, capsys):
    from speechtl.cli import main

    tone(tmp_path / "u0.wav")
    tone(tmp_path / "u1.wav")
    good = write_manifest_rows(tmp_path / "m.jsonl", [row(0), row(1, speaker="s2", accent="y")])
    assert main(["manifest", "validate", str(good)]) == 0
    assert "OK, 2 utterances" in capsys.readouterr().out
    bad = write_manifest_rows(tmp_path / "bad.jsonl", [row(0), row(1, text="")])
    assert main(["manifest", "validate", str(bad)]) == 2
    assert f"{bad}:2: field 'text' is empty" in capsys.readouterr().err
    assert main(["manifest", "to-kaldi", str(good), "--out", str(tmp_path / "kd")]) == 0
    assert (tmp_path / "kd" / "utt2accent").read_text() == "u0 x\nu1 y\n"
    assert main(["manifest", "from-kaldi", str(tmp_path / "kd"), "--out", str(tmp_path / "back.jsonl")]) == 0
    back = read_manifest(tmp_path / "back.jsonl")
    assert [(u.id, u.speaker, u.accent, u.text) for u in back] == [("u0", "s1", "x", "hello there"),
                                                                    ("u1", "s2", "y", "hello there")]


def test_an_offset_of_zero_is_kept_and_marks_a_segment(tmp_path):
    tone(tmp_path / "u0.wav", seconds=3.0)
    whole = Utterance(id="w", audio="u0.wav", duration=3.0, text="all of it", speaker="s", accent="x")
    seg = Utterance(id="s", audio="u0.wav", duration=1.0, text="the start", speaker="s", accent="x", offset=0.0)
    assert "offset" not in whole.to_dict()
    assert seg.to_dict()["offset"] == 0.0
    write_manifest(tmp_path / "m.jsonl", [whole, seg])
    back = {u.id: u for u in read_manifest(tmp_path / "m.jsonl")}
    assert back["w"].offset is None and back["s"].offset == 0.0


def test_segments_are_written_even_when_every_one_starts_at_zero(tmp_path):
    a, b = tone(tmp_path / "a.wav", seconds=3.0), tone(tmp_path / "b.wav", seconds=3.0)
    utts = [Utterance(id="a-1", audio=str(a), duration=1.0, text="one", speaker="a", accent="x", offset=0.0),
            Utterance(id="b-1", audio=str(b), duration=0.5, text="two", speaker="b", accent="x", offset=0.0)]
    write_kaldi_dir(utts, tmp_path / "kd")
    assert (tmp_path / "kd" / "segments").read_text().splitlines() == ["a-1 a 0.000 1.000", "b-1 b 0.000 0.500"]
    back = {u.id: u for u in read_kaldi_dir(tmp_path / "kd")}
    assert (back["a-1"].offset, back["a-1"].duration) == (0.0, 1.0)
    assert (back["b-1"].offset, back["b-1"].duration) == (0.0, 0.5)


def test_kaldi_segments_from_zero_round_trip_unchanged_and_load_as_segments(tmp_path, capsys):
    """from-kaldi then to-kaldi gives back every file of the dir, recording ids included; the audio
    of each utterance is its segment, not the whole recording."""
    from speechtl.cli import main
    from speechtl.features.audio import load_utterance

    rec1, rec2 = tone(tmp_path / "call-one.wav", seconds=4.0), tone(tmp_path / "call-two.wav", seconds=4.0)
    src = tmp_path / "src"
    src.mkdir()
    files = {
        "wav.scp": f"rec1 {rec1}\nrec2 {rec2}\n",
        "segments": "rec1-a rec1 0.000 1.250\nrec1-b rec1 1.250 2.000\nrec2-a rec2 0.000 0.750\n",
        "text": "rec1-a first words\nrec1-b second\nrec2-a third one\n",
        "utt2spk": "rec1-a s1\nrec1-b s1\nrec2-a s2\n",
        "spk2utt": "s1 rec1-a rec1-b\ns2 rec2-a\n",
    }
    for name, text in files.items():
        (src / name).write_text(text)
    manifest, out = tmp_path / "m.jsonl", tmp_path / "out"
    assert main(["manifest", "from-kaldi", str(src), "--accent", "x", "--out", str(manifest)]) == 0
    assert main(["manifest", "to-kaldi", str(manifest), "--out", str(out)]) == 0
    for name, text in files.items():
        assert (out / name).read_text() == text, name
    lengths = {u.id: len(load_utterance(u, 16000)) for u in read_manifest(manifest)}
    assert lengths == {"rec1-a": 20000, "rec1-b": 12000, "rec2-a": 12000}


BOM = b"\xef\xbb\xbf"


def windows(text: str) -> bytes:
    """``text`` as Windows editors and spreadsheets save it: a UTF-8 byte-order mark and CRLF line ends."""
    return BOM + text.replace("\n", "\r\n").encode("utf-8")


def test_a_manifest_with_a_byte_order_mark_and_crlf_reads_like_a_plain_one(tmp_path):
    tone(tmp_path / "u0.wav")
    tone(tmp_path / "u1.wav")
    rows = [row(0, text="café au lait"), row(1, speaker="s2")]
    plain = write_manifest_rows(tmp_path / "plain.jsonl", rows)
    win = tmp_path / "win.jsonl"
    win.write_bytes(windows(plain.read_text(encoding="utf-8")))
    assert read_manifest(win) == read_manifest(plain)
    # line numbers and other bad bytes are reported as before
    win.write_bytes(windows(json.dumps(row(0)) + "\n{oops\n") + "é\r\n".encode("latin-1"))
    _, errors = parse_manifest(win)
    assert errors == [f"{win}:2: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
                      f"{win}:3: not valid UTF-8 (unexpected end of data at byte 0); re-encode the file as UTF-8"]


def test_a_kaldi_dir_with_byte_order_marks_and_crlf_reads_like_a_plain_one(tmp_path):
    wav = tone(tmp_path / "rec.wav", seconds=2.0)
    files = {"wav.scp": f"rec {wav}\n", "segments": "u1 rec 0.00 0.50\nu2 rec 0.50 1.50\n",
             "text": "u1 café\nu2 two words\n", "utt2spk": "u1 s\nu2 s\n", "utt2accent": "u1 x\nu2 x\n"}
    for name, text in files.items():
        (tmp_path / "plain").mkdir(exist_ok=True)
        (tmp_path / "plain" / name).write_text(text, encoding="utf-8")
        (tmp_path / "win").mkdir(exist_ok=True)
        (tmp_path / "win" / name).write_bytes(windows(text))
    assert read_kaldi_dir(tmp_path / "win") == read_kaldi_dir(tmp_path / "plain")
    (tmp_path / "win" / "text").write_bytes(windows("u1 one\n") + "u2 caf\xe9\r\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=r"text:2: not valid UTF-8"):
        read_kaldi_dir(tmp_path / "win")
