"""The image exports' read-ahead from a remote storage holds a bounded number of images, not a number of
personas: personas of many large images must not fill the app's memory while one is written."""

from __future__ import annotations

import threading
from contextlib import closing

from pipeline.outputs.exports.images import READ_AHEAD_IMAGES, read_images
from pipeline.storage import MemoryStorage

PERSONAS, VARIATIONS = 30, 20


class RemoteCountingStorage(MemoryStorage):
    """Memory storage that says it is remote (so reads go ahead on threads) and counts the reads done."""

    remote = True

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self._count_lock = threading.Lock()

    def get(self, uri: str) -> bytes:
        data = super().get(uri)
        with self._count_lock:
            self.reads += 1
        return data


def test_read_ahead_is_bounded_by_images_and_keeps_the_order() -> None:
    storage = RemoteCountingStorage()
    rows = []
    for n in range(PERSONAS):
        keys = [f"t/p{n}/img{i:02d}.jpg" for i in range(1 + VARIATIONS)]
        for key in keys:
            storage.put(key, b"\xff\xd8\xff" + key.encode())
        rows.append(({"persona_id": n, "base_image": keys[0], "images": keys[1:]}, {}))
    per_persona = 1 + VARIATIONS
    held_most = 0
    order = []
    with closing(read_images(rows, storage)) as personas:
        for record, _row, reads in personas:
            order.append(record["persona_id"])
            assert [data for _, _, _, data in reads] == [b"\xff\xd8\xff" + uri.encode() for _, _, uri, _ in reads]
            # reads done beyond the personas handed out so far: images held ahead of the writer
            held_most = max(held_most, storage.reads - len(order) * per_persona)
    assert order == list(range(PERSONAS))
    assert held_most <= READ_AHEAD_IMAGES, held_most
