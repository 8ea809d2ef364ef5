"""The Performance RNN event vocabulary (240 events) and its 24-dim control features.

Layout of the 240 event classes (behaviour of the public PyTorch Performance RNN):

=========  ========  =====================================================
indices    type      meaning
=========  ========  =====================================================
0-87       note_on   MIDI pitch 21..108, index = pitch - 21
88-175     note_off  same pitch range
176-207    velocity  bucket of the next note's velocity (emitted per note)
208-239    shift     geometric time shifts 1.15**k / 65 s, k = 0..31
=========  ========  =====================================================

Controls are 24 floats per event: a 12-way note-density one-hot **first**, then a 12-bin
pitch-class histogram, both over the note_on events of the next 2 s. (The original names
the histogram first but feeds density first; pretrained weights expect the latter.) They
are stored compressed as ``(density_index: uint8, histogram*255: uint8[12])``.

Example:
    >>> notes = [Note(0.0, 0.5, 60, 64), Note(0.5, 1.0, 64, 64)]
    >>> events = notes_to_events(notes)
    >>> [n.pitch for n in events_to_notes(events, min_duration=0.0)]
    [60, 64]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "ENCODING_VERSION",
    "EVENT_DIM",
    "CONTROL_DIM",
    "PITCH_MIN",
    "PITCH_MAX",
    "NOTE_ON",
    "NOTE_OFF",
    "VELOCITY",
    "TIME_SHIFT",
    "START_EVENT",
    "VELOCITY_BINS",
    "TIME_SHIFT_BINS",
    "Note",
    "notes_to_events",
    "events_to_notes",
    "event_times",
    "compute_controls",
    "expand_controls",
    "describe_event",
]

# Bump when the encoding of cached corpora changes, so stale caches are rebuilt.
ENCODING_VERSION = 1

EVENT_DIM = 240
CONTROL_DIM = 24
PITCH_MIN, PITCH_MAX = 21, 108  # piano range A0..C8, inclusive
NOTE_ON, NOTE_OFF, VELOCITY, TIME_SHIFT = 0, 88, 176, 208  # first index of each event type
NUM_VELOCITY, NUM_TIME_SHIFT = 32, 32
START_EVENT = EVENT_DIM - 1  # the longest time shift doubles as the start token

# 31 arithmetic steps from 21 to ~106.2; searchsorted yields 0..31 (32 classes), decoding
# clamps to 30, so class 31 decodes as ~106 (an off-by-one kept for compatibility).
VELOCITY_BINS = np.arange(PITCH_MIN, PITCH_MAX + 1, (PITCH_MAX + 1 - PITCH_MIN) / 31)[:31]
TIME_SHIFT_BINS = 1.15 ** np.arange(NUM_TIME_SHIFT) / 65.0  # 15.4 ms .. 1.171 s

DEFAULT_VELOCITY = 64
CONTROL_WINDOW_S = 2.0  # 4 beats at 120 bpm, looking ahead from each event
DENSITY_EDGES = np.arange(12) * 3 + 1  # 0-3 notes -> class 0, ..., >= 34 -> class 11
DEFAULT_MIN_DURATION = 0.25  # decoded note_off never ends a note sooner than this
UNCLOSED_DURATION = 1.0  # decoded notes that never get a note_off


class Note(NamedTuple):
    """One note: onset and release in seconds, MIDI pitch, MIDI velocity."""

    start: float
    end: float
    pitch: int
    velocity: int


def velocity_index(velocity: float) -> int:
    """The velocity class (0..31) of a MIDI velocity, clamped to [21, 108] first.

    Example:
        >>> velocity_index(64), velocity_index(1), velocity_index(127)
        (16, 0, 31)
    """
    v = min(max(float(velocity), PITCH_MIN), PITCH_MAX)
    return int(np.searchsorted(VELOCITY_BINS, v, side="left"))


def _time_shifts(gap: float) -> list[int]:
    """Greedy decomposition of ``gap`` seconds into shift classes; the rest (< 15.4 ms) is dropped."""
    shifts: list[int] = []
    while gap >= TIME_SHIFT_BINS[0]:
        k = int(np.searchsorted(TIME_SHIFT_BINS, gap, side="right")) - 1
        shifts.append(k)
        gap -= TIME_SHIFT_BINS[k]
    return shifts


def _timeline(notes: Iterable[Note]) -> list[tuple[float, int]]:
    """(time, event) pairs for the kept notes, stably ordered by time.

    A note emits velocity + note_on at its start and note_off at its end; notes are taken in
    onset order so that at equal times a release of an earlier note precedes a new onset.
    """
    timeline: list[tuple[float, int]] = []
    for note in sorted(notes, key=lambda n: (n.start, n.pitch)):
        if not PITCH_MIN <= note.pitch <= PITCH_MAX or note.end < note.start:
            continue
        index = note.pitch - PITCH_MIN
        timeline.append((note.start, VELOCITY + velocity_index(note.velocity)))
        timeline.append((note.start, NOTE_ON + index))
        timeline.append((note.end, NOTE_OFF + index))
    timeline.sort(key=lambda pair: pair[0])  # stable: keeps the per-note order at ties
    return timeline


def notes_to_events(notes: Iterable[Note]) -> np.ndarray:
    """Encode notes as an event array (uint8, values 0..239).

    Notes outside pitch 21..108 or ending before they start are dropped. Each gap between
    consecutive events becomes time shifts; each gap's remainder below 15.4 ms is dropped,
    so decoded times drift slightly behind the originals (as in the reference encoding).

    Args:
        notes: the notes, in any order; times in seconds.

    Returns:
        A 1-D uint8 array of event indices.

    Example:
        >>> notes_to_events([Note(0.0, 1.0, 60, 64)]).tolist()
        [192, 39, 237, 222, 127]
    """
    events: list[int] = []
    now = 0.0
    for time, event in _timeline(notes):
        events.extend(TIME_SHIFT + k for k in _time_shifts(time - now))
        events.append(event)
        now = time
    return np.asarray(events, dtype=np.uint8)


def events_to_notes(events: Sequence[int] | np.ndarray, *, min_duration: float = DEFAULT_MIN_DURATION) -> list[Note]:
    """Decode an event sequence back into notes (sorted by onset).

    Velocity is 64 until the first velocity event. A note_off ends its note at
    ``max(now, start + min_duration)``; a note_on for a pitch already sounding ends the
    previous note first; notes never released last 1 s.

    Args:
        events: event indices (0..239).
        min_duration: the shortest note a note_off can produce (0.25 s in the reference;
            pass 0 to decode exactly what the events say).

    Returns:
        The decoded notes.

    Example:
        >>> events_to_notes([192, 39, 237, 127], min_duration=0.0)[0].pitch
        60
    """
    now, velocity = 0.0, float(DEFAULT_VELOCITY)
    sounding: dict[int, tuple[float, float]] = {}
    notes: list[Note] = []
    for event in (int(e) for e in events):
        if event >= TIME_SHIFT:
            now += float(TIME_SHIFT_BINS[event - TIME_SHIFT])
        elif event >= VELOCITY:
            velocity = float(VELOCITY_BINS[min(event - VELOCITY, len(VELOCITY_BINS) - 1)])
        elif event >= NOTE_OFF:
            pitch = event - NOTE_OFF + PITCH_MIN
            if pitch in sounding:
                start, vel = sounding.pop(pitch)
                notes.append(Note(start, max(now, start + min_duration), pitch, round(vel)))
        else:
            pitch = event - NOTE_ON + PITCH_MIN
            if pitch in sounding:
                start, vel = sounding.pop(pitch)
                notes.append(Note(start, now, pitch, round(vel)))
            sounding[pitch] = (now, velocity)
    notes.extend(Note(s, s + UNCLOSED_DURATION, p, round(v)) for p, (s, v) in sounding.items())
    return sorted(notes, key=lambda n: (n.start, n.pitch))


def event_times(events: np.ndarray) -> np.ndarray:
    """The decoded time (seconds, float64) at which each event happens.

    Example:
        >>> event_times(np.array([239, 39])).round(3).tolist()
        [0.0, 1.171]
    """
    events = np.asarray(events, dtype=np.int64)
    shift = np.where(events >= TIME_SHIFT, TIME_SHIFT_BINS[np.clip(events - TIME_SHIFT, 0, None)], 0.0)
    return np.concatenate([[0.0], np.cumsum(shift)[:-1]]) if len(events) else np.zeros(0)


def compute_controls(events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compressed controls of every event: density class and pitch-class histogram x255.

    For event i the window is the note_on events j >= i with time_j < time_i + 2 s.

    Args:
        events: a 1-D event array.

    Returns:
        ``(density uint8 [N], histogram uint8 [N, 12])``; the histogram is uniform when the
        window holds no note_on, and pitch class 0 is C.

    Example:
        >>> density, hist = compute_controls(notes_to_events([Note(0.0, 0.5, 60, 64)]))
        >>> int(density[0]), int(hist[0, 0])
        (0, 255)
    """
    events = np.asarray(events, dtype=np.int64)
    times = event_times(events)
    is_on = events < NOTE_OFF
    pitch_class = np.where(is_on, (events - NOTE_ON + PITCH_MIN - 24) % 12, 0)
    onehot = np.zeros((len(events) + 1, 12), dtype=np.int64)
    onehot[1:][is_on, pitch_class[is_on]] = 1
    cum = np.cumsum(onehot, axis=0)  # cum[j] = counts over events[:j]
    end = np.searchsorted(times, times + CONTROL_WINDOW_S, side="left")
    counts = cum[end] - cum[np.arange(len(events))]
    total = counts.sum(axis=1)
    density = np.maximum(np.searchsorted(DENSITY_EDGES, total, side="right") - 1, 0)
    hist = np.where(total[:, None] > 0, counts / np.maximum(total, 1)[:, None], 1.0 / 12)
    return density.astype(np.uint8), np.round(hist * 255).astype(np.uint8)


def expand_controls(density: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """The 24-dim float32 control vectors in the model's layout: density one-hot, then histogram.

    Example:
        >>> expand_controls(np.array([2], np.uint8), np.full((1, 12), 0, np.uint8))[0, :4].tolist()
        [0.0, 0.0, 1.0, 0.0]
    """
    out = np.zeros((len(density), CONTROL_DIM), dtype=np.float32)
    out[np.arange(len(density)), density.astype(np.int64)] = 1.0
    out[:, 12:] = hist.astype(np.float32) / 255.0
    return out


def describe_event(event: int) -> str:
    """A readable name for one event index.

    Example:
        >>> describe_event(39), describe_event(192), describe_event(239)
        ('note_on 60', 'velocity 16', 'shift 1171ms')
    """
    if not 0 <= event < EVENT_DIM:
        raise ValueError(f"event index {event} is outside 0..{EVENT_DIM - 1}")
    if event >= TIME_SHIFT:
        return f"shift {TIME_SHIFT_BINS[event - TIME_SHIFT] * 1000:.0f}ms"
    if event >= VELOCITY:
        return f"velocity {event - VELOCITY}"
    kind, base = ("note_off", NOTE_OFF) if event >= NOTE_OFF else ("note_on", NOTE_ON)
    return f"{kind} {event - base + PITCH_MIN}"
