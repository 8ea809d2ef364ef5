"""The 240-event encoding and the 24-dim controls."""

from __future__ import annotations

import numpy as np
import pytest

from compress.data import events as ev
from compress.data.events import Note, compute_controls, events_to_notes, expand_controls, notes_to_events

SMALLEST_SHIFT = float(ev.TIME_SHIFT_BINS[0])  # each gap loses less than this when encoded


def test_layout_constants() -> None:
    assert (ev.NOTE_ON, ev.NOTE_OFF, ev.VELOCITY, ev.TIME_SHIFT, ev.EVENT_DIM) == (0, 88, 176, 208, 240)
    assert ev.START_EVENT == 239
    assert len(ev.VELOCITY_BINS) == 31 and ev.VELOCITY_BINS[0] == 21.0
    assert ev.VELOCITY_BINS[-1] == pytest.approx(21 + 30 * 88 / 31)
    assert ev.TIME_SHIFT_BINS[0] == pytest.approx(1 / 65) and ev.TIME_SHIFT_BINS[-1] == pytest.approx(1.15**31 / 65)


@pytest.mark.parametrize(("velocity", "index"), [(1, 0), (21, 0), (22, 1), (64, 16), (106, 30), (107, 31), (127, 31)])
def test_velocity_index(velocity: int, index: int) -> None:
    assert ev.velocity_index(velocity) == index


@pytest.mark.parametrize("gap", [0.0, 0.01, 0.0154, 0.1, 0.5, 1.171, 2.0, 7.3])
def test_time_shift_decomposition_drops_less_than_smallest_bin(gap: float) -> None:
    shifts = ev._time_shifts(gap)
    encoded = float(sum(ev.TIME_SHIFT_BINS[k] for k in shifts))
    assert 0 <= gap - encoded < SMALLEST_SHIFT
    assert shifts == sorted(shifts, reverse=True)  # greedy: largest bin first


def test_single_note_event_order() -> None:
    out = notes_to_events([Note(0.0, 0.3, 60, 100)]).tolist()
    assert out[0] == ev.VELOCITY + ev.velocity_index(100)
    assert out[1] == ev.NOTE_ON + 60 - 21
    assert all(e >= ev.TIME_SHIFT for e in out[2:-1])
    assert out[-1] == ev.NOTE_OFF + 60 - 21


def test_out_of_range_and_backwards_notes_are_dropped() -> None:
    notes = [Note(0.0, 0.5, 20, 64), Note(0.0, 0.5, 109, 64), Note(0.5, 0.4, 60, 64), Note(0.0, 0.5, 108, 64)]
    decoded = events_to_notes(notes_to_events(notes), min_duration=0.0)
    assert [n.pitch for n in decoded] == [108]


def test_release_precedes_onset_at_the_same_time() -> None:
    out = notes_to_events([Note(0.0, 0.5, 60, 64), Note(0.5, 1.0, 60, 64)]).tolist()
    off, on = ev.NOTE_OFF + 39, ev.NOTE_ON + 39
    assert out.index(off) < len(out) - 1 - out[::-1].index(on)
    assert len(events_to_notes(out, min_duration=0.0)) == 2


def _random_notes(rng: np.random.Generator, count: int) -> list[Note]:
    starts = np.sort(rng.uniform(0, 20, count))
    return [
        Note(float(s), float(s + rng.uniform(0.05, 2.0)), int(rng.integers(21, 109)), int(rng.integers(1, 128)))
        for s in starts
    ]


def test_round_trip_within_time_bin_quantization() -> None:
    rng = np.random.default_rng(0)
    notes = [n for n in _random_notes(rng, 60)]
    # Unique pitches so that decoding pairs each onset with its own release.
    seen, unique = set(), []
    for n in notes:
        if n.pitch not in seen:
            seen.add(n.pitch)
            unique.append(n)
    events = notes_to_events(unique)
    gaps = int(np.sum(events < ev.TIME_SHIFT)) + 1  # one dropped remainder per gap, at most
    decoded = events_to_notes(events, min_duration=0.0)
    assert [n.pitch for n in decoded] == [n.pitch for n in sorted(unique, key=lambda n: (n.start, n.pitch))]
    for want, got in zip(sorted(unique, key=lambda n: (n.start, n.pitch)), decoded, strict=True):
        assert want.start - gaps * SMALLEST_SHIFT <= got.start <= want.start + 1e-9
        assert abs(got.end - want.end) <= gaps * SMALLEST_SHIFT
        # Velocity survives up to its bucket width (~2.84), after clamping into 21..~106.
        assert abs(got.velocity - min(max(want.velocity, 21), 106.2)) <= 88 / 31 + 0.5


def test_decoding_defaults() -> None:
    note_on = ev.NOTE_ON + 39
    (unclosed,) = events_to_notes([note_on])
    assert unclosed == Note(0.0, 1.0, 60, 64)  # default velocity 64, 1 s when never released
    (short,) = events_to_notes([note_on, ev.TIME_SHIFT, ev.NOTE_OFF + 39])
    assert short.end == pytest.approx(0.25)  # reference minimum length after a note_off
    top = events_to_notes([ev.VELOCITY + 31, note_on, ev.NOTE_OFF + 39])[0].velocity
    assert top == round(ev.VELOCITY_BINS[30])  # class 31 decodes like class 30


def test_event_times_accumulate_shifts() -> None:
    times = ev.event_times(np.array([ev.TIME_SHIFT + 31, ev.NOTE_ON, ev.TIME_SHIFT, ev.NOTE_OFF]))
    assert times.tolist() == pytest.approx([0.0, 1.15**31 / 65, 1.15**31 / 65, 1.15**31 / 65 + 1 / 65])


def test_controls_look_ahead_two_seconds() -> None:
    # Four notes at 0, 1.0, 1.5, 3.0 s: C, E, G, C.
    notes = [Note(t, t + 0.2, p, 64) for t, p in [(0.0, 60), (1.0, 64), (1.5, 67), (3.0, 72)]]
    events = notes_to_events(notes)
    density, hist = compute_controls(events)
    first = hist[0].astype(float) / 255
    assert first[0] == pytest.approx(1 / 3, abs=1 / 255) and first[4] == pytest.approx(1 / 3, abs=1 / 255)
    assert first[7] == pytest.approx(1 / 3, abs=1 / 255)
    assert density[0] == 0  # 3 notes ahead -> class 0 (0..3 notes)
    last_on = int(np.flatnonzero(events == ev.NOTE_ON + 72 - 21)[0])
    assert hist[last_on, 0] == 255  # only the final C is ahead
    assert (hist[-1] == round(255 / 12)).all()  # nothing ahead of the last event: uniform


@pytest.mark.parametrize(("count", "cls"), [(0, 0), (3, 0), (4, 1), (6, 1), (7, 2), (33, 10), (34, 11), (60, 11)])
def test_density_classes(count: int, cls: int) -> None:
    notes = [Note(0.01 * i, 0.01 * i + 0.005, 21 + i % 88, 64) for i in range(count)]
    density, _ = compute_controls(notes_to_events(notes) if count else np.array([ev.TIME_SHIFT], np.uint8))
    assert density[0] == cls


def test_expand_controls_puts_density_first() -> None:
    hist = np.zeros((1, 12), np.uint8)
    hist[0, 3] = 255
    dense = expand_controls(np.array([5], np.uint8), hist)
    assert dense.shape == (1, 24) and dense.dtype == np.float32
    assert dense[0, :12].tolist() == [0.0] * 5 + [1.0] + [0.0] * 6
    assert dense[0, 12 + 3] == 1.0 and dense[0, 12:].sum() == 1.0


def test_describe_event() -> None:
    assert ev.describe_event(88) == "note_off 21"
    with pytest.raises(ValueError):
        ev.describe_event(240)
