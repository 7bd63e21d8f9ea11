"""How alike personas are, computed offline with numpy and scipy (nothing downloaded): bio vectors (TF-IDF
reduced by a truncated SVD, i.e. latent semantic analysis), 2-D projections for the dataset map, nearest
neighbours, and the diversity figures of a set (Vendi score, mean pairwise distance, distinct-n, unique names,
the identity check's verification curves).

A bio's words are counted once, at review time (``bio_terms``: each distinct word's hash and count, stored with
the persona); the map weighs the stored counts against the view's (TF-IDF) and reduces them when it draws.
Counts, not a fixed low-dimensional vector: TF-IDF needs the view's document frequencies, and only a basis fitted
to the view (the SVD) keeps its topics apart in a few dimensions; a random projection to 64 dimensions mixes a
vocabulary of thousands of words into noise.

Pure functions on arrays and texts: the review stage stores the terms and figures, the gallery draws the map.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

WORD = re.compile(r"[^\W_]+", re.UNICODE)  # letters and digits of any script; '#', '_' and '@' split words
MAX_VOCABULARY = 20_000  # the most frequent words kept: enough for bios, bounded for 10,000 personas
LSA_DIMENSIONS = 64  # components kept for neighbours and for the map's projection
FIT_LIMIT = 2_000  # the SVD's directions are fitted on at most this many rows (a seeded sample), all projected
TERM_RECORD = np.dtype([("term", "<u4"), ("count", "<u2")])  # one stored word: its CRC-32 and its count
SAMPLE_LIMIT = 2_000  # pairwise figures use at most this many personas (a seeded sample above it)
SAME_PERSON = 0.6  # dlib's usual same-person distance (pipeline.core.identity.Thresholds keeps the task's own)
DISTANCE_EDGES: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(25))  # 0.00 .. 1.20, as the review's


def words(text: str | None) -> list[str]:
    """The lower-cased words of a text."""
    return WORD.findall((text or "").lower())


# --- vectors --------------------------------------------------------------------------------------------------


def bio_terms(text: str | None) -> bytes:
    """A bio's words as stored with its persona (``generation_results.bio_terms``): one ``TERM_RECORD`` per
    distinct word, sorted by hash: the CRC-32 of its UTF-8 (the same in every process and version) and its count.
    A persona's terms depend on its own text only, so personas of different tasks are comparable."""
    hashes = np.fromiter((zlib.crc32(w.encode()) for w in words(text)), dtype=np.uint32)
    terms, counts = np.unique(hashes, return_counts=True)
    records = np.empty(len(terms), dtype=TERM_RECORD)
    records["term"], records["count"] = terms, np.minimum(counts, np.iinfo(np.uint16).max)
    return records.tobytes()


def valid_terms(stored: bytes | None) -> bool:
    """Whether ``stored`` reads as ``bio_terms`` (None: not computed yet)."""
    return stored is not None and len(stored) % TERM_RECORD.itemsize == 0


def term_counts(bags: Sequence[bytes]) -> sp.csr_matrix:
    """The word-count matrix of stored ``bio_terms``: a row per persona, a column per distinct word among them."""
    lengths = np.fromiter((len(b) // TERM_RECORD.itemsize for b in bags), dtype=np.int64, count=len(bags))
    records = np.frombuffer(b"".join(bags), dtype=TERM_RECORD)
    terms = np.unique(records["term"])
    columns = np.searchsorted(terms, records["term"])  # terms are sorted: each row's columns stay sorted
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return sp.csr_matrix((records["count"].astype(np.float64), columns, indptr),
                         shape=(len(bags), len(terms)))


def tfidf_of_counts(counts: sp.csr_matrix) -> sp.csr_matrix:
    """Rows of L2-normalised TF-IDF weights (sublinear term frequency, smoothed IDF) of a word-count matrix; an
    empty row stays zero. The vocabulary is the ``MAX_VOCABULARY`` words found in most rows."""
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    if counts.shape[1] > MAX_VOCABULARY:
        keep = np.sort(np.argsort(-df, kind="stable")[:MAX_VOCABULARY])
        counts, df = counts[:, keep], df[keep]
    matrix = counts.astype(np.float64)
    matrix.data = 1.0 + np.log(matrix.data)
    matrix = matrix @ sp.diags(np.log((1.0 + n) / (1.0 + df)) + 1.0)
    return _normalised_rows(matrix)


def tfidf(texts: Sequence[str]) -> sp.csr_matrix:
    """The TF-IDF rows of texts (``tfidf_of_counts`` of their ``bio_terms``)."""
    return tfidf_of_counts(term_counts([bio_terms(t) for t in texts]))


def _normalised_rows(matrix: sp.spmatrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ matrix)


def _orthonormal(block: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of a tall ``block``, from the eigendecomposition of its small Gram
    matrix (no QR of the tall matrix: on a busy machine that is most of the cost); near-null directions dropped."""
    values, vectors = np.linalg.eigh(block.T @ block)
    keep = values > max(values.max(initial=0.0), 1e-300) * 1e-10
    return np.asarray(block @ (vectors[:, keep] / np.sqrt(values[keep])))


def _right_singular_vectors(matrix: sp.spmatrix | np.ndarray, k: int, seed: int) -> np.ndarray:
    """The ``k`` leading right singular vectors, one per row (randomised SVD, Halko et al., with two power
    iterations; fewer where the matrix has fewer independent directions). Each one's sign is fixed (its largest
    loading positive) so the same data always gives the same picture. Only matrix products and
    eigendecompositions of small square matrices."""
    n, d = matrix.shape
    rng = np.random.default_rng(seed)
    block = np.asarray(matrix @ rng.standard_normal((d, min(d, n, k + 10))))
    for _ in range(2):
        q = _orthonormal(block)
        block = np.asarray(matrix @ np.asarray(matrix.T @ q))
    q = _orthonormal(block)
    small = np.asarray(matrix.T @ q).T  # columns of q x d
    values, vectors = np.linalg.eigh(small @ small.T)
    order = np.argsort(values)[::-1][:k]
    order = order[values[order] > max(values.max(initial=0.0), 1e-300) * 1e-12]
    vt = (vectors[:, order].T @ small) / np.sqrt(values[order])[:, None]
    signs = np.sign(vt[np.arange(len(order)), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    return np.asarray(vt * signs[:, None])


def truncated_svd(matrix: sp.spmatrix | np.ndarray, dimensions: int, seed: int = 0,
                  fit_limit: int | None = None) -> np.ndarray:
    """The rows projected on the ``dimensions`` leading right singular vectors (zero columns where there are
    fewer). ``fit_limit``: the directions are found from a seeded sample of at most that many rows, then every
    row is projected on them, so that a large view costs one more matrix product, not a larger SVD."""
    n, d = matrix.shape
    k = max(0, min(dimensions, n, d))
    if k == 0:
        return np.zeros((n, dimensions))
    fit = matrix
    if fit_limit is not None and n > fit_limit:
        fit = matrix[sample_indices(n, fit_limit, seed)]
    projected = np.asarray(matrix @ _right_singular_vectors(fit, k, seed).T)
    if projected.shape[1] < dimensions:
        projected = np.hstack([projected, np.zeros((n, dimensions - projected.shape[1]))])
    return projected


def _unit_rows(data: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(data, axis=1)
    norms[norms == 0] = 1.0
    return np.asarray(data / norms[:, None])


def term_vectors(bags: Sequence[bytes], dimensions: int = LSA_DIMENSIONS) -> np.ndarray:
    """Dense bio vectors of stored ``bio_terms`` (TF-IDF over these personas, reduced by a truncated SVD fitted
    on at most ``FIT_LIMIT`` of them), L2-normalised: a dot product is a cosine."""
    if not bags:
        return np.zeros((0, dimensions))
    return _unit_rows(truncated_svd(tfidf_of_counts(term_counts(bags)), dimensions, fit_limit=FIT_LIMIT))


def bio_vectors(texts: Sequence[str], dimensions: int = LSA_DIMENSIONS) -> np.ndarray:
    """Dense bio vectors of texts: ``term_vectors`` of their ``bio_terms``."""
    return term_vectors([bio_terms(t) for t in texts], dimensions)


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """The two principal components of the rows (centred; exact, from the eigendecomposition of their small
    covariance matrix), signs fixed (largest loading positive): the dataset map's x and y."""
    data = np.asarray(vectors, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] == 0:
        return np.zeros((0, 2))
    centred = data - data.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(values)[::-1][:2]
    order = order[values[order] > max(values.max(initial=0.0), 1e-300) * 1e-12]
    components = vectors[:, order]
    signs = np.sign(components[np.abs(components).argmax(axis=0), np.arange(len(order))])
    signs[signs == 0] = 1.0
    projected = centred @ (components * signs)
    return np.hstack([projected, np.zeros((data.shape[0], 2 - projected.shape[1]))])


def nearest(vectors: np.ndarray | sp.spmatrix, index: int, k: int, *, metric: str = "cosine") -> list[tuple[int, float]]:
    """The ``k`` rows nearest to row ``index`` (itself excluded), nearest first, each with its distance:
    ``cosine`` (1 - cosine similarity of normalised rows, dense or sparse: TF-IDF rows as they are) or
    ``euclidean`` (dense rows)."""
    if vectors.shape[0] < 2:
        return []
    if metric == "cosine" and sp.issparse(vectors):
        distances = 1.0 - np.asarray((vectors @ vectors[index].T).todense()).ravel()
    elif metric == "cosine":
        data = np.asarray(vectors, dtype=np.float64)
        distances = 1.0 - data @ data[index]
    else:
        data = np.asarray(vectors, dtype=np.float64)
        distances = np.linalg.norm(data - data[index], axis=1)
    distances[index] = np.inf
    order = np.argsort(distances, kind="stable")[: min(k, vectors.shape[0] - 1)]
    return [(int(i), round(float(distances[i]), 4)) for i in order]


# --- diversity ------------------------------------------------------------------------------------------------


def sample_indices(n: int, limit: int = SAMPLE_LIMIT, seed: int = 0) -> np.ndarray:
    """All of ``range(n)`` up to ``limit``, else a seeded sample of ``limit`` of them (sorted)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def pairwise_distances(vectors: np.ndarray) -> np.ndarray:
    """The Euclidean distance matrix of the rows."""
    data = np.asarray(vectors, dtype=np.float64)
    norms = (data**2).sum(axis=1)
    return np.sqrt(np.maximum(norms[:, None] + norms[None, :] - 2.0 * (data @ data.T), 0.0))


def upper_pairs(matrix: np.ndarray) -> np.ndarray:
    """The values above the diagonal: each unordered pair once."""
    return matrix[np.triu_indices(matrix.shape[0], k=1)]


def vendi_score(similarity: np.ndarray) -> float:
    """The Vendi score (Friedman & Dieng, 2023) of a similarity matrix with ones on its diagonal: the exponential
    of the Shannon entropy of the eigenvalues of K/n, the effective number of distinct items (1 when all are the
    same, n when all are unrelated)."""
    n = similarity.shape[0]
    if n == 0:
        return 0.0
    eigenvalues = np.linalg.eigvalsh(np.asarray(similarity, dtype=np.float64) / n)
    eigenvalues = eigenvalues[eigenvalues > 1e-12]
    return float(np.exp(-(eigenvalues * np.log(eigenvalues)).sum()))


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct-n (Li et al., 2016): distinct word n-grams over all n-grams of the texts; None without any."""
    total, seen = 0, set()
    for text in texts:
        tokens = words(text)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return round(len(seen) / total, 4) if total else None


def unique_share(values: Sequence[str]) -> float | None:
    """The share of distinct values (compared case-insensitively, spaces collapsed); None without any."""
    keys = [" ".join(v.casefold().split()) for v in values]
    return round(len(set(keys)) / len(keys), 4) if keys else None


def histogram(values: np.ndarray | Sequence[float]) -> dict[str, list[Any]]:
    """Counts in bins of 0.05 from 0 to 1.2 (the last bin takes everything above)."""
    data = np.asarray(values, dtype=np.float64)
    bins = np.clip((np.maximum(data, 0.0) / 0.05).astype(int), 0, len(DISTANCE_EDGES) - 2)
    counts = np.bincount(bins, minlength=len(DISTANCE_EDGES) - 1)
    return {"edges": list(DISTANCE_EDGES), "counts": [int(c) for c in counts]}


def equal_error_rate(same: np.ndarray | Sequence[float], different: np.ndarray | Sequence[float]) -> dict[str, float]:
    """Where a distance threshold rejects as many same-person pairs (above it) as it accepts different-person
    pairs (at or below it). Returns the rate and the threshold; both inputs must be non-empty."""
    same_sorted = np.sort(np.asarray(same, dtype=np.float64))
    diff_sorted = np.sort(np.asarray(different, dtype=np.float64))
    thresholds = np.unique(np.concatenate([same_sorted, diff_sorted, [0.0]]))
    false_reject = 1.0 - np.searchsorted(same_sorted, thresholds, side="right") / len(same_sorted)
    false_accept = np.searchsorted(diff_sorted, thresholds, side="right") / len(diff_sorted)
    best = int(np.argmin(np.abs(false_reject - false_accept)))
    return {
        "rate": round(float((false_reject[best] + false_accept[best]) / 2), 4),
        "threshold": round(float(thresholds[best]), 4),
    }
