"""A WikiText-like corpus built from the Wikipedia excerpt shipped inside gensim.

gensim's test data holds a shortened English Wikipedia dump (MediaWiki XML, bz2) of
about a hundred full articles. Turning it into a word-level language-modelling corpus
needs no network access, so tests and the shipped word LM can rely on it.

Cleaning, in the spirit of WikiText:

* only main-namespace pages that are not redirects are kept, in dump order;
* markup is removed with gensim's ``filter_wiki`` (a library call), then bold/italic
  quotes and leftover table/list markers are dropped;
* headings become WikiText's ``= = Title = =`` lines; everything from a trailing
  "References"/"External links"/... section on is dropped (bibliographies are not prose);
* case is **preserved** (as in WikiText); punctuation is split off words
  (``"don't stop."`` -> ``don't stop .``); rare words become ``<unk>`` later, when a
  vocabulary built on the train split maps tokens to ids.

Articles are split by position (every 10th article starting at the 9th goes to valid, at
the 10th to test, the rest to train: about 80/10/10), so the split is deterministic and no
article straddles two splits. The result is cached as JSON in :func:`compress.utils.cache_dir`.

Example:
    >>> corpus = load_gensim_wiki()  # doctest: +SKIP
    >>> sorted(corpus)  # doctest: +SKIP
    ['test', 'train', 'valid']
"""

from __future__ import annotations

import bz2
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from compress.errors import DataError
from compress.fileio import atomic_write_json
from compress.utils import cache_dir

__all__ = [
    "CLEANING_VERSION",
    "SPLITS",
    "gensim_dump_path",
    "iter_articles",
    "clean_article",
    "tokenize_text",
    "split_of_article",
    "build_gensim_wiki",
    "load_gensim_wiki",
]

# Bump when cleaning or splitting changes, so stale caches are not reused.
CLEANING_VERSION = 1
SPLITS = ("train", "valid", "test")
DUMP_NAME = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

# Sections after which an article holds no prose worth modelling.
_TAIL_SECTIONS = {
    "references",
    "external links",
    "see also",
    "further reading",
    "notes",
    "bibliography",
    "sources",
    "footnotes",
    "notes and references",
    "citations",
}
_HEADING = re.compile(r"^(={2,6})\s*(.*?)\s*\1\s*$")
_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
_LIST_MARKERS = re.compile(r"^[*#:;]+\s*")


def gensim_dump_path() -> Path:
    """Path of the Wikipedia dump excerpt inside the installed gensim package.

    Raises:
        DataError: gensim is not installed or does not ship the excerpt.

    Example:
        >>> gensim_dump_path().name  # doctest: +SKIP
        'enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2'
    """
    try:
        import gensim
    except ImportError as exc:
        raise DataError(
            "The 'gensim_wiki' dataset reads the Wikipedia excerpt shipped with gensim, but gensim is not "
            "installed. Install it with `pip install 'compress-rnn-ptq[text]'` (or `pip install gensim`), "
            "or use the 'wikitext' dataset with a local folder."
        ) from exc
    path = Path(gensim.__file__).parent / "test" / "test_data" / DUMP_NAME
    if not path.is_file():
        raise DataError(
            f"gensim {getattr(gensim, '__version__', '?')} does not ship {DUMP_NAME} (looked at {path}). "
            "Install gensim 4.x with its test data, or use the 'wikitext' dataset with a local folder."
        )
    return path


def iter_articles(path: Path) -> Iterator[tuple[str, str]]:
    """Yield ``(title, wikitext)`` of main-namespace, non-redirect pages of a MediaWiki dump.

    Example:
        >>> titles = [t for t, _ in iter_articles(gensim_dump_path())]  # doctest: +SKIP
        >>> titles[0]  # doctest: +SKIP
        'Anarchism'
    """
    try:
        with bz2.open(path, "rb") as stream:
            for _, elem in ET.iterparse(stream, events=("end",)):
                if _local(elem.tag) != "page":
                    continue
                ns = elem.findtext("{*}ns")
                if ns == "0" and elem.find("{*}redirect") is None:
                    yield elem.findtext("{*}title") or "", elem.findtext("{*}revision/{*}text") or ""
                # Free each page once read: dumps can be far larger than memory.
                elem.clear()
    except (OSError, EOFError, ET.ParseError) as exc:
        raise DataError(f"Cannot read the MediaWiki dump {path}: {exc}. Reinstall gensim or check the file.") from exc


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def tokenize_text(text: str) -> list[str]:
    """Split text into words and single punctuation marks (case preserved).

    Example:
        >>> tokenize_text("Don't stop, 1,000 times.")
        ["Don't", 'stop', ',', '1', ',', '000', 'times', '.']
    """
    return _TOKEN.findall(text)


def clean_article(wikitext: str) -> list[str]:
    """Turn one article's wiki markup into WikiText-like lines of space-separated tokens.

    Example:
        >>> clean_article("'''Foo''' is a [[bar|Bar]].\\n==History==\\nOld.\\n==See also==\\n* x")
        ['Foo is a Bar .', '= = History = =', 'Old .']
    """
    from gensim.corpora.wikicorpus import filter_wiki

    lines: list[str] = []
    for raw in filter_wiki(wikitext).splitlines():
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading:
            title = heading.group(2).strip()
            if title.lower() in _TAIL_SECTIONS:
                break
            level = len(heading.group(1))
            line = " ".join(["="] * level + tokenize_text(title) + ["="] * level)
            lines.append(line)
            continue
        if not line or line[0] in "|{}!" or line.startswith("thumb"):
            continue  # table cells and image captions left over by filter_wiki
        text = _LIST_MARKERS.sub("", line).replace("'''", "").replace("''", "")
        tokens = tokenize_text(text)
        if tokens:
            lines.append(" ".join(tokens))
    return _drop_empty_sections(lines)


def _drop_empty_sections(lines: list[str]) -> list[str]:
    # A heading followed directly by another heading (or the end) introduced only removed
    # content (a table, a gallery); keeping it would teach the model headings beget headings.
    kept: list[str] = []
    for i, line in enumerate(lines):
        is_heading = line.startswith("= ")
        nxt = lines[i + 1] if i + 1 < len(lines) else None
        if is_heading and (nxt is None or nxt.startswith("= ")):
            continue
        kept.append(line)
    return kept


def split_of_article(index: int) -> str:
    """The split of the ``index``-th article (0-based, dump order): about 80/10/10.

    Example:
        >>> [split_of_article(i) for i in range(10)].count("train")
        8
    """
    return {8: "valid", 9: "test"}.get(index % 10, "train")


def build_gensim_wiki(path: Path) -> dict:
    """Parse and clean a dump into ``{"articles": [{"title", "split", "lines"}], ...}``.

    Example:
        >>> data = build_gensim_wiki(gensim_dump_path())  # doctest: +SKIP
        >>> len(data["articles"])  # doctest: +SKIP
        106
    """
    articles = []
    for index, (title, text) in enumerate(iter_articles(path)):
        articles.append({"title": title, "split": split_of_article(index), "lines": clean_article(text)})
    if not articles:
        raise DataError(f"The dump {path} holds no articles; reinstall gensim or use the 'wikitext' dataset.")
    return {"format": "compress-gensim-wiki", "version": CLEANING_VERSION, "source": str(path), "articles": articles}


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_gensim_wiki(path: Path | None = None) -> dict[str, list[str]]:
    """Lines (space-separated tokens) per split of the gensim Wikipedia excerpt, cached.

    The cache file name holds the cleaning version and the dump's hash, so a different
    gensim excerpt or a changed cleaning never reuses a stale cache.

    Args:
        path: a MediaWiki ``.xml.bz2`` dump; defaults to the excerpt inside gensim.

    Returns:
        ``{"train": [...], "valid": [...], "test": [...]}``.

    Example:
        >>> corpus = load_gensim_wiki()  # doctest: +SKIP
        >>> corpus["train"][0].split()[:3]  # doctest: +SKIP
        ['Anarchism', 'is', 'a']
    """
    path = Path(path) if path is not None else gensim_dump_path()
    cache = cache_dir() / f"gensim_wiki_v{CLEANING_VERSION}_{_file_sha256(path)[:16]}.json"
    data = _read_cache(cache)
    if data is None:
        data = build_gensim_wiki(path)
        atomic_write_json(cache, data)
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    for article in data["articles"]:
        splits[article["split"]].extend(article["lines"])
    return splits


def _read_cache(cache: Path) -> dict | None:
    # A corrupt or foreign cache is rebuilt rather than trusted: it is derived data.
    if not cache.is_file():
        return None
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("format") != "compress-gensim-wiki" or data.get("version") != CLEANING_VERSION:
        return None
    return data
