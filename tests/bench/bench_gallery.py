"""Gallery benchmarks: a filtered, sorted page, facet counts and a CSV export over 50,000 personas, each as a
ratio against a baseline measured in the same run (raw SQL through the DBAPI; plain pandas).

Run: ``.venv/bin/python -m tests.bench.bench_gallery [N]`` (SQLite; ``BENCH_DATABASE_URL`` for an empty,
migrated PostgreSQL database). Not part of the test command.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

import db.queries as q
from db.models import GenerationResult, GenerationTask, utcnow
from db.session import Database, migrate
from pipeline.exports import export_view
from pipeline.gallery import GalleryFilter, facet_counts, query_page
from pipeline.storage import MemoryStorage
from tests.bench.harness import BenchRow, best_of, machine, render

JOBS = ["Nurse", "Engineer", "Teacher", "Baker", "Driver", "Designer", "Farmer", "Chef"]
CITIES = [("Lisbon", "Lisboa"), ("Porto", "Porto"), ("Faro", "Algarve"), ("Braga", "Braga"), ("Évora", "Évora")]


def _seed(database: Database, n: int) -> list[str]:
    now = utcnow()
    with database.transaction() as session:
        user = q.insert_user(session, "bench@example.org", "x", "admin")
        task_ids = [f"bench{i:07d}" for i in range(5)]
        session.execute(
            sa.insert(GenerationTask),
            [
                {"task_id": t, "user_id": user.id, "persona_description": "bench", "bio_language": lang,
                 "number_to_generate": n // 5, "images_per_persona": 4, "status": "completed", "created_at": now,
                 "updated_at": now, "attempts": 0, "cancel_requested": False}
                for t, lang in zip(task_ids, ["English", "Portuguese", "French", "German", "Spanish"], strict=True)
            ],
        )
        pks = list(session.scalars(sa.select(GenerationTask.id).order_by(GenerationTask.id)))
    rows = []
    for i in range(n):
        city, state = CITIES[i % 5]
        rows.append({
            "task_id": pks[i % 5], "batch_number": i // 50 + 1, "slot": (i // 5) % 10, "firstname": f"Ana{i}",
            "lastname": f"Silva{i % 997}", "gender": "mf"[i % 2] if i % 11 else "nb", "ethnicity": ["White", "Black",
            "Asian", "Mixed"][i % 4], "age": 13 + (i * 7) % 80, "bio_facebook": f"Facebook bio number {i}. " * 4,
            "bio_instagram": "bike life", "bio_x": "pedal", "bio_tiktok": "go", "job_title": JOBS[(i // 2) % 8],
            "workplace": "Acme", "edu_establishment": "Uni", "edu_study": "CS", "current_city": city,
            "current_state": state, "prev_city": "Porto", "prev_state": "Porto", "about": f"About person {i}",
            "status": "completed", "favorite": i % 7 == 0, "tags": ["keep"] if i % 3 == 0 else [],
            "rating": i % 5 + 1, "images": [f"k/{i}/img{j:02d}.jpg" for j in range(4)], "image_count": 4,
            "base_image_url": f"k/{i}/base.png", "created_at": now, "updated_at": now, "attempts": 0,
        })
    with database.transaction() as session:
        for start in range(0, n, 5000):
            session.execute(sa.insert(GenerationResult), rows[start:start + 5000])
    return task_ids


PAGE_SQL = """
SELECT r.*, t.task_id AS task_code, t.bio_language FROM generation_results r JOIN generation_tasks t ON t.id = r.task_id
WHERE t.task_id IN (?, ?, ?) AND r.gender = 'f' AND r.age >= 20 AND r.age <= 60
  AND (lower(r.job_title) LIKE '%nurse%' OR lower(r.about) LIKE '%nurse%' OR lower(r.firstname) LIKE '%nurse%')
ORDER BY r.age IS NULL, r.age, r.id LIMIT 50 OFFSET 100
"""
COUNT_SQL = """
SELECT count(*) FROM generation_results r JOIN generation_tasks t ON t.id = r.task_id
WHERE t.task_id IN (?, ?, ?) AND r.gender = 'f' AND r.age >= 20 AND r.age <= 60
  AND (lower(r.job_title) LIKE '%nurse%' OR lower(r.about) LIKE '%nurse%' OR lower(r.firstname) LIKE '%nurse%')
"""


def bench_gallery(n: int = 50_000) -> list[BenchRow]:
    out: list[BenchRow] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{Path(tmp) / 'gallery.db'}"
        migrate(url)
        database = Database(url)
        task_ids = _seed(database, n)
        with database.session() as session:
            admin = q.get_user_by_email(session, "bench@example.org")
        assert admin is not None
        flt = GalleryFilter(task_ids=task_ids[:3], genders=["f"], age_min=20, age_max=60, text="nurse")
        page = query_page(database, admin, flt, sort="age", page=3)
        assert page.total > 0 and len(page.rows) == 50

        measured = best_of(lambda: query_page(database, admin, flt, sort="age", page=3))
        if database.dialect == "sqlite":
            raw = sqlite3.connect(url.removeprefix("sqlite:///"))

            def baseline() -> None:
                raw.execute(COUNT_SQL, task_ids[:3]).fetchone()
                raw.execute(PAGE_SQL, task_ids[:3]).fetchall()

            out.append(BenchRow(f"filtered page ({n} personas, sqlite)", measured, best_of(baseline), 3.0,
                                notes="query_page (11-field text search) vs raw sqlite3 count+page on 3 fields"))

        import pandas as pd

        def pandas_facets() -> None:
            frame = pd.read_sql(
                sa.text("SELECT r.*, t.bio_language FROM generation_results r JOIN generation_tasks t "
                        "ON t.id = r.task_id WHERE t.task_id IN :ids").bindparams(sa.bindparam("ids", expanding=True)),
                database.engine, params={"ids": task_ids[:3]},
            )
            view = frame[(frame.gender == "f") & frame.age.between(20, 60)
                         & frame.job_title.str.lower().str.contains("nurse")]
            for column in ("gender", "ethnicity", "bio_language", "current_city", "current_state", "status"):
                view[column].value_counts().head(50)

        out.append(BenchRow(f"facet counts ({n} personas, {database.dialect})",
                            best_of(lambda: facet_counts(database, admin, flt), 3), best_of(pandas_facets, 3), 1.0,
                            notes="7 SQL facet queries vs load-into-pandas + value_counts"))

        storage = MemoryStorage()
        all_rows = GalleryFilter(task_ids=task_ids)
        target = Path(tmp) / "all.csv"
        start = time.perf_counter()
        export_view(database, storage, admin, all_rows, "csv", target)
        measured = time.perf_counter() - start

        def pandas_csv() -> None:
            frame = pd.read_sql(sa.text("SELECT r.*, t.task_id AS task_code, t.bio_language FROM generation_results r "
                                        "JOIN generation_tasks t ON t.id = r.task_id ORDER BY r.task_id, "
                                        "r.batch_number, r.slot, r.id"), database.engine)
            frame.to_csv(Path(tmp) / "pandas.csv", index=False, encoding="utf-8-sig")

        out.append(BenchRow(f"CSV export ({n} personas, {database.dialect})", measured, best_of(pandas_csv, 1), 2.0,
                            notes="streamed, neutralised CSV vs pandas read_sql + to_csv (all in memory)"))
        database.dispose()
    return out


if __name__ == "__main__":
    rows = bench_gallery(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
    print(f"Machine: {machine()}\n")
    print(render(rows))
