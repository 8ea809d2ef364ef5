"""MIDI reading and writing with mido, and the midi_folder dataset."""

from __future__ import annotations

from pathlib import Path

import mido
import pytest
import torch

from compress.data import midi
from compress.data.events import Note
from compress.data.midi import load_midi_folder, read_notes, write_notes
from compress.errors import DataError
from compress.registry import DATASETS


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path_factory.mktemp("cache")))


def _write_performance(path: Path, shift: int = 0) -> None:
    """Two tracks at 480 ticks/beat: a tempo change, a drum note, velocity-0 releases."""
    tempo_track = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=500_000, time=0),  # 120 bpm
            mido.MetaMessage("set_tempo", tempo=1_000_000, time=960),  # 60 bpm after 2 beats (1 s)
        ]
    )
    notes = mido.MidiTrack(
        [
            mido.Message("note_on", note=60 + shift, velocity=90, time=0),
            mido.Message("note_on", note=36, velocity=100, channel=9, time=0),  # drums: ignored
            mido.Message("note_on", note=60 + shift, velocity=0, time=480),  # 0.5 s, velocity-0 release
            mido.Message("note_on", note=64 + shift, velocity=70, time=480),  # at 1.0 s
            mido.Message("note_off", note=64 + shift, velocity=0, time=480),  # one beat at 60 bpm: 2.0 s
            mido.Message("note_on", note=67 + shift, velocity=50, time=0),  # never released
            mido.Message("note_off", note=36, channel=9, time=480),
        ]
    )
    file = mido.MidiFile(type=1, ticks_per_beat=480)
    file.tracks.extend([tempo_track, notes])
    file.save(str(path))


def test_read_notes_follows_tempo_map_and_skips_drums(tmp_path: Path) -> None:
    path = tmp_path / "perf.mid"
    _write_performance(path)
    notes = midi.read_notes(path)
    assert [(n.pitch, n.velocity) for n in notes] == [(60, 90), (64, 70), (67, 50)]
    assert notes[0].start == pytest.approx(0.0) and notes[0].end == pytest.approx(0.5)
    assert notes[1].start == pytest.approx(1.0) and notes[1].end == pytest.approx(2.0)
    assert notes[2].start == pytest.approx(2.0) and notes[2].end == pytest.approx(3.0)  # closed at the last message


def test_unreadable_and_missing_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not a midi file")
    with pytest.raises(DataError, match="bad.mid"):
        midi.read_notes(bad)
    with pytest.raises(DataError, match="no .mid"):
        midi.list_midi_files(_empty(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        midi.list_midi_files(tmp_path / "missing")


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("no midi here")
    return folder


def test_write_notes_round_trip(tmp_path: Path) -> None:
    notes = [Note(0.0, 0.5, 60, 80), Note(0.25, 1.0, 64, 40), Note(1.0, 1.5, 60, 100)]
    path = tmp_path / "out.mid"
    midi.write_notes(notes, path)
    back = midi.read_notes(path)
    assert [(n.pitch, n.velocity) for n in back] == [(60, 80), (64, 40), (60, 100)]
    for want, got in zip(notes, back, strict=True):
        assert got.start == pytest.approx(want.start, abs=0.003) and got.end == pytest.approx(want.end, abs=0.003)


def test_write_midi_decodes_events(tmp_path: Path) -> None:
    events = [176 + 20, 39, 208 + 20, 88 + 39, 43, 208 + 25]
    written = midi.write_midi(events, tmp_path / "gen.mid")
    file = mido.MidiFile(str(tmp_path / "gen.mid"))
    ons = [m for m in file if m.type == "note_on" and m.velocity > 0]
    assert [m.note for m in ons] == [60, 64] == [n.pitch for n in written]


def _folder(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "performances"
    (folder / "sub").mkdir(parents=True)
    for i in range(count):
        long_piece = mido.MidiFile(ticks_per_beat=480)
        track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000, time=0)])
        for k in range(30):
            track.append(mido.Message("note_on", note=48 + (k * 5 + i) % 36, velocity=64 + k % 40, time=120))
            track.append(mido.Message("note_off", note=48 + (k * 5 + i) % 36, velocity=0, time=120))
        long_piece.tracks.append(track)
        target = folder / ("sub" if i % 2 else "") / f"piece{i:02d}.midi"
        long_piece.save(str(target))
    return folder


def test_midi_folder_dataset(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 4)
    make = DATASETS.get("midi_folder").obj
    data = make(path=str(folder), evaluation_split="all", calibration_split="all", window=20, batch_size=3)
    assert sorted(data.corpus.names) == ["piece00.midi", "piece02.midi", "sub/piece01.midi", "sub/piece03.midi"]
    batches = list(data.batches("evaluation"))
    assert sum(b[0].shape[1] for b in batches) == data.num_tokens("evaluation") // 20
    assert len(batches) == data.num_batches("evaluation")
    events, controls, z = batches[0]
    assert events.dtype == torch.long and events.shape == (20, 3)
    assert controls is not None and controls.shape == (20, 3, 24) and z.shape == (3, 32)
    assert "midi_folder" in data.describe()


def test_midi_folder_needs_windows(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 4)
    make = DATASETS.get("midi_folder").obj
    with pytest.raises(DataError, match="window"):
        make(path=str(folder), evaluation_split="all", calibration_split="all", window=100000)
    with pytest.raises(DataError, match="does not exist"):
        make(path=str(tmp_path / "nope"))


# --------------------------------------------------------------------------- bad files get a reason


def _good_midi(tmp_path: Path) -> bytes:
    path = tmp_path / "good.mid"
    write_notes([Note(0.0, 0.5, 60, 80), Note(0.5, 1.0, 62, 80)], path)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda b: b"", "the file is empty"),
        (lambda b: b[:20], "ends early"),
        (lambda b: b[:12] + b"\x00\x00" + b[14:], "0 ticks per beat"),  # MThd's division field
        (lambda b: b"RIFF" + b[4:], "MThd"),
    ],
    ids=["empty", "truncated", "zero_ticks_per_beat", "bad_header"],
)
def test_bad_midi_files_name_the_file_and_the_reason(tmp_path: Path, mangle, reason: str) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.mid"
    bad.write_bytes(mangle(_good_midi(tmp_path)))
    with pytest.raises(DataError) as info:
        read_notes(bad)
    message = str(info.value)
    assert "bad.mid" in message and reason in message, message


def test_zero_ticks_per_beat_in_a_folder_is_a_data_error_not_a_worker_crash(tmp_path: Path) -> None:
    good = _good_midi(tmp_path)
    folder = tmp_path / "midi"
    folder.mkdir()
    for i in range(5):  # enough files for the worker pool
        (folder / f"{i}.mid").write_bytes(good)
    (folder / "3.mid").write_bytes(good[:12] + b"\x00\x00" + good[14:])
    with pytest.raises(DataError, match=r"3.mid': its header gives 0 ticks per beat"):
        load_midi_folder(folder)


def test_a_midi_path_that_is_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a regular file"):
        read_notes("/dev/zero")
