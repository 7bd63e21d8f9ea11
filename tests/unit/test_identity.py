"""The identity check on real pixels: dlib embeddings of a public-domain portrait, and the scoring rules."""

from __future__ import annotations

import pytest

from pipeline.core import identity as core_identity
from pipeline.core.identity import Thresholds
from pipeline.stages.review import identity
from pipeline.stages.review.identity import persona_record, review_identity, score_persona
from tests.fakes.faces import SAME_PERSON, astronaut, grid, jpeg, no_face_region

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def found() -> dict[str, dict]:
    face = astronaut()
    images = {"base": jpeg(face), "region": jpeg(no_face_region(face))}
    images |= {name: jpeg(transform(face)) for name, transform in SAME_PERSON.items()}
    results = identity.analyze_local(list(images.values()))
    return dict(zip(images, results, strict=True))


def test_the_base_portrait_has_exactly_one_face(found: dict[str, dict]) -> None:
    base = found["base"]
    assert base["faces"] == 1
    assert len(base["embedding"]) == 128
    left, top, right, bottom = base["box"]
    assert 150 < left < right < 300 and 50 < top < bottom < 200  # the astronaut's face, not her suit


@pytest.mark.parametrize("name", sorted(SAME_PERSON))
def test_same_person_variants_are_within_the_threshold(found: dict[str, dict], name: str) -> None:
    assert found[name]["faces"] == 1
    d = identity.distance(found[name]["embedding"], found["base"]["embedding"])
    assert d < Thresholds().same_person, f"{name}: {d:.3f}"


def test_a_region_without_a_face_fails(found: dict[str, dict]) -> None:
    assert found["region"]["faces"] == 0
    record = persona_record(found["base"], [found["flip"], found["region"]])
    flags, details, summary = score_persona(record, Thresholds())
    assert flags == [core_identity.FLAG_GRID_FACES]
    assert details[core_identity.FLAG_GRID_FACES] == [{"image": 1, "faces": 0}]
    assert summary["score"] == 0.5  # a variation without a face is not consistent


def test_a_far_face_is_inconsistent_and_the_worst_distance_is_reported(found: dict[str, dict]) -> None:
    record = persona_record(found["base"], [found["flip"], found["crop"]])
    record["images"][1]["distance"] = 0.78  # as measured between different people
    flags, details, summary = score_persona(record, Thresholds())
    assert flags == [core_identity.FLAG_INCONSISTENT]
    assert details[core_identity.FLAG_INCONSISTENT] == [{"image": 1, "distance": 0.78}]
    assert summary["score"] == 0.5 and summary["worst"] == 0.78


def test_each_quadrant_of_a_grid_holds_one_face() -> None:
    from pipeline.stages.images.imaging import process_grid

    face = astronaut()
    quadrants = [SAME_PERSON["flip"](face), face, SAME_PERSON["bright"](face), no_face_region(face)]
    images = process_grid(grid(quadrants), crop_borders=True, randomize=True, seed=3, persona_key="b1-s0",
                          first_index=0)
    faces = [r["faces"] for r in identity.analyze_local([im.data for im in images])]
    assert faces == [1, 1, 1, 0]


def test_no_face_in_the_base_is_said_not_scored() -> None:
    record = persona_record({"faces": 0}, [{"faces": 0}, {"faces": 0}])
    flags, _details, summary = score_persona(record, Thresholds())
    assert core_identity.FLAG_NO_FACE in flags
    assert summary["score"] is None and summary["worst"] is None


def test_several_faces_in_the_base_are_flagged() -> None:
    four = identity.analyze_local([grid([astronaut()] * 4)])[0]
    assert four["faces"] == 4
    flags, details, _ = score_persona(persona_record(four, []), Thresholds())
    assert flags == [core_identity.FLAG_SEVERAL_FACES] and details[core_identity.FLAG_SEVERAL_FACES] == 4


def test_unreadable_bytes_have_no_face_and_say_why() -> None:
    result = identity.analyze_local([b"not an image"])[0]
    assert result["faces"] == 0 and "unreadable" in result["error"]


def test_duplicates_and_leakage_across_a_task() -> None:
    base = [0.0] * 128
    near = [0.0] * 127 + [0.3]  # distance 0.3 from base: the same face
    far = [0.0] * 127 + [0.9]
    records = {
        1: persona_record({"faces": 1, "embedding": base}, [{"faces": 1, "embedding": near}]),
        2: persona_record({"faces": 1, "embedding": near}, [{"faces": 1, "embedding": near}],
                          reference={"faces": 1, "embedding": near}),
        3: persona_record({"faces": 1, "embedding": far}, [{"faces": 1, "embedding": far}],
                          reference={"faces": 1, "embedding": base}),
        4: None,  # completed but not analysed
    }
    result = review_identity(records, Thresholds(), expected=4)
    assert core_identity.FLAG_DUPLICATE in result.per_persona[1]["flags"]
    assert result.per_persona[1]["details"][core_identity.FLAG_DUPLICATE] == [{"with": 2, "distance": 0.3}]
    assert core_identity.FLAG_DUPLICATE not in result.per_persona[3]["flags"]
    assert result.per_persona[2]["identity"]["leakage_distance"] == 0.0
    assert core_identity.FLAG_LEAKAGE in result.per_persona[2]["flags"]
    assert core_identity.FLAG_LEAKAGE not in result.per_persona[3]["flags"]  # 0.9 from its library face
    summary = result.summary
    assert summary["personas_analysed"] == 3 and summary["personas_not_analysed"] == 1
    assert summary["duplicate_pairs"] == 1
    assert summary["flags"] == {core_identity.FLAG_DUPLICATE: 2, core_identity.FLAG_LEAKAGE: 1}
    assert sum(summary["histogram"]["counts"]) == 3
    assert summary["thresholds"] == Thresholds().as_dict()


def test_duplicate_pairs_match_a_brute_force_count() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    vectors = {i: (rng.normal(size=128) * 0.05).tolist() for i in range(700)}  # crosses a 512-row block
    threshold = 0.75
    pairs = {(a, b) for a, b, _ in identity.duplicate_pairs(vectors, threshold)}
    brute = {(a, b) for a in range(700) for b in range(a + 1, 700)
             if identity.distance(vectors[a], vectors[b]) < threshold}
    assert pairs == brute and pairs


def test_mode_auto_is_on_for_real_image_providers_only() -> None:
    assert core_identity.resolve_mode("auto", "openai") and not core_identity.resolve_mode("auto", "offline")
    assert core_identity.resolve_mode("on", "offline") and not core_identity.resolve_mode("off", "openai")
    snap = core_identity.snapshot(None, "openai")
    assert snap["enabled"] and snap["mode"] == "auto" and snap["thresholds"]["same_person"] == 0.6


def test_the_child_process_gives_the_same_answer_and_is_replaced_when_killed(found: dict[str, dict]) -> None:
    data = jpeg(astronaut())
    first = identity.analyze_images([data])[0]
    assert first["embedding"] == found["base"]["embedding"]
    child = identity.CHILD_POOL._idle[0]
    child.proc.kill()
    child.proc.wait()
    again = identity.analyze_images([data])[0]  # the dead child is replaced, the call succeeds
    assert again["embedding"] == first["embedding"]


def test_a_persona_without_a_face_is_reported_not_scored() -> None:
    """The offline renderer's drawn faces are mostly not faces to dlib: such a persona gets "no face", no score."""
    from pipeline.core.domain import PersonaDraft
    from pipeline.providers.offline_images import OfflineImageProvider

    provider = OfflineImageProvider(side=512)
    persona = PersonaDraft(firstname="Ana", lastname="Silva", gender="m", ethnicity="Black", age=30)
    base = provider.generate_base(persona, "a selfie", seed=1)
    grid_image = provider.make_grid(base, "at the beach", seed=2)
    results = identity.analyze_local([base, grid_image])
    assert results[0]["faces"] == 0
    flags, _, summary = score_persona(persona_record(results[0], results[1:]), Thresholds())
    assert core_identity.FLAG_NO_FACE in flags
    assert summary["score"] is None and summary["worst"] is None
