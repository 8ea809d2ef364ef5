"""MIDI files <-> notes with mido: read a user's performances, write generated ones.

Reading merges every non-drum channel of every track into one note list (times in
seconds, following the file's tempo map); the sustain pedal is ignored, as in the
reference preprocessing. Writing decodes events into notes and saves a one-track
piano file at 120 bpm.

Example:
    >>> import tempfile, pathlib
    >>> from compress.data.events import Note
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.mid"
    >>> write_notes([Note(0.0, 0.5, 60, 80)], path)
    >>> [(n.pitch, n.velocity) for n in read_notes(path)]
    [(60, 80)]
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compress.data.corpus import Encoded, EventCorpus, build_corpus, corpus_key, encode_notes, file_fingerprint
from compress.data.events import Note, events_to_notes
from compress.data.windows import WindowedEvents, windowed_schema
from compress.errors import CompressError, DataError
from compress.fileio import atomic_write_with, read_regular_file
from compress.registry import DATASETS

__all__ = [
    "MIDI_SUFFIXES",
    "read_notes",
    "write_notes",
    "write_midi",
    "list_midi_files",
    "load_midi_folder",
    "midi_folder",
]

MIDI_SUFFIXES = (".mid", ".midi")
DRUM_CHANNEL = 9  # General MIDI percussion (channel 10, zero-based 9)
TICKS_PER_BEAT = 220
TEMPO_US_PER_BEAT = 500_000  # 120 bpm
PIANO_PROGRAM = 0  # General MIDI acoustic grand piano (zero-based)
MAX_MIDI_BYTES = 64 << 20  # a long piano performance is well under 1 MB


def _mido() -> Any:
    try:
        import mido
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError(
            "Reading or writing MIDI needs the 'mido' package: pip install 'compress-rnn-ptq[music]'."
        ) from exc
    return mido


def list_midi_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The .mid/.midi files under ``folder`` (recursively), sorted by relative path.

    Raises:
        DataError: the folder does not exist or holds no MIDI file.

    Example:
        >>> list_midi_files("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.DataError: ...
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"MIDI folder '{root}' does not exist or is not a folder; check the dataset's 'path'.")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"MIDI folder '{root}' contains no .mid or .midi files.")
    return files


def read_notes(path: str | os.PathLike[str]) -> list[Note]:
    """All non-drum notes of a MIDI file, with times in seconds, sorted by onset.

    A note_on with velocity 0 is a note_off; a repeated note_on of a sounding pitch on the
    same channel ends the previous note; notes still sounding at the end are closed there.

    Raises:
        DataError: the file cannot be parsed.

    Example:
        >>> read_notes("/nonexistent.mid")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.DataError: ...
    """
    mido = _mido()
    try:
        raw = read_regular_file(path, MAX_MIDI_BYTES, "MIDI file")
    except CompressError as exc:
        raise DataError(str(exc)) from None
    if not raw:
        raise DataError(f"Cannot read MIDI file '{path}': the file is empty.")
    try:
        midi = mido.MidiFile(file=io.BytesIO(raw))
    except Exception as exc:  # mido raises many types for damaged files; all are the file's fault
        raise DataError(f"Cannot read MIDI file '{path}': {_reason(exc)}.") from None
    if not isinstance(midi.ticks_per_beat, int) or midi.ticks_per_beat <= 0:
        raise DataError(
            f"Cannot read MIDI file '{path}': its header gives {midi.ticks_per_beat} ticks per beat "
            "(must be positive), so no time can be computed. The file is damaged or uses SMPTE timing."
        )
    try:
        messages = list(midi)  # iteration merges tracks and converts ticks to seconds
    except Exception as exc:
        raise DataError(f"Cannot read MIDI file '{path}': {_reason(exc)}.") from None
    return _pair_notes(messages)


def _reason(exc: Exception) -> str:
    """A reason that is never blank (``EOFError()`` says nothing by itself)."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    if isinstance(exc, EOFError):
        return "the file ends early (truncated)" + (f": {text}" if text else "")
    return f"{type(exc).__name__}: {text}" if text else f"{type(exc).__name__} (the file is damaged)"


def _pair_notes(messages: Sequence[Any]) -> list[Note]:
    now = 0.0
    sounding: dict[tuple[int, int], tuple[float, int]] = {}
    notes: list[Note] = []
    for msg in messages:
        now += msg.time
        if msg.type not in ("note_on", "note_off") or msg.channel == DRUM_CHANNEL:
            continue
        key = (msg.channel, msg.note)
        if key in sounding:
            start, velocity = sounding.pop(key)
            notes.append(Note(start, now, msg.note, velocity))
        if msg.type == "note_on" and msg.velocity > 0:
            sounding[key] = (now, msg.velocity)
    notes.extend(Note(start, now, pitch, vel) for (_, pitch), (start, vel) in sounding.items())
    return sorted(notes, key=lambda n: (n.start, n.pitch))


def write_notes(notes: Sequence[Note], path: str | os.PathLike[str]) -> None:
    """Write notes as a type-0 piano MIDI file (120 bpm, 220 ticks per beat), atomically.

    Example:
        >>> import tempfile, pathlib
        >>> write_notes([Note(0.0, 1.0, 60, 64)], pathlib.Path(tempfile.mkdtemp()) / "x.mid")
    """
    mido = _mido()
    seconds_per_tick = TEMPO_US_PER_BEAT / 1e6 / TICKS_PER_BEAT
    timed: list[tuple[int, int, int, int]] = []  # (tick, order, pitch, velocity); offs sort first at ties
    for note in notes:
        on, off = round(note.start / seconds_per_tick), round(note.end / seconds_per_tick)
        velocity = int(np.clip(round(note.velocity), 1, 127))
        timed.append((on, 1, note.pitch, velocity))
        timed.append((max(off, on + 1), 0, note.pitch, 0))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=TEMPO_US_PER_BEAT, time=0))
    track.append(mido.Message("program_change", program=PIANO_PROGRAM, channel=0, time=0))
    last = 0
    for tick, _, pitch, velocity in sorted(timed):
        track.append(mido.Message("note_on", note=pitch, velocity=velocity, channel=0, time=tick - last))
        last = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    atomic_write_with(path, lambda f: midi.save(file=f))


def write_midi(events: Sequence[int] | np.ndarray, path: str | os.PathLike[str]) -> list[Note]:
    """Decode a generated event sequence (one performance) and write it as a MIDI file.

    Args:
        events: event indices 0..239 of one sequence, e.g. ``model.generate(...)[:, 0]``.
        path: the .mid file to write.

    Returns:
        The decoded notes that were written.

    Example:
        >>> import tempfile, pathlib
        >>> len(write_midi([192, 39, 237, 127], pathlib.Path(tempfile.mkdtemp()) / "g.mid"))
        1
    """
    values = np.asarray(events, dtype=np.int64).reshape(-1)
    notes = events_to_notes(values)
    write_notes(notes, path)
    return notes


def encode_midi(path: Path) -> Encoded:
    """Read and encode one MIDI file (runs in a worker process)."""
    return encode_notes(read_notes(path))


def load_midi_folder(folder: str | os.PathLike[str]) -> EventCorpus:
    """The encoded corpus of a MIDI folder, cached by file names, sizes and modification times.

    Example:
        >>> load_midi_folder("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.DataError: ...
    """
    root = Path(folder).expanduser().resolve()
    files = list_midi_files(root)
    names = [p.relative_to(root).as_posix() for p in files]
    key = corpus_key({"folder": str(root), "files": [file_fingerprint(p) for p in files]})
    return build_corpus("midi_folder", files, names, encode_midi, key)


@DATASETS.register(
    "midi_folder",
    schema=windowed_schema(
        {
            "path": {
                "type": "string",
                "format": "path",
                "minLength": 1,
                "description": "Folder of .mid/.midi files (searched recursively; relative to the schedule).",
            }
        }
    ),
    description="Any folder of MIDI performances, encoded as Performance RNN events (240) with controls.",
)
def midi_folder(*, path: str, **args: Any) -> WindowedEvents:
    """Build a data source over a folder of MIDI files (splits by file; see :mod:`compress.data.corpus`).

    With fewer than 10 files the held-out splits hold one file each (none below 3 files);
    use ``calibration_split``/``evaluation_split: all`` for a handful of files.

    Example:
        >>> midi_folder(path="/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.DataError: ...
    """
    return WindowedEvents(load_midi_folder(path), f"midi_folder({path})", **args)
