"""The default music corpus: the Bach chorales that ship inside the music21 package.

Every MusicXML file of ``music21.corpus.getComposer('bach')`` (410 scores in music21
10.5) is parsed once: all parts are merged into one note list (ties joined, grace notes
and repeats ignored), quarter lengths become seconds through the score's metronome
marks (most chorales say quarter = 120 or carry a playback tempo such as 76; a score
without any mark is read at 120 bpm), and velocity is 64 (these are scores, not
performances, so velocity events are trivially predictable: see the ``no_velocity``
metric). Pitches outside 21..108 are dropped by the encoding.

The encoded corpus is cached (see :mod:`compress.data.corpus`); nothing is written into
the repository and nothing is downloaded.

Example:
    >>> paths = chorale_paths()  # doctest: +SKIP
    >>> len(paths)  # doctest: +SKIP
    410
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compress.data.corpus import Encoded, EventCorpus, build_corpus, corpus_key, encode_notes
from compress.data.events import DEFAULT_VELOCITY, Note
from compress.data.windows import WindowedEvents, windowed_schema
from compress.errors import DataError
from compress.registry import DATASETS

__all__ = ["chorale_paths", "chorale_notes", "load_chorales", "bach_chorales"]

MUSICXML_SUFFIXES = (".mxl", ".xml", ".musicxml")
DEFAULT_SECONDS_PER_QUARTER = 0.5  # 120 bpm


def _music21() -> Any:
    try:
        import music21
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError("The bach_chorales dataset needs music21: pip install 'compress-rnn-ptq[music]'.") from exc
    return music21


def chorale_paths(max_files: int | None = None) -> list[Path]:
    """The chorale score files shipped with music21, sorted by file name.

    Args:
        max_files: keep only the first ``max_files`` (for quick runs).

    Example:
        >>> [p.name for p in chorale_paths(2)]  # doctest: +SKIP
        ['bwv1.6.mxl', 'bwv10.7.mxl']
    """
    music21 = _music21()
    paths = sorted((p for p in music21.corpus.getComposer("bach") if p.suffix in MUSICXML_SUFFIXES), key=_name)
    if not paths:
        raise DataError("music21 ships no Bach chorales here; reinstall music21 with its corpus.")
    return paths[:max_files] if max_files else paths


def _name(path: Path) -> str:
    return Path(path).name


def _tempo_map(score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start quarter, start second, seconds per quarter) of each tempo span of ``score``."""
    spans = [(s, m.secondsPerQuarter()) for s, e, m in score.metronomeMarkBoundaries() if e > s]
    if not spans or spans[0][0] > 0:
        spans.insert(0, (0.0, DEFAULT_SECONDS_PER_QUARTER))
    starts = np.array([s for s, _ in spans], dtype=np.float64)
    rates = np.array([r if r else DEFAULT_SECONDS_PER_QUARTER for _, r in spans], dtype=np.float64)
    seconds = np.concatenate([[0.0], np.cumsum(np.diff(starts) * rates[:-1])])
    return starts, seconds, rates


def _to_seconds(quarters: float, tempo: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    starts, seconds, rates = tempo
    i = max(int(np.searchsorted(starts, quarters, side="right")) - 1, 0)
    return float(seconds[i] + (quarters - starts[i]) * rates[i])


def chorale_notes(path: Path) -> list[Note]:
    """Parse one score into notes (all parts merged, seconds via the score's tempo).

    Raises:
        DataError: music21 cannot parse the file.

    Example:
        >>> notes = chorale_notes(chorale_paths(1)[0])  # doctest: +SKIP
        >>> notes[0].velocity  # doctest: +SKIP
        64
    """
    music21 = _music21()
    try:
        score = music21.converter.parse(str(path))
    except Exception as exc:  # music21 raises many unrelated types for bad files
        raise DataError(f"music21 cannot parse chorale '{path}': {exc}") from exc
    tempo = _tempo_map(score)
    notes: list[Note] = []
    for part in score.parts or [score]:
        for element in part.stripTies().flatten().notes:
            length = float(element.duration.quarterLength)
            if length <= 0:  # grace notes take no time in a score
                continue
            start = _to_seconds(float(element.offset), tempo)
            end = _to_seconds(float(element.offset) + length, tempo)
            velocity = element.volume.velocity or DEFAULT_VELOCITY
            notes.extend(Note(start, end, int(p.midi), int(velocity)) for p in element.pitches)
    return sorted(notes, key=lambda n: (n.start, n.pitch))


def encode_chorale(path: Path) -> Encoded:
    """Parse and encode one chorale (runs in a worker process)."""
    return encode_notes(chorale_notes(path))


def load_chorales(max_files: int | None = None) -> EventCorpus:
    """The encoded chorale corpus, converted once and cached.

    Example:
        >>> corpus = load_chorales(max_files=6)  # doctest: +SKIP
        >>> len(corpus.names)  # doctest: +SKIP
        6
    """
    music21 = _music21()
    paths = chorale_paths(max_files)
    names = [_name(p) for p in paths]
    key = corpus_key({"music21": str(music21.__version__), "files": names})
    return build_corpus("bach_chorales", paths, names, encode_chorale, key)


@DATASETS.register(
    "bach_chorales",
    schema=windowed_schema(
        {
            "max_files": {
                "type": ["integer", "null"],
                "minimum": 3,
                "maximum": 1_000_000,
                "description": "Use only the first N chorales by file name (quick runs). Default: all (null).",
            }
        }
    ),
    description="Bach chorales shipped with music21, encoded as Performance RNN events (240) with controls.",
)
def bach_chorales(*, max_files: int | None = None, **args: Any) -> WindowedEvents:
    """Build the chorale data source (see :class:`~compress.data.windows.WindowedEvents` for args).

    Example:
        >>> data = bach_chorales(max_files=12, window=50, batch_size=4)  # doctest: +SKIP
        >>> next(iter(data.batches("evaluation")))[0].shape  # doctest: +SKIP
        torch.Size([50, 4])
    """
    return WindowedEvents(load_chorales(max_files), "bach_chorales", **args)
