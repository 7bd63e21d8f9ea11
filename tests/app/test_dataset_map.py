"""AppTests of the gallery's dataset map (pages/dataset_map.py through pages/gallery.py): the Map tab draws every
persona of the view, the detail view lists similar personas, and the Charts tab shows the diversity figures."""

from __future__ import annotations

import json

import pyarrow as pa
from streamlit.testing.v1 import AppTest

from tests.app.conftest import AppEnv
from tests.app.test_pages import ADMIN, completed_task, joined, page, run  # noqa: F401  (completed_task: a fixture)
from tests.factories import results_of


def _tab(name: str, **query: str) -> AppTest:
    at = page("gallery", ADMIN, **query)
    at.session_state["g_tab"] = name
    return run(at)


def test_the_map_tab_draws_the_views_personas(app_env: AppEnv, completed_task: str) -> None:  # noqa: F811
    at = _tab("Map")
    charts = at.get("vega_lite_chart")  # an altair chart
    assert len(charts) == 1
    spec = json.loads(charts[0].proto.spec)
    assert spec["params"][0]["name"] == "pick"  # a click selects a point
    points = pa.ipc.open_stream(charts[0].proto.datasets[0].data.data).read_all()
    assert points.num_rows == 6  # every persona of the view
    assert "image" in json.dumps(spec["encoding"]["tooltip"])  # hover thumbnails on a small map
    assert "TF-IDF" in joined(at.caption)
    assert "a face map needs the identity check" in joined(at.caption)  # offline: no face embeddings
    at.selectbox(key="g_map_colour").set_value("ethnicity")
    run(at)
    assert json.loads(at.get("vega_lite_chart")[0].proto.spec)["encoding"]["color"]["field"] == "ethnicity"


def test_the_map_sends_only_what_it_draws(app_env: AppEnv, completed_task: str) -> None:  # noqa: F811
    at = _tab("Map")
    at.selectbox(key="g_map_colour").set_value("language")
    run(at)
    chart = at.get("vega_lite_chart")[0]
    assert json.loads(chart.proto.spec)["encoding"]["color"]["field"] == "language"
    columns = set(pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().column_names)
    columns -= {c for c in columns if c.startswith("__index_level")}  # the frame's index
    drawn = {"id", "x", "y", "language", "name", "gender", "age", "ethnicity", "current_city", "task_id", "image"}
    assert columns == drawn  # no other facet, no other projection's coordinates, no storage key


def test_the_detail_view_lists_similar_personas_by_bio(app_env: AppEnv, completed_task: str) -> None:  # noqa: F811
    first = results_of(app_env.db, completed_task)[0]
    at = _tab("Cards")
    at.button(key=f"card_{first.id}").click()
    run(at)
    assert "**Similar personas**" in [m.value for m in at.markdown]
    captions = joined(at.caption)
    assert captions.count("bio distance") == 5  # the five nearest of the task's six personas
    assert f"#{first.id} ·" not in captions  # never itself
    assert "the identity check did not measure this persona's face" in captions


def test_the_charts_tab_shows_the_diversity_figures(app_env: AppEnv, completed_task: str) -> None:  # noqa: F811
    at = _tab("Charts")
    tables = [df.value for df in at.dataframe]
    [figures] = [t for t in tables if "how to read it" in t.columns]
    assert "Vendi score of bios" in figures.index and "unique full names" in figures.index
    assert figures.loc["unique full names", completed_task] == 1.0
