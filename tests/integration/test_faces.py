"""FaceLibrary over a local folder and over S3 (moto server, real HTTP)."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from pipeline.core.config import Settings
from pipeline.core.errors import ConfigError, StorageError
from pipeline.storage import LocalStorage
from pipeline.storage.faces import FaceLibrary, FaceLibraryExhausted, clear_library_cache, folder_for_gender
from pipeline.storage.s3 import S3Storage
from tests.fakes.s3 import moto_s3, seed_objects, unique_bucket  # noqa: F401

MALE = [f"male/m{i}.jpg" for i in range(4)]
FEMALE = [f"female/f{i}.png" for i in range(3)]


@pytest.fixture(autouse=True)
def _fresh_library_cache() -> None:
    clear_library_cache()


@pytest.fixture
def face_dir(tmp_path: Path) -> Path:
    root = tmp_path / "faces"
    for ref in [*MALE, *FEMALE, "female/sub/f9.webp", "male/M5.JPEG"]:
        path = root / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"bytes of {ref}".encode())
    # not faces: other files, hidden files, images outside the two folders
    (root / "male" / "notes.txt").write_text("x")
    (root / "female" / ".DS_Store").write_text("x")
    (root / "stray.jpg").write_bytes(b"x")
    return root


def settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def draws(library: FaceLibrary, gender: str | None, *, lock: bool, n: int = 200, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [library.pick(gender, rng, gender_lock=lock, exclude=set()) for _ in range(n)]


def test_from_settings_local_folder_and_file_url(face_dir: Path) -> None:
    assert FaceLibrary.from_settings(settings(faces_url=None)) is None
    assert FaceLibrary.from_settings(settings(faces_url="  ")) is None

    library = FaceLibrary.from_settings(settings(faces_url=str(face_dir)))
    assert library is not None
    assert library.counts() == {"male": 5, "female": 4}
    assert library.faces("male") == (*sorted(["male/M5.JPEG", *MALE]),)
    assert FaceLibrary.from_settings(settings(faces_url=str(face_dir))) is library  # shared: listed once

    via_url = FaceLibrary.from_settings(settings(faces_url=f"file://{face_dir}"))
    assert via_url is not None
    assert via_url.counts() == {"male": 5, "female": 4}
    assert via_url.read("female/sub/f9.webp") == b"bytes of female/sub/f9.webp"

    with pytest.raises(ConfigError, match="FACES_URL"):
        FaceLibrary.from_settings(settings(faces_url=str(face_dir / "missing")))
    with pytest.raises(ConfigError, match="FACES_URL"):
        FaceLibrary.from_settings(settings(faces_url="ftp://host/faces"))


def test_gender_lock(face_dir: Path) -> None:
    library = FaceLibrary(LocalStorage(face_dir))
    male, female = set(library.faces("male")), set(library.faces("female"))

    assert set(draws(library, "m", lock=True)) == male  # every male face is reachable, nothing else
    assert set(draws(library, "f", lock=True)) == female
    assert set(draws(library, "male", lock=True)) <= male
    assert set(draws(library, "F", lock=True)) <= female

    # without the lock a man may get any face
    assert set(draws(library, "m", lock=False)) == male | female


@pytest.mark.parametrize("gender", ["nb", "other", "x", "", None])
def test_non_binary_or_unknown_gender_uses_both_folders(face_dir: Path, gender: str | None) -> None:
    library = FaceLibrary(LocalStorage(face_dir))
    assert folder_for_gender(gender) is None
    picked = draws(library, gender, lock=True)
    # deliberately both folders: 'nb' is never mapped to female (or to male)
    assert {ref.split("/")[0] for ref in picked} == {"male", "female"}


def test_deterministic_for_a_given_rng(face_dir: Path) -> None:
    library = FaceLibrary(LocalStorage(face_dir))
    assert draws(library, "f", lock=True, seed=7) == draws(library, "f", lock=True, seed=7)
    assert draws(library, None, lock=False, seed=7) == draws(library, None, lock=False, seed=7)
    assert draws(library, None, lock=False, seed=7) != draws(library, None, lock=False, seed=8)


def test_excluded_refs_and_exhaustion(face_dir: Path) -> None:
    library = FaceLibrary(LocalStorage(face_dir))
    males = list(library.faces("male"))
    rng = random.Random(3)
    assert library.pick("m", rng, gender_lock=True, exclude=set(males[1:])) == males[0]
    for _ in range(20):
        assert library.pick("m", rng, gender_lock=False, exclude=set(males)) not in males

    with pytest.raises(FaceLibraryExhausted, match="no male faces left to try") as info:
        library.pick("m", rng, gender_lock=True, exclude=set(males))
    assert isinstance(info.value, ConfigError)

    everything = set(males) | set(library.faces("female"))
    with pytest.raises(ConfigError, match="left to try"):
        library.pick("nb", rng, gender_lock=True, exclude=everything)

    # the image stage's refusal loop: three different faces
    tried: set[str] = set()
    for _ in range(3):
        tried.add(library.pick("f", rng, gender_lock=True, exclude=tried))
    assert len(tried) == 3 and all(ref.startswith("female/") for ref in tried)


def test_empty_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "male").mkdir()
    (tmp_path / "male" / "a.jpg").write_bytes(b"a")
    library = FaceLibrary(LocalStorage(tmp_path))
    assert library.counts() == {"male": 1, "female": 0}
    with pytest.raises(FaceLibraryExhausted, match="has no female faces"):
        library.pick("f", random.Random(0), gender_lock=True, exclude=set())
    assert library.pick("f", random.Random(0), gender_lock=False, exclude=set()) == "male/a.jpg"


def test_read_rejects_non_references(face_dir: Path) -> None:
    library = FaceLibrary(LocalStorage(face_dir))
    assert library.read(MALE[0]) == f"bytes of {MALE[0]}".encode()
    for bad in ("stray.jpg", "male/../stray.jpg", "/etc/passwd", "male/"):
        with pytest.raises(StorageError):
            library.read(bad)


class CountingSource:
    def __init__(self, inner: LocalStorage):
        self.inner = inner
        self.list_calls = 0
        self._lock = threading.Lock()

    def list_keys(self, prefix: str) -> list[str]:
        with self._lock:
            self.list_calls += 1
        return self.inner.list_keys(prefix)

    def get(self, uri: str) -> bytes:
        return self.inner.get(uri)


def test_listing_is_lazy_cached_and_thread_safe(face_dir: Path) -> None:
    source = CountingSource(LocalStorage(face_dir))
    library = FaceLibrary(source)
    assert source.list_calls == 0  # nothing listed before first use

    results: list[dict[str, int]] = []
    barrier = threading.Barrier(12)

    def use() -> None:
        barrier.wait()
        results.append(library.counts())

    threads = [threading.Thread(target=use) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [{"male": 5, "female": 4}] * 12
    assert source.list_calls == 2  # one listing per folder, once

    (face_dir / "male" / "new.jpg").write_bytes(b"n")
    assert library.counts()["male"] == 5  # cached
    library.refresh()
    assert library.counts()["male"] == 6
    assert source.list_calls == 4


def test_s3_library_beyond_1000_faces(moto_s3: str) -> None:  # noqa: F811
    bucket = unique_bucket(moto_s3, "faces")
    males = [f"faces/male/face_{i:04d}.jpg" for i in range(1203)]
    females = [f"faces/female/face_{i:04d}.jpeg" for i in range(4)]
    seed_objects(bucket, males + females)
    # decoys: outside the library prefix, and a non-image inside it
    seed_objects(bucket, ["other/male/x.jpg", "faces/male/readme.txt", "faces-old/female/y.jpg"])
    S3Storage(bucket, "faces", endpoint_url=moto_s3).put("female/uploaded.webp", b"RIFF-face")

    library = FaceLibrary.from_settings(settings(faces_url=f"s3://{bucket}/faces", s3_endpoint_url=moto_s3))
    assert library is not None
    assert isinstance(library.source, S3Storage)
    assert library.counts() == {"male": 1203, "female": 5}
    assert library.faces("male")[-1] == "male/face_1202.jpg"  # past the first page

    rng = random.Random(11)
    female_refs = {library.pick("f", rng, gender_lock=True, exclude=set()) for _ in range(100)}
    assert female_refs == set(library.faces("female"))
    assert library.read("female/uploaded.webp") == b"RIFF-face"
    ref = library.pick("nb", rng, gender_lock=True, exclude=set())
    assert ref.split("/")[0] in {"male", "female"}
    assert library.read(ref) == (b"RIFF-face" if ref.endswith(".webp") else b"x")

    with pytest.raises(StorageError, match="NoSuchKey"):
        library.read("male/missing.jpg")
