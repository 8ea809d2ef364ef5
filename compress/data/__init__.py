"""Datasets: Performance RNN event corpora (music) and word-level text corpora.

Importing this package registers ``bach_chorales`` and ``midi_folder`` (music) and the
text datasets in :data:`compress.registry.DATASETS`.
"""

from compress.data import chorales, corpus, events, midi, wiki_dump, wikitext, windows  # noqa: F401

__all__ = ["chorales", "corpus", "events", "midi", "wiki_dump", "wikitext", "windows"]
