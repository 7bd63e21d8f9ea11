"""The gallery's dataset map, its "similar personas" and its diversity figures (called by pages/gallery.py).

The map places the filtered personas by their bios or, where the identity check ran, their faces; a colour per
value of any facet; hovering shows the name (and a thumbnail on a map of at most ``MAP_THUMBNAILS`` personas);
clicking a point opens that persona below the map.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from pages import ui
from pipeline.core.errors import PipelineError
from pipeline.outputs import dataset_map
from pipeline.outputs.browse import GalleryFilter
from pipeline.submit.accounts import User
from pipeline.worker.runtime import Runtime

MAP_TTL_SECONDS = 600  # a view's map is computed once per version of its data, kept this long
TOOLTIP_FIELDS = ("name", "gender", "age", "ethnicity", "current_city", "task_id")


def _frame(rt: Runtime, table: pd.DataFrame, by: str, colour: str) -> pd.DataFrame:
    """What the chart sends to the browser: the placed points' id, x, y, colour and tooltip fields (and, for a
    small map, thumbnails), nothing else; every point travels in the page."""
    frame = table.loc[table[f"{by}_x"].notna(), list(dict.fromkeys(
        ["id", f"{by}_x", f"{by}_y", colour, *TOOLTIP_FIELDS, "thumb_uri"]))]
    frame = frame.rename(columns={f"{by}_x": "x", f"{by}_y": "y"})
    if len(table) <= dataset_map.MAP_THUMBNAILS:  # a larger map was read without thumbnails
        frame["image"] = [ui.data_uri(rt, uri) for uri in frame["thumb_uri"]]
    return frame.drop(columns=["thumb_uri"])


def _chart(frame: pd.DataFrame, colour: str, title: str) -> alt.Chart:
    pick = alt.selection_point(name="pick", fields=["id"], on="click", clear="dblclick")
    tooltip = [*TOOLTIP_FIELDS, *(["image"] if "image" in frame else [])]  # vega-tooltip draws "image" as a picture
    return (
        alt.Chart(frame)
        .mark_circle(size=60 if len(frame) < 2_000 else 18)
        .encode(
            x=alt.X("x:Q", axis=None),
            y=alt.Y("y:Q", axis=None),
            color=alt.Color(f"{colour}:N", legend=alt.Legend(title=title, orient="right", symbolLimit=20)),
            opacity=alt.condition(pick, alt.value(0.9), alt.value(0.35)),
            tooltip=tooltip,
        )
        .add_params(pick)
    )


@st.cache_data(ttl=MAP_TTL_SECONDS, max_entries=16, show_spinner="Placing the personas…")
def _map(db_url: str, user_id: int, params: tuple[tuple[str, str], ...], version: str,
         _rt: Runtime, _user: User) -> dataset_map.DatasetMap:
    """The view's map, computed once per version of its data: changing the colour or clicking a point (a rerun)
    does not place the personas again."""
    return dataset_map.dataset_map(_rt.db, _user, GalleryFilter.from_query_params(dict(params)))


def render_map(rt: Runtime, user: User, flt: GalleryFilter) -> int | None:
    """Draw the map of the view; returns the id of the persona clicked, if any."""
    try:
        version = dataset_map.view_version(rt.db, user, flt)
        found = _map(rt.settings.database_url, user.id, tuple(sorted(flt.to_query_params().items())), version,
                     rt, user)
    except PipelineError as exc:
        ui.show_error(exc)
        return None
    if found.table.empty:
        st.info("No persona matches this view.")
        return None
    left, right = st.columns(2)
    kinds = ["bios"] + (["faces"] if found.faces >= 2 else [])
    by = left.segmented_control("Place personas by", kinds, default="bios", key="g_map_by") or "bios"
    colour_label = right.selectbox("Colour by", list(dataset_map.COLOURS), key="g_map_colour")
    colour = dataset_map.COLOURS[colour_label]
    frame = _frame(rt, found.table, "face" if by == "faces" else "bio", colour)
    event: Any = st.altair_chart(_chart(frame, colour, colour_label).properties(height=520), width="stretch",
                                 key="g_map_chart", on_select="rerun", selection_mode="pick")
    notes = ["bios: TF-IDF of the four bios and the about text over the view, reduced by a truncated SVD, then its "
             "two principal components" if by == "bios" else "faces: the base selfies' face embeddings (identity check), their two "
             "principal components", "nearby points are alike; the axes have no unit"]
    if by == "bios" and found.faces < 2:
        notes.append("a face map needs the identity check (Settings)")
    if found.truncated:
        notes.append(f"the first {len(found.table):,} personas of the view")
    st.caption(" · ".join(notes))
    picked = (event.selection.get("pick") or []) if event is not None and hasattr(event, "selection") else []
    return int(picked[0]["id"]) if picked and "id" in picked[0] else None


def similar(rt: Runtime, user: User, result_id: int) -> None:
    """The personas of the same task nearest to this one, by face and by bio."""
    nearest = dataset_map.similar_personas(rt.db, user, result_id)
    st.markdown("**Similar personas**")
    for kind, label, unit in (("face", "by face", "face distance"), ("bio", "by bio", "bio distance")):
        entries = nearest[kind]
        if not entries:
            if kind == "face":
                st.caption("by face: the identity check did not measure this persona's face")
            continue
        st.caption(label)
        cols = st.columns(len(entries))
        for col, entry in zip(cols, entries, strict=True):
            source = ui.image_source(rt, entry["thumb_uri"])
            if source:
                col.image(source, width="stretch")
            col.caption(f"{ui.plain(entry['name'])} · #{entry['id']}"
                        f" · {unit} {entry['distance']:.2f}")


def diversity(rt: Runtime, user: User, task_ids: list[str]) -> None:
    """Each task's diversity figures (computed at review time), side by side, with how to read each."""
    figures = dataset_map.diversity_of(rt.db, user, task_ids)
    if not figures:
        st.caption("Diversity figures: none yet (computed when a task finishes; older tasks have none).")
        return
    st.markdown("**Diversity** (computed when each task was reviewed)")
    keys = list(dict.fromkeys(k for f in figures.values() for k in (f.get("figures") or {})))
    readings = {k: next(f["figures"][k] for f in figures.values() if k in (f.get("figures") or {})) for k in keys}
    table = pd.DataFrame({tid: [(f.get("figures") or {}).get(k, {}).get("value") for k in keys]
                          for tid, f in figures.items()}, index=[readings[k]["label"] for k in keys])
    table["how to read it"] = [readings[k]["reading"] for k in keys]
    st.dataframe(table, width="stretch")
    for tid, f in figures.items():
        identity = f.get("identity")
        if not identity:
            continue
        eer, above = identity["equal_error_rate"], identity["different_pairs_above_threshold"]
        st.caption(f"{tid} · face verification: equal-error rate {eer['rate']:.1%} at distance {eer['threshold']}"
                   f" · {above['value']:.1%} of different-persona base pairs above {identity['threshold']} "
                   f"(goal ≥ {above['goal']:.0%})")
        same, other = identity["same_person"]["histogram"], identity["different_person"]["histogram"]
        hist = pd.DataFrame({"same person": same["counts"], "different persons": other["counts"]},
                            index=[f"{e:.2f}" for e in same["edges"][:-1]])
        st.bar_chart(hist / hist.sum().replace(0, 1), height=180, stack=False, x_label="face distance",
                     y_label="share of pairs")
