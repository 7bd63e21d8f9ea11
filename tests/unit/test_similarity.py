"""The dataset map's projection and neighbours, and the diversity figures: known inputs, known outputs."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import scipy.sparse as sp

from pipeline.core import similarity as sim
from pipeline.stages.review.diversity import PersonaText, diversity_figures, identity_curves


def test_tfidf_rows_are_unit_length_and_rare_words_weigh_more() -> None:
    matrix = sim.tfidf(["cat dog", "cat fish", "cat cat dog", ""])
    dense = np.asarray(matrix.todense())
    assert np.allclose(np.linalg.norm(dense[:3], axis=1), 1.0)
    assert not dense[3].any()  # an empty text is a zero row
    row = dense[1]  # "cat fish": cat is in 3 texts, fish in 1 -> fish weighs more
    weights = sorted(row[row > 0])
    assert len(weights) == 2 and weights[1] > weights[0]


def test_two_topics_land_apart_on_the_bio_map() -> None:
    sea = [f"surfer who loves the sea waves beach ocean {i}" for i in range(10)]
    farm = [f"farmer with cows tractor fields harvest {i}" for i in range(10)]
    points = sim.project_2d(sim.bio_vectors(sea + farm))
    assert points.shape == (20, 2)
    a, b = points[:10].mean(axis=0), points[10:].mean(axis=0)
    spread = max(points[:10].std(axis=0).max(), points[10:].std(axis=0).max())
    assert np.linalg.norm(a - b) > 4 * spread  # two tight clusters, far apart


TOPICS = {
    "sea": "surf waves beach ocean sailing boats fishing harbour coast diving",
    "farm": "cows tractor fields harvest barn wheat chickens soil orchard vineyard",
    "code": "software python startup cloud servers laptop data apps algorithms robots",
}
FILLER = "i am a person who loves life my family friends the city coffee weekends music food and in of"


def _template_bios(per_topic: int) -> tuple[list[str], np.ndarray]:
    """Bios as a model writes them for one task: mostly the same template and filler words, an age and one of
    twenty cities, and a few topic words (three of ten), so a topic shows only against what every bio shares."""
    rng = np.random.default_rng(7)
    cities = [f"{a}{b}" for a in ("Porto", "Lis", "Bra", "Fa") for b in ("bon", "ga", "ro", "mar", "vale")]
    texts, labels = [], []
    for label, topic in enumerate(TOPICS.values()):
        for i in range(per_topic):
            picked = " and ".join(rng.choice(topic.split(), 3, replace=False))
            texts.append(f"Hi, I am a {20 + i % 40}-year-old living in {rng.choice(cities)} with my family and "
                         f"friends. I love good coffee, long walks and weekends away. Passionate about {picked}. "
                         f"Always learning, always smiling! #life #love")
            labels.append(label)
    return texts, np.array(labels)


def _topics_apart(points: np.ndarray, labels: np.ndarray) -> float:
    """The smallest distance between two topics' centres over the largest spread within a topic."""
    centres = [points[labels == k].mean(axis=0) for k in range(len(TOPICS))]
    spread = max(float(np.linalg.norm(points[labels == k] - centres[k], axis=1).mean()) for k in range(len(TOPICS)))
    gap = min(float(np.linalg.norm(a - b)) for i, a in enumerate(centres) for b in centres[i + 1 :])
    return gap / spread


def _nearest_share_of_same_topic(vectors: np.ndarray | sp.csr_matrix, labels: np.ndarray, k: int = 5) -> float:
    return float(np.mean([labels[j] == labels[i] for i in range(len(labels)) for j, _ in sim.nearest(vectors, i, k)]))


def test_bio_terms_are_each_words_hash_and_count_whatever_the_other_bios() -> None:
    stored = sim.bio_terms("Sea, sea and SURF!")
    records = np.frombuffer(stored, dtype=sim.TERM_RECORD)
    expected = sorted((zlib.crc32(w.encode()), n) for w, n in (("sea", 2), ("and", 1), ("surf", 1)))
    assert [(int(t), int(n)) for t, n in records] == expected  # hash order, counts
    assert len(stored) == 3 * 6 and sim.valid_terms(stored)
    # little-endian CRC-32 then count, word by word: stored terms stay readable by every later version
    assert stored.hex() == "6d9bf507" "0100" "37c1c98b" "0200" "cca52cb3" "0100"
    assert sim.bio_terms("") == b"" and sim.valid_terms(b"") and not sim.valid_terms(None)
    assert not sim.valid_terms(stored[:-1])
    counts = sim.term_counts([sim.bio_terms("sea surf"), b"", sim.bio_terms("surf farm farm")])
    assert counts.shape == (3, 3) and counts.sum(axis=1).ravel().tolist() == [[2.0, 0.0, 3.0]]
    # the same text gives the same vector from its stored terms as from the text itself
    texts, _ = _template_bios(10)
    assert np.allclose(sim.term_vectors([sim.bio_terms(t) for t in texts], 8), sim.bio_vectors(texts, 8))


def test_stored_terms_place_similar_bios_together_on_the_map() -> None:
    texts, labels = _template_bios(40)
    terms = [sim.bio_terms(t) for t in texts]
    rows = sim.tfidf_of_counts(sim.term_counts(terms))  # what "similar personas" compares
    assert _nearest_share_of_same_topic(rows, labels) > 0.85  # a persona's nearest are of its topic
    assert _topics_apart(sim.project_2d(sim.term_vectors(terms, 16)), labels) > 5  # three clusters, far apart


def test_similar_bios_among_many_small_topics_are_found() -> None:
    """Forty topics of thirty words, three words each in bios of filler: a few LSA dimensions cannot hold them
    (64 found 61% of the nearest in the persona's topic), the TF-IDF rows can."""
    rng = np.random.default_rng(5)
    filler = FILLER.split()
    texts, labels = [], []
    for k in range(40):
        for _ in range(15):
            topic = rng.choice([f"t{k}word{i}" for i in range(30)], 3, replace=False)
            texts.append(" ".join([*rng.choice(filler, 30), *topic]))
            labels.append(k)
    rows = sim.tfidf_of_counts(sim.term_counts([sim.bio_terms(t) for t in texts]))
    found = [np.array(labels)[j] == labels[i] for i in range(0, 600, 6) for j, _ in sim.nearest(rows, i, 5)]
    assert np.mean(found) > 0.7


def test_a_large_view_is_reduced_by_directions_fitted_on_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    texts, labels = _template_bios(40)
    terms = [sim.bio_terms(t) for t in texts]
    monkeypatch.setattr(sim, "FIT_LIMIT", 45)  # 45 of the 120 bios find the directions; all are projected
    points = sim.project_2d(sim.term_vectors(terms, 16))
    assert points.shape == (120, 2) and _topics_apart(points, labels) > 1.5


def test_projection_of_points_on_a_line_keeps_their_order_and_distances() -> None:
    line = np.array([[t, 2 * t, 0.0] for t in (0.0, 1.0, 2.0, 5.0)])
    points = sim.project_2d(line)
    assert np.allclose(points[:, 1], 0.0, atol=1e-9)  # one direction of variance only
    xs = points[:, 0]
    assert np.allclose(np.abs(np.diff(xs)), np.array([1.0, 1.0, 3.0]) * math.sqrt(5))
    assert np.array_equal(sim.project_2d(line), points)  # deterministic, signs fixed


def test_projection_of_nothing_or_one_point() -> None:
    assert sim.project_2d(np.zeros((0, 3))).shape == (0, 2)
    assert np.allclose(sim.project_2d(np.ones((1, 3))), 0.0)


def test_nearest_by_cosine_and_by_euclidean_distance() -> None:
    unit = np.array([[1.0, 0.0], [0.0, 1.0], [math.sqrt(0.5), math.sqrt(0.5)], [-1.0, 0.0]])
    assert [i for i, _ in sim.nearest(unit, 0, 2)] == [2, 1]
    assert sim.nearest(unit, 0, 1)[0][1] == pytest.approx(1 - math.sqrt(0.5), abs=1e-4)
    points = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    assert sim.nearest(points, 0, 5, metric="euclidean") == [(2, 1.0), (1, 5.0)]
    assert sim.nearest(points[:1], 0, 3) == []


def test_vendi_score_counts_effective_distinct_items() -> None:
    assert sim.vendi_score(np.eye(5)) == pytest.approx(5.0)
    assert sim.vendi_score(np.ones((5, 5))) == pytest.approx(1.0)
    two_groups = np.kron(np.eye(2), np.ones((3, 3)))  # two sets of three identical items
    assert sim.vendi_score(two_groups) == pytest.approx(2.0)


def test_distinct_n_and_unique_share() -> None:
    assert sim.distinct_n(["a b a b"], 1) == 0.5
    assert sim.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3, abs=1e-4)
    assert sim.distinct_n(["a"], 2) is None
    assert sim.unique_share(["Ana Silva", "ana  silva", "Rui Costa", "Eva Lima"]) == 0.75
    assert sim.unique_share([]) is None


def test_equal_error_rate_of_separated_and_overlapping_scores() -> None:
    separated = sim.equal_error_rate([0.1, 0.2, 0.3], [0.7, 0.8, 0.9])
    assert separated["rate"] == 0.0 and 0.3 <= separated["threshold"] < 0.7
    # same-person 0.1..0.4 and 0.8; different 0.5, 0.9, 1.0, 1.1: one mistake in five on each side
    overlap = sim.equal_error_rate([0.1, 0.2, 0.3, 0.4, 0.8], [0.5, 0.9, 1.0, 1.1, 0.35])
    assert overlap["rate"] == pytest.approx(0.2)


def test_histogram_bins_of_005_with_an_open_last_bin() -> None:
    hist = sim.histogram([0.0, 0.04, 0.05, 0.61, 5.0])
    assert hist["edges"][:3] == [0.0, 0.05, 0.1] and len(hist["counts"]) == 24
    assert hist["counts"][0] == 2 and hist["counts"][1] == 1 and hist["counts"][12] == 1 and hist["counts"][-1] == 1


def _face(angle: float, radius: float = 1.0) -> list[float]:
    return [radius * math.cos(angle), radius * math.sin(angle), 0.0]


def test_identity_curves_of_well_separated_faces() -> None:
    faces = [_face(0.0), _face(math.pi / 2), _face(math.pi)]  # base pairs 1.414, 2.0, 1.414 apart
    curves = identity_curves(faces, [0.2, 0.3, 0.35, 0.25], threshold=0.6)
    assert curves is not None
    assert curves["different_person"]["pairs"] == 3
    assert curves["different_pairs_above_threshold"]["value"] == 1.0
    assert curves["different_pairs_above_threshold"]["met"] is True
    assert curves["equal_error_rate"]["rate"] == 0.0
    assert sum(curves["same_person"]["histogram"]["counts"]) == 4
    assert identity_curves(faces[:1], [0.2], 0.6) is None  # one base: no different-person pair
    assert identity_curves(faces, [], 0.6) is None


def test_diversity_figures_of_a_small_task() -> None:
    people = [
        PersonaText("Ana", "Silva", "surfer in Lisbon", face=_face(0.0), same_person=[0.2, 0.3]),
        PersonaText("Ana", "Costa", "surfer in Lisbon", face=_face(math.pi / 2), same_person=[0.25]),
        PersonaText("Rui", "Silva", "baker who loves bread"),
        PersonaText("Rui", "Silva", "", face=None),
    ]
    out = diversity_figures(people)
    figures = out["figures"]
    assert out["personas"] == 4 and out["faces"] == 2
    assert figures["unique_names"]["value"] == 0.75
    assert figures["unique_first_names"]["value"] == 0.5
    assert figures["bio_distinct_1"]["value"] == pytest.approx(7 / 10)  # 7 distinct words of 10
    # two identical bios and one unrelated: eigenvalues 2/3 and 1/3, the pairs 0, 1, 1 apart
    entropy = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert figures["bio_vendi"]["value"] == pytest.approx(math.exp(entropy), abs=0.01)
    assert figures["bio_mean_distance"]["value"] == pytest.approx(2 / 3, abs=1e-3)
    # two faces sqrt(2) apart: similarity 2^-(1.414/0.6)^2, almost unrelated
    assert 1.9 < figures["face_vendi"]["value"] <= 2.0
    assert figures["face_mean_distance"]["value"] == pytest.approx(math.sqrt(2), abs=1e-3)
    assert out["identity"]["same_person"]["pairs"] == 3
    assert all(f["reading"] for f in figures.values())  # each says how to read it


def test_diversity_figures_of_no_personas() -> None:
    out = diversity_figures([])
    assert out["personas"] == 0 and "identity" not in out
    assert out["figures"]["unique_names"]["value"] is None
