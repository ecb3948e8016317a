"""Ranking workflows and tools for ``search_workflows`` / ``search_tools``.

``Index(docs).search(query, limit)`` ranks documents ``(key, fields)`` — fields
such as ``name``, ``description``, ``parameters``, ``doc`` and ``tags``, all
strings — with BM25 (the ``bm25s`` library) over the tokens of ``tokens()``:

- identifiers are split into words (``fetch_json``, ``fetchJSON`` -> fetch,
  json; ``HTTPServer`` -> http, server; ``v2`` -> v, 2), so a query in plain
  words finds a name written as code, and the other way round;
- words are lower-cased, stop words dropped, and reduced to their Snowball
  ("Porter 2") English stem (PyStemmer), so "images", "imaging" and "image"
  are one term.

There is deliberately no synonym list: any hand-made list would be small,
arbitrary and tuned to the examples at hand; the ranker's job is to use the
words the items' authors wrote (names, descriptions, parameter names and
docstrings), and semantic matching belongs to the optional embedding model.

Without a model the ranking is BM25 alone, and deterministic: equal scores are
ordered by key. With an ``embedder`` (any object with ``encode(list[str]) ->
array (n, d)``, such as a sentence-transformers model that ``load_embedder``
loads from a local path) the score blends the BM25 score, divided by the best
BM25 score for the query, with the cosine similarity of the query's and the
item's embeddings (``BM25_WEIGHT`` and ``EMBEDDING_WEIGHT``, 0.5 each).
sentence-transformers is not a dependency of torpor, and nothing is ever
downloaded: only a model already on disk is used.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import unicodedata
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Optional, Protocol

import numpy as np

__all__ = ["Index", "tokens", "load_embedder", "Embedder",
           "FIELD_WEIGHTS", "BM25_WEIGHT", "EMBEDDING_WEIGHT", "EMBEDDING_MODEL_ENV"]

# How many times a field's tokens count in an item's BM25 document. Repeating
# a field's tokens is the simplest field boost BM25 allows: its terms gain term
# frequency (saturating, through k1) so a query word in the name counts for
# more than the same word once in a long docstring. The name is what an author
# chose to sum the item up; the description is its one-line summary; the
# parameter names, tags and docstring are supporting words. Fields not listed
# count once.
FIELD_WEIGHTS: Mapping[str, int] = {"name": 3, "description": 2, "tags": 1,
                                    "parameters": 1, "doc": 1}

# The blend with an embedding model: BM25 divided by the query's best BM25
# score (so both parts lie in [0, 1]) and the cosine similarity clipped at 0.
BM25_WEIGHT = 0.5
EMBEDDING_WEIGHT = 0.5

# The environment variable naming a local sentence-transformers model folder.
EMBEDDING_MODEL_ENV = "TORPOR_EMBEDDING_MODEL"


# --- the analyzer ---------------------------------------------------------------

# Snowball's English stop word list (the list that goes with its English
# stemmer), with the contractions written as the analyzer sees them once the
# apostrophe is gone ("don't" -> "dont"); contractions that would collide with
# real words ("she'll" -> "shell", "I'd" -> "id", "we'll" -> "well") are left
# out. Plus "can", "will" and "just", which queries are full of.
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him
his himself she her hers herself it its itself they them their theirs
themselves what which who whom this that these those am is are was were be been
being have has had having do does did doing would should could ought a an the
and but if or because as until while of at by for with about against between
into through during before after above below to from up down in out on off over
under again further then once here there when where why how all any both each
few more most other some such no nor not only own same so than too very
im youre hes theyre ive youve weve theyve youd youll theyll isnt arent wasnt
werent hasnt havent hadnt doesnt dont didnt wont wouldnt shant shouldnt cant
cannot couldnt mustnt thats whos whats heres theres whens wheres whys hows
can will just
""".split())

# Runs of letters and digits (underscores and everything else separate them).
_RUNS = re.compile(r"[^\W_]+")
# An apostrophe inside a word joins its halves ("don't" -> "dont", "user's" ->
# "users", which the stemmer then reduces to "user").
_APOSTROPHE = re.compile(r"(?<=[^\W_])['\u2019](?=[^\W_])")

# PyStemmer's stemmers keep internal state and must not be shared between
# threads: one per thread.
_local = threading.local()


def _stem(word: str) -> str:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        import Stemmer  # type: ignore[import-not-found]  # no type information
        stemmer = _local.stemmer = Stemmer.Stemmer("english")
    return str(stemmer.stemWord(word))


def _split_identifier(run: str) -> list[str]:
    """Split a run of letters and digits at its case and digit boundaries.

    ``fetchJSON`` -> fetch, JSON; ``HTTPServer`` -> HTTP, Server (an acronym
    ends before the capital that starts the next word); ``v2`` -> v, 2;
    ``URLs`` stays whole (an acronym's plural "s" is not a word). Letters
    without case (CJK, Arabic, ...) split only at digits.
    """
    parts = []
    start = 0
    for i in range(1, len(run)):
        prev, cur = run[i - 1], run[i]
        if prev.isdigit() != cur.isdigit() or (prev.islower() and cur.isupper()):
            boundary = True
        elif prev.isupper() and cur.isupper() and i + 1 < len(run) and run[i + 1].islower():
            # "HTTPServer": split before the "S" of "Server", unless what
            # follows is a lone plural "s" ("URLs", "IDs").
            end = i + 1
            while end < len(run) and run[end].islower():
                end += 1
            boundary = run[i + 1:end] != "s"
        else:
            boundary = False
        if boundary:
            parts.append(run[start:i])
            start = i
    parts.append(run[start:])
    return parts


def _words(text: str) -> list[str]:
    """The lower-cased words of ``text``, identifiers split, before stop words."""
    return [part.lower() for run in _runs(text) for part in _split_identifier(run)]


def _runs(text: str) -> list[str]:
    return _RUNS.findall(_APOSTROPHE.sub("", unicodedata.normalize("NFKC", text)))


@functools.lru_cache(maxsize=1 << 16)
def _run_terms(run: str) -> tuple[str, ...]:
    """The terms of one run of letters and digits. Cached: an index's texts
    repeat most of their words, and splitting and stemming dominate its
    construction."""
    words = [part.lower() for part in _split_identifier(run) if part.lower() not in STOP_WORDS]
    whole = run.lower()
    if (len(words) > 1 or (words and len(words[0]) < len(run))) and whole not in STOP_WORDS:
        # A run split at its case or digits also keeps its whole, as Lucene's
        # word delimiter filter does with preserveOriginal: "GitHub" and
        # "SQLite" give git, hub, github and sq, lite, sqlite, so a query
        # that writes the word whole ("github", "sqlite", "sha256") finds it.
        words.append(whole)
    return tuple(_stem(w) for w in words)


def tokens(text: str) -> list[str]:
    """The analyzer: ``text``'s search terms, in order.

    Unicode-normalised (NFKC), split into runs of letters and digits, each run
    split as an identifier (``fetch_json``, ``fetchJSON``, ``HTTPServer``,
    ``v2``; a run split at its case or digits also gives its whole word:
    ``fetchJSON`` -> fetch, json, fetchjson), lower-cased, stop words removed,
    Snowball-stemmed.
    """
    if not isinstance(text, str):
        raise TypeError(f"tokens() takes a str, not {type(text).__name__}")
    return [term for run in _runs(text) for term in _run_terms(run)]


# --- embeddings ----------------------------------------------------------------

class Embedder(Protocol):
    """What ``Index`` needs of an embedding model (sentence-transformers' API)."""

    def encode(self, sentences: list[str]) -> Any:  # array-like (n, d)
        ...


def load_embedder(model_path: str | None = None) -> Any:
    """A sentence-transformers model from a local folder, or None.

    The folder is ``model_path`` or else the ``TORPOR_EMBEDDING_MODEL``
    environment variable. Returns None, so that search is BM25 alone, when no
    folder is configured, when sentence-transformers is not importable, or
    (with a warning) when the configured folder does not exist. Nothing is
    ever downloaded: a name that is not a local folder is not passed on (it
    would be fetched from the Hugging Face hub), and the model is opened with
    ``local_files_only=True``.
    """
    path = model_path if model_path is not None else os.environ.get(EMBEDDING_MODEL_ENV)
    if not path:
        return None
    try:
        # (an optional package; the ignore is for machines without it)
        from sentence_transformers import (  # type: ignore[import-not-found, unused-ignore]
            SentenceTransformer)
    except ImportError:
        return None
    if not os.path.isdir(path):
        warnings.warn(f"embedding model {path!r} is not a local folder; searching with BM25 only",
                      RuntimeWarning, stacklevel=2)
        return None
    return SentenceTransformer(path, local_files_only=True)


_DEFAULT: dict[Optional[str], Any] = {}
_DEFAULT_LOCK = threading.Lock()


def default_embedder() -> Any:
    """The embedder ``TORPOR_EMBEDDING_MODEL`` configures (load_embedder), made
    once per process and per setting; None without one. What the storages'
    ``search`` methods (workflows, tools) blend with BM25."""
    path = os.environ.get(EMBEDDING_MODEL_ENV) or None
    with _DEFAULT_LOCK:
        if path not in _DEFAULT:
            _DEFAULT[path] = load_embedder(path) if path else None
        return _DEFAULT[path]


def _unit_rows(matrix: Any, rows: int, what: str) -> np.ndarray:
    """``matrix`` as float64 rows of length 1 (zero rows stay zero)."""
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != rows:
        raise ValueError(f"the embedder's encode() returned shape {array.shape} for {rows} "
                         f"{what}; expected ({rows}, d)")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)


# --- the index -----------------------------------------------------------------

class Index:
    """A search index over ``docs``, ``(key, fields)`` pairs.

    ``fields`` maps field names (``name``, ``description``, ``parameters``,
    ``doc``, ``tags`` or any other) to strings (None counts as empty). Keys
    must be unique strings. Building is cheap (tokenising and a sparse BM25
    matrix: a few milliseconds for hundreds of items), so rebuild the index
    when the items change. With an ``embedder``, the items' embeddings are
    computed once, at the first search.
    """

    def __init__(self, docs: Iterable[tuple[str, Mapping[str, str]]], *,
                 embedder: Embedder | None = None) -> None:
        keys: list[str] = []
        corpus: list[list[str]] = []
        fields_of: list[Mapping[str, str]] = []
        for entry in docs:
            key, fields = entry
            if not isinstance(key, str):
                raise TypeError(f"an Index key must be a str, not {type(key).__name__}")
            keys.append(key)
            terms: list[str] = []
            for field, value in fields.items():
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise TypeError(f"field {field!r} of {key!r} must be a str, "
                                    f"not {type(value).__name__}")
                terms.extend(tokens(value) * FIELD_WEIGHTS.get(field, 1))
            corpus.append(terms)
            fields_of.append(dict(fields))
        if len(set(keys)) != len(keys):
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"duplicate Index keys: {', '.join(dupes)}")
        self._keys = keys
        self._fields = fields_of  # for the embedder's texts
        self._embedder = embedder
        self._doc_vectors: np.ndarray | None = None
        self._lock = threading.Lock()
        # bm25s fails on a corpus without a single term; such an index finds nothing.
        self._vocab: dict[str, int] = {}
        self._bm25: Any = None
        if any(corpus):
            import bm25s  # type: ignore[import-untyped]  # imported here: it takes ~0.2 s
            self._bm25 = bm25s.BM25()
            self._bm25.index(corpus, show_progress=False)
            self._vocab = self._bm25.vocab_dict

    def __len__(self) -> int:
        return len(self._keys)

    def search(self, query: str, limit: int = 10) -> list[tuple[str, float]]:
        """The keys of up to ``limit`` items matching ``query``, best first.

        Only items with a score above zero are returned (none for a query
        without a known term, unless an embedder finds them similar). Equal
        scores are ordered by key.
        """
        if not isinstance(query, str):
            raise TypeError(f"the query must be a str, not {type(query).__name__}")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be a positive int, not {type(limit).__name__}")
        if limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit}")
        if not self._keys or not query.strip():
            return []
        scores = self._bm25_scores(query)
        if self._embedder is not None:
            best = scores.max(initial=0.0)
            lexical = scores / best if best > 0 else scores
            scores = BM25_WEIGHT * lexical + EMBEDDING_WEIGHT * self._similarities(query)
        found = [(key, float(score)) for key, score in zip(self._keys, scores) if score > 0]
        found.sort(key=lambda item: (-item[1], item[0]))
        return found[:limit]

    def _bm25_scores(self, query: str) -> np.ndarray:
        """BM25 score of every item (zeros when no query term is in the index)."""
        ids = [self._vocab[t] for t in tokens(query) if t in self._vocab]
        if not ids:
            return np.zeros(len(self._keys))
        return np.asarray(self._bm25.get_scores_from_ids(ids), dtype=np.float64)

    def _similarities(self, query: str) -> np.ndarray:
        """Cosine similarity of the query to every item, clipped at 0."""
        assert self._embedder is not None
        with self._lock:
            if self._doc_vectors is None:
                texts = [_embedding_text(fields) for fields in self._fields]
                self._doc_vectors = _unit_rows(self._embedder.encode(texts), len(texts), "items")
            doc_vectors = self._doc_vectors
        query_vector = _unit_rows(self._embedder.encode([query]), 1, "query")[0]
        if query_vector.shape[0] != doc_vectors.shape[1]:
            raise ValueError(f"the embedder's query vector has {query_vector.shape[0]} "
                             f"dimensions, its item vectors {doc_vectors.shape[1]}")
        return np.clip(doc_vectors @ query_vector, 0.0, None)


def _embedding_text(fields: Mapping[str, str]) -> str:
    """The text an embedding model sees for an item: its fields, the name as words."""
    lines: Iterable[str] = (
        " ".join(_words(value)) if field == "name" else value
        for field, value in fields.items() if value)
    return "\n".join(lines)
