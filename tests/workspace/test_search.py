"""The workspace's search ranker (torpor.workspace.library.search).

The acceptance test of the issue: a fixed corpus of 30 workflows and tools, as
a scientist's or an agent's workspace would hold them, and 20 queries written
in other words than the items' names; the expected item must rank first for
each. The descriptions and docstrings are written as their authors would
write them, not stuffed with the queries' words: the ranker finds the items
through identifier splitting, stemming and the words of descriptions,
parameter names and docstrings.
"""

import hashlib
import sys

import numpy as np
import pytest

from torpor.workspace.library import search
from torpor.workspace.library.search import Index, load_embedder, tokens


def workflow(name, description, parameters, doc):
    """A workflow as the workflow store hands it to the index."""
    return name, {"name": name, "description": description,
                  "parameters": parameters, "doc": doc}


def tool(name, description, parameters, tags):
    """A YAML tool as the tool store hands it to the index."""
    return name, {"name": name, "description": description,
                  "parameters": parameters, "tags": tags}


CORPUS = [
    workflow("fetch_json", "Fetch a URL with an HTTP GET and return the decoded JSON body.",
             "url timeout headers",
             "Raises for non-2xx status codes. Use download_file for large or binary content."),
    workflow("download_file", "Download a file from a URL to a local path, streaming it in chunks.",
             "url dest chunk_size overwrite",
             "A partial file is removed on failure. Returns the number of bytes written."),
    workflow("resize_image",
             "Resize an image to fit within a maximum width and height, keeping its aspect ratio.",
             "path max_width max_height output",
             "Uses Pillow. Handy to shrink large photos into thumbnails before sharing them."),
    workflow("compute_fft",
             "Compute the discrete Fourier transform of a 1-D signal.",
             "signal sample_rate window",
             "Returns frequencies and amplitudes; a Hann window is applied by default. "
             "Use it to find the dominant frequencies of a time series."),
    workflow("run_blast", "Search a protein or nucleotide sequence against a BLAST database.",
             "sequence database program evalue max_hits",
             "Runs blastp or blastn locally; returns the hits with their e-values and percent "
             "identity."),
    workflow("parse_pdb", "Parse a PDB file into chains, residues and atom coordinates.",
             "path model",
             "Reads the ATOM and HETATM records of a Protein Data Bank structure."),
    tool("git_clone", "Clone a git repository into a new directory.",
         "url dest branch depth", "git vcs"),
    workflow("search_text",
             "Find lines matching a regular expression in the files under a folder, like grep.",
             "pattern root glob ignore_case",
             "Returns (path, line number, line) for each match; binary files are skipped."),
    workflow("csv_to_parquet", "Convert a CSV file to Parquet with pandas, inferring column types.",
             "src dest compression",
             "Parquet is a compressed columnar format: smaller and much faster to load than CSV."),
    workflow("plot_histogram", "Plot a histogram of numeric values and save it as a PNG.",
             "values bins title output",
             "Draws with matplotlib; shows the distribution of a column at a glance."),
    workflow("send_email", "Send an email through the configured SMTP server.",
             "to subject body attachments",
             "Plain text body; attachments are file paths. The server and its credentials come "
             "from the SMTP_* environment variables."),
    tool("curl", "Transfer data from or to a server with URL syntax (HTTP GET, POST, PUT, ...).",
         "url request header data output silent location", "http network"),
    tool("jq", "Command-line JSON processor: filter, select and reshape JSON documents.",
         "filter file raw_output compact", "json"),
    tool("ffmpeg", "Convert audio and video between formats; cut, scale or re-encode them.",
         "input output codec bitrate", "media video audio"),
    tool("zip", "Package and compress files into a ZIP archive.", "archive files recursive",
         "archive compression"),
    tool("unzip", "List, test and extract files from a ZIP archive.", "archive dest overwrite",
         "archive"),
    workflow("sql_query", "Run a SQL query against a database and return the rows as dicts.",
             "query dsn params",
             "Works with SQLite paths and PostgreSQL connection strings; params are bound, "
             "never interpolated."),
    workflow("summarize_dataframe",
             "Summary statistics (count, mean, std, quartiles) of each column of a table.",
             "path columns",
             "Loads CSV or Parquet; missing values are counted per column."),
    workflow("translate_dna",
             "Translate a DNA or RNA sequence into protein with the standard genetic code.",
             "sequence frame to_stop",
             "Codons are read in the given reading frame (0, 1 or 2); returns one-letter amino "
             "acid codes, stopping at the first stop codon when to_stop is true."),
    workflow("fit_curve", "Fit a model function to data points by non-linear least squares.",
             "func xdata ydata p0",
             "Wraps scipy.optimize.curve_fit; returns the optimal parameters and their standard "
             "errors."),
    workflow("extract_pdf_text", "Extract the text of a PDF document, page by page.",
             "path pages",
             "Uses pdfminer; scanned PDFs without a text layer give empty pages."),
    tool("rsync", "Synchronise files and folders between machines, copying only the differences.",
         "source destination delete dry_run exclude", "sync backup"),
    tool("ssh", "Run a command on a remote host over SSH.", "host user command port identity",
         "remote shell"),
    workflow("s3_upload", "Upload a local file to an S3 bucket.", "path bucket key",
             "Works with Amazon S3 and S3-compatible object storage such as MinIO; large files "
             "go up in multipart uploads."),
    workflow("train_test_split", "Split a dataset into random training and test subsets.",
             "path test_fraction seed",
             "Shuffles the rows with a fixed seed, so the split is reproducible."),
    workflow("geocode_address", "Look up the latitude and longitude of a street address.",
             "address country",
             "Uses the Nominatim (OpenStreetMap) service; answers are cached."),
    workflow("slack_notify", "Post a message to a Slack channel through an incoming webhook.",
             "text channel webhook_url", "The webhook URL comes from SLACK_WEBHOOK_URL."),
    workflow("checksum_file", "Compute the SHA-256 hash of a file.", "path algorithm",
             "Reads in 1 MiB chunks; algorithm may be md5, sha1 or sha256. Compare the digest "
             "with the published one to verify a download."),
    tool("pandoc",
         "Convert documents between markup formats: Markdown, HTML, LaTeX, Word (docx), PDF.",
         "input output from to standalone", "documents convert"),
    workflow("convert_units", "Convert a quantity between physical units (e.g. psi to kPa).",
             "value from_unit to_unit", "Uses pint's unit registry."),
]

# (query, expected first) — written in other words than the item's name.
QUERIES = [
    ("get JSON from a web address", "fetch_json"),
    ("shrink a photo to thumbnail size", "resize_image"),
    ("frequency spectrum of a time series", "compute_fft"),
    ("find similar protein sequences in a database", "run_blast"),
    ("read the atom coordinates of a protein structure", "parse_pdb"),
    ("make a local copy of a repository", "git_clone"),
    ("find every line that matches a regex in a folder", "search_text"),
    ("store a spreadsheet export in a columnar format", "csv_to_parquet"),
    ("draw the distribution of a column", "plot_histogram"),
    ("deliver a message with attached files over SMTP", "send_email"),
    ("send an HTTP POST request with custom headers", "curl"),
    ("filter JSON output in a shell pipeline", "jq"),
    ("transcode a video to another format", "ffmpeg"),
    ("compress a folder into an archive", "zip"),
    ("extract the contents of an archive", "unzip"),
    ("read rows of a table from SQLite", "sql_query"),
    ("which amino acids does this gene code for", "translate_dna"),
    ("least squares regression on measurements", "fit_curve"),
    ("put a file in cloud object storage", "s3_upload"),
    ("hash a file to check its integrity", "checksum_file"),
]


@pytest.fixture(scope="module")
def index():
    return Index(CORPUS)


def test_corpus_shape():
    assert len(CORPUS) == 30 and len({key for key, _ in CORPUS}) == 30
    assert len(QUERIES) == 20 and {e for _, e in QUERIES} <= {key for key, _ in CORPUS}


@pytest.mark.parametrize("query, expected", QUERIES, ids=[e for _, e in QUERIES])
def test_paraphrased_query_ranks_expected_first(index, query, expected):
    found = index.search(query, limit=3)
    assert found and found[0][0] == expected, found


# --- the analyzer ---------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("fetch_json", ["fetch", "json"]),
    # A run split at its case or digits keeps its whole too (last).
    ("fetchJSON", ["fetch", "json", "fetchjson"]),
    ("FetchJson", ["fetch", "json", "fetchjson"]),
    ("HTTPServer", ["http", "server", "httpserver"]),
    ("parseXMLFile", ["pars", "xml", "file", "parsexmlfil"]),
    ("GitHub SQLite", ["git", "hub", "github", "sq", "lite", "sqlite"]),
    ("v2", ["v", "2", "v2"]),
    ("sha256sum", ["sha", "256", "sum", "sha256sum"]),
    ("x86_64", ["x", "86", "x86", "64"]),
    ("Fetch", ["fetch"]),
    ("URLs and IDs", ["url", "id"]),            # an acronym's plural "s" stays on it
    ("csv-to-parquet", ["csv", "parquet"]),      # "to" is a stop word
    ("a.b/c:d,e", ["b", "c", "d", "e"]),         # "a" is a stop word
    ("naïveBayes", ["naïv", "bay", "naïvebay"]),  # unicode letters and their case
    ("Größe", ["größe"]),
    ("数据2处理", ["数据", "2", "处理", "数据2处理"]),  # letters without case: digits only
    ("\ufb01le", ["file"]),                       # NFKC: the ligature "fi"
    ("don't touch the user's files", ["touch", "user", "file"]),
    ("Resizing images", ["resiz", "imag"]),
    ("", []),
    ("the and of", []),
])
def test_tokens(text, expected):
    assert tokens(text) == expected


def test_identifiers_match_words_and_whole():
    docs = [("clone", {"name": "clone_repo", "doc": "Clones a GitHub repository."}),
            ("sql", {"name": "sql_query", "doc": "Runs a query on SQLite."})]
    index = Index(docs)
    for query, expected in [("github", "clone"), ("git hub", "clone"), ("GitHub", "clone"),
                            ("sqlite", "sql"), ("SQLite", "sql"), ("clone repo", "clone"),
                            ("cloneRepo", "clone"), ("SqlQuery", "sql")]:
        assert index.search(query)[0][0] == expected, query


def test_tokens_stems_word_forms_alike():
    assert tokens("download downloads downloaded downloading") == ["download"] * 4


def test_tokens_rejects_non_str():
    with pytest.raises(TypeError, match="str"):
        tokens(b"bytes")


# --- the index -----------------------------------------------------------------

def test_empty_corpus_finds_nothing():
    assert Index([]).search("anything") == []


def test_corpus_without_terms_finds_nothing():
    assert Index([("a", {"name": "the"}), ("b", {"description": ""})]).search("the a") == []


def test_query_without_known_terms_finds_nothing(index):
    assert index.search("xylophone zebra") == []
    assert index.search("the of and") == []
    assert index.search("   ") == []


def test_only_matching_items_are_returned(index):
    found = index.search("protein", limit=30)
    assert {key for key, _ in found} == {"run_blast", "parse_pdb", "translate_dna"}
    assert all(score > 0 for _, score in found)


def test_limit(index):
    assert len(index.search("file", limit=30)) > 3
    assert len(index.search("file", limit=3)) == 3
    assert index.search("file", limit=1) == index.search("file", limit=30)[:1]
    for bad in (0, -1):
        with pytest.raises(ValueError, match="positive int"):
            index.search("file", limit=bad)
    for bad in (1.5, "3", True, None):
        with pytest.raises(TypeError, match="positive int"):
            index.search("file", limit=bad)


def test_query_must_be_str(index):
    with pytest.raises(TypeError, match="query"):
        index.search(None)


def test_deterministic_and_ties_by_key():
    same = {"name": "zip_folder", "description": "Zip a folder."}
    docs = [("c", same), ("a", same), ("b", same), ("d", {"name": "unrelated"})]
    found = Index(docs).search("zip")
    assert [key for key, _ in found] == ["a", "b", "c"]
    assert len({score for _, score in found}) == 1
    assert Index(docs).search("zip") == found
    assert Index(list(reversed(docs))).search("zip") == found


def test_same_results_every_time(index):
    runs = [[index.search(q) for q, _ in QUERIES] for _ in range(2)]
    assert runs[0] == runs[1] == [Index(CORPUS).search(q) for q, _ in QUERIES]


def test_name_weighs_more_than_a_mention_in_a_long_docstring():
    long_doc = ("Walks the tree of folders, reads every file and collects its size, owner "
                "and modification time; the results can be written to a report, for example "
                "with the histogram helper or as a table. " * 3)
    docs = [("inventory", {"name": "folder_inventory", "description": "List what a folder holds.",
                           "doc": long_doc}),
            ("hist", {"name": "histogram", "description": "Count values into bins.",
                      "doc": "Equal-width bins between the smallest and largest value."})]
    assert [key for key, _ in Index(docs).search("histogram")] == ["hist", "inventory"]


def test_fields_may_be_none_but_not_other_types():
    assert Index([("a", {"name": "fetch_json", "doc": None})]).search("json")[0][0] == "a"
    with pytest.raises(TypeError, match="'doc' of 'a'"):
        Index([("a", {"name": "fetch_json", "doc": 3})])
    with pytest.raises(TypeError, match="key"):
        Index([(1, {"name": "x"})])


def test_duplicate_keys_are_refused():
    with pytest.raises(ValueError, match="duplicate Index keys: a"):
        Index([("a", {"name": "x"}), ("b", {"name": "y"}), ("a", {"name": "z"})])


def test_construction_is_cheap():
    # Callers rebuild the index when their items change: hundreds of items in
    # well under a second even on a loaded machine (a few ms when idle).
    import time
    docs = [(f"{key}_{i}", fields) for i in range(10) for key, fields in CORPUS]
    Index(docs)  # bm25s imported, analyzer caches filled
    start = time.perf_counter()
    Index(docs)
    assert time.perf_counter() - start < 0.5


# --- embeddings ----------------------------------------------------------------

# sentence-transformers is not installed here (nor a dependency of torpor);
# this deterministic stand-in goes through the same ``encode(list[str]) ->
# array (n, d)`` interface: each word hashed into one of 64 dimensions, with a
# hand-written "meaning" for a few words so that the embedding can find what
# BM25 cannot (no word in common).
class HashingEmbedder:
    DIM = 64
    SAME_MEANING = {"picture": "image", "pictures": "image", "images": "image"}

    def __init__(self):
        self.calls = []

    def encode(self, sentences):
        self.calls.append(list(sentences))
        out = np.zeros((len(sentences), self.DIM))
        for row, sentence in enumerate(sentences):
            for word in sentence.lower().replace(".", " ").split():
                word = self.SAME_MEANING.get(word, word)
                out[row, hashlib.sha256(word.encode()).digest()[0] % self.DIM] += 1.0
        return out


def test_embedder_finds_what_bm25_cannot():
    docs = [("img", {"name": "resize_image", "description": "Resize an image."}),
            ("csv", {"name": "csv_to_parquet", "description": "Convert a CSV file."})]
    assert Index(docs).search("picture") == []
    found = Index(docs, embedder=HashingEmbedder()).search("picture")
    # "resize image resize an image" against "image": cosine 2/3, BM25 part 0.
    assert found[0] == ("img", pytest.approx(search.EMBEDDING_WEIGHT * 2 / 3))


def test_blend_is_the_documented_weighted_sum():
    embedder = HashingEmbedder()
    blended = Index(CORPUS, embedder=embedder)
    plain = Index(CORPUS)
    query = "shrink a photo to thumbnail size"
    bm25 = dict(plain.search(query, limit=30))
    best = max(bm25.values())
    vectors = embedder.encode([search._embedding_text(fields) for _, fields in CORPUS])
    qv = embedder.encode([query])[0]
    cosine = vectors @ qv / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(qv))
    expected = {key: search.BM25_WEIGHT * bm25.get(key, 0.0) / best
                + search.EMBEDDING_WEIGHT * max(float(c), 0.0)
                for (key, _), c in zip(CORPUS, cosine)}
    found = dict(blended.search(query, limit=30))
    assert found == pytest.approx({k: v for k, v in expected.items() if v > 0})
    assert blended.search(query, limit=1)[0][0] == "resize_image"


def test_item_embeddings_are_computed_once():
    embedder = HashingEmbedder()
    index = Index(CORPUS, embedder=embedder)
    assert embedder.calls == []                      # construction stays cheap
    index.search("json")
    index.search("image")
    assert [len(call) for call in embedder.calls] == [30, 1, 1]


def test_blended_search_is_deterministic():
    first, second = (Index(CORPUS, embedder=HashingEmbedder()) for _ in range(2))
    assert [first.search(q) for q, _ in QUERIES] == [second.search(q) for q, _ in QUERIES]


def test_embedder_of_the_wrong_shape_is_reported():
    class Bad:
        def encode(self, sentences):
            return np.zeros(len(sentences))
    with pytest.raises(ValueError, match="encode"):
        Index(CORPUS, embedder=Bad()).search("json")


# --- load_embedder ---------------------------------------------------------------

def test_load_embedder_without_a_model_is_none(monkeypatch):
    monkeypatch.delenv(search.EMBEDDING_MODEL_ENV, raising=False)
    assert load_embedder() is None


def test_load_embedder_without_sentence_transformers_is_none(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    assert load_embedder(str(tmp_path)) is None
    monkeypatch.setenv(search.EMBEDDING_MODEL_ENV, str(tmp_path))
    assert load_embedder() is None


class FakeSentenceTransformers:
    """Stands in for the sentence_transformers module: records how it is called."""

    def __init__(self):
        self.loaded = []
        fake = self

        class SentenceTransformer:
            def __init__(self, path, **kwargs):
                fake.loaded.append((path, kwargs))

        self.SentenceTransformer = SentenceTransformer


def test_load_embedder_opens_a_local_folder_offline(monkeypatch, tmp_path):
    fake = FakeSentenceTransformers()
    monkeypatch.setitem(sys.modules, "sentence_transformers", fake)
    monkeypatch.delenv(search.EMBEDDING_MODEL_ENV, raising=False)
    assert load_embedder() is None and fake.loaded == []
    assert isinstance(load_embedder(str(tmp_path)), fake.SentenceTransformer)
    monkeypatch.setenv(search.EMBEDDING_MODEL_ENV, str(tmp_path))
    assert isinstance(load_embedder(), fake.SentenceTransformer)
    assert fake.loaded == [(str(tmp_path), {"local_files_only": True})] * 2


def test_load_embedder_never_passes_on_a_hub_name(monkeypatch):
    fake = FakeSentenceTransformers()
    monkeypatch.setitem(sys.modules, "sentence_transformers", fake)
    with pytest.warns(RuntimeWarning, match="not a local folder"):
        assert load_embedder("sentence-transformers/all-MiniLM-L6-v2") is None
    assert fake.loaded == []
