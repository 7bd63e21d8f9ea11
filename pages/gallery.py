"""Gallery: browse one or several tasks with server-side filters, sort and paging; curate; charts; downloads.

The filter lives in ``st.query_params``, so a view is a shareable URL. Nothing here loads a whole task:
``pipeline.outputs.browse`` filters, counts and pages in SQL, and the sidebar draws one widget per filter it
declares (``gallery.FILTERS``). A download is built once on the server (``pipeline.outputs.downloads``) and
saved by the browser through a short-lived link that ``app.py`` streams from disk.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

import pandas as pd
import streamlit as st

from pages import dataset_map, ui
from pipeline.core.errors import PipelineError
from pipeline.core.identity import IDENTITY_FLAGS, Thresholds
from pipeline.outputs import browse as gallery
from pipeline.outputs import downloads
from pipeline.outputs.exports import FORMATS
from pipeline.submit.task_control import task_status

DEFAULT_THRESHOLD = Thresholds().same_person
FACETS_TTL_SECONDS = 20  # a running task's new personas show in the facet counts within this
VALUE_LABELS = {"flags": ui.flag_label}  # how a filter's values read in its widget (default: as stored)
rt = ui.runtime()
user = ui.current_user(rt)
st.header("Gallery")

params = {key: st.query_params.get(key, "") for key in st.query_params}
flt = gallery.GalleryFilter.from_query_params(params)
choices = gallery.visible_task_choices(rt.db, user)
if not choices:
    st.info("No tasks to browse yet.")
    st.page_link("pages/new.py", label="New task", icon=":material/add_circle:")
    st.stop()
labels = {c["task_id"]: f"{c['task_id']} · {c['description']} ({c['personas']} personas, {c['status']})" for c in choices}
default_tasks = [t for t in flt.task_ids if t in labels] or [choices[0]["task_id"]]
flt.task_ids = st.multiselect("Tasks", list(labels), default=default_tasks, format_func=labels.__getitem__)
if not flt.task_ids:
    st.info("Pick at least one task.")
    st.stop()


@st.cache_data(ttl=FACETS_TTL_SECONDS, max_entries=256, show_spinner=False)
def _facet_counts(db_url: str, user_id: int, params: tuple[tuple[str, str], ...], _user: Any) -> dict[str, Any]:
    """Facet counts of a view, cached briefly (they are several grouped scans); cleared by this page's writes."""
    return gallery.facet_counts(rt.db, _user, gallery.GalleryFilter.from_query_params(dict(params)))


try:
    counts = _facet_counts(rt.settings.database_url, user.id, tuple(sorted(flt.to_query_params().items())), user)
except PipelineError as exc:
    ui.show_error(exc)
    st.stop()


def _facet(spec: gallery.FilterSpec, counts: dict[str, list[tuple[str, int]]], selected: list[str]) -> list[str]:
    """A multiselect over the facet's values, each with its count under the other filters."""
    key = spec.facet or spec.name
    options = [value for value, _ in counts.get(key, [])]
    numbers = dict(counts.get(key, []))
    options += [value for value in selected if value not in numbers]
    name = VALUE_LABELS.get(spec.name, str)
    return st.multiselect(spec.label, options, default=[v for v in selected if v in options],
                          format_func=lambda v: f"{name(v)} ({numbers.get(v, 0)})", key=f"g_{spec.url_key}")


def _within(spec: gallery.FilterSpec, value: int | None, default: int) -> int:
    """A number for the filter's slider: ``default`` when unset, else kept inside the slider's range."""
    low, high = spec.widget
    return default if value is None else min(max(value, low), high)


def _filter_widget(spec: gallery.FilterSpec, value: Any, counts: dict[str, list[tuple[str, int]]]) -> Any:
    """Draw one filter's widget (the declaration says which) and return the value it now holds."""
    low, high = spec.widget
    if spec.kind == "words":
        return st.text_input(spec.label, value=value, key=f"g_{spec.url_key}")
    if spec.kind in ("values", "any"):
        if spec.facet:
            return _facet(spec, counts, value)
        return st.multiselect(spec.label, list(spec.choices), default=value, key=f"g_{spec.url_key}")
    if spec.kind == "none":
        return st.checkbox(spec.label, value=value, key=f"g_{spec.url_key}", help=spec.help or None)
    if spec.kind == "yes_no":
        options = ["all", *spec.choices]
        index = 0 if value is None else (1 if value else 2)
        chosen = st.selectbox(spec.label, options, index=index, key=f"g_{spec.url_key}")
        return None if chosen == "all" else chosen == options[1]
    if spec.kind == "min":
        number = st.slider(spec.label, low, high, _within(spec, value, low), key=f"g_{spec.url_key}")
        return number if number > low else None
    if spec.kind == "max":
        number = st.slider(spec.label, low, high, _within(spec, value, high), key=f"g_{spec.url_key}")
        return number if number < high else None
    return value


# One widget per declared filter, in the declared order; a minimum and a maximum of the same column share one
# range slider.
ranges = {(s.column, s.kind): s for s in gallery.FILTERS if s.kind in ("min", "max")}
with st.sidebar:
    st.subheader("Filters")
    for spec in gallery.FILTERS:
        if spec.kind == "tasks" or (spec.kind == "max" and (spec.column, "min") in ranges):
            continue  # the tasks are picked above the view; a maximum is drawn with its minimum
        partner = ranges.get((spec.column, "max")) if spec.kind == "min" else None
        if partner is None:
            setattr(flt, spec.name, _filter_widget(spec, getattr(flt, spec.name), counts))
            continue
        low, high = spec.widget
        chosen = st.slider(spec.label, low, high, (_within(spec, getattr(flt, spec.name), low),
                                                   _within(partner, getattr(flt, partner.name), high)),
                           key=f"g_{spec.url_key}")
        setattr(flt, spec.name, chosen[0] if chosen[0] > low else None)
        setattr(flt, partner.name, chosen[1] if chosen[1] < high else None)

with st.sidebar:
    st.subheader("Saved views")
    views = dict(gallery.saved_views(rt.db, user))
    if views:
        chosen_view = st.selectbox("Open a saved view", ["—", *views], key="g_view")
        if chosen_view != "—" and st.button("Open", key="g_view_open", icon=":material/open_in_new:"):
            st.query_params.from_dict(views[chosen_view])
            for key in [k for k in st.session_state if str(k).startswith("g_")]:
                del st.session_state[key]
            st.rerun()
    view_name = st.text_input("Save this view as", key="g_view_name", max_chars=gallery.MAX_VIEW_NAME)
    if st.button("Save view", key="g_view_save", icon=":material/bookmark_add:"):
        try:
            gallery.save_view(rt.db, user, view_name, flt, {k: v for k, v in params.items() if k in ("sort", "desc")})
        except PipelineError as exc:
            ui.show_error(exc)
        else:
            st.toast(f"View {ui.plain(view_name)} saved", icon=":material/bookmark:")

sort_labels = list(gallery.SORTS)
c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
sort = c1.selectbox("Sort by", sort_labels, index=sort_labels.index(params.get("sort", sort_labels[0]))
                    if params.get("sort") in sort_labels else 0, key="g_sort")
descending = c2.toggle("Descending", value=params.get("desc") == "1", key="g_desc")
page_size = c3.selectbox("Per page", [24, 48, 96], index=[24, 48, 96].index(int(params["size"]))
                         if params.get("size") in ("24", "48", "96") else 0, key="g_size")
try:
    requested_page = max(1, int(params.get("page", "1")))
except ValueError:
    requested_page = 1
# One query for the page: query_page clamps the page number, and the widget shows the page actually served.
result = gallery.query_page(rt.db, user, flt, sort=sort, descending=descending,
                            page=int(st.session_state.get("g_page", requested_page)), page_size=page_size)
if "g_page" in st.session_state and st.session_state["g_page"] != result.page:
    st.session_state["g_page"] = result.page  # the filter shrank the view below the page last shown
page_value = {} if "g_page" in st.session_state else {"value": result.page}
page = c4.number_input(f"Page (of {max(1, result.pages)})", min_value=1, max_value=max(1, result.pages),
                       key="g_page", **page_value)

query = flt.to_query_params() | {"sort": sort, "size": str(page_size)}
if descending:
    query["desc"] = "1"
if page != 1:
    query["page"] = str(page)
if params.get("detail"):
    query["detail"] = params["detail"]
if {k: str(v) for k, v in query.items()} != params:
    st.query_params.from_dict(query)

matches = "1 persona matches" if result.total == 1 else f"{result.total:,} personas match"
st.caption(f"{matches} · page {result.page} of {max(1, result.pages)} · "
           "copy the address bar to share this view")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config snapshot as dotted keys (``toggles.crop_white_borders``), for comparing tasks."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): value}


def _faces(n: int | None) -> str:
    return "face check pending" if n is None else ("no face" if n == 0 else ("1 face" if n == 1 else f"{n} faces"))


def _image_identity(identity: dict[str, Any] | None, i: int) -> str:
    """`` · 0.21 ✓`` (distance to the base, within the threshold), `` · no face``, or nothing (not checked)."""
    if not identity:
        return ""
    faces = (identity.get("faces") or [])[i:i + 1]
    distance = (identity.get("distances") or [])[i:i + 1]
    if faces and faces[0] != 1:
        return f" · {_faces(faces[0])}"
    if distance and distance[0] is not None:
        within = distance[0] <= identity.get("threshold", DEFAULT_THRESHOLD)
        return f" · {distance[0]:.2f} {'✓' if within else '✗ someone else?'}"
    return ""


def _identity_note(identity: dict[str, Any] | None) -> None:
    if not identity:
        return
    if identity.get("score") is None:
        st.info("No face was found in the base selfie: identity is not scored." if identity.get("base_faces") == 0
                else "Identity is not scored for this persona.", icon=":material/face:")
        return
    threshold = identity.get("threshold", DEFAULT_THRESHOLD)
    st.caption(f"identity score {identity['score']:.0%} of variations within {threshold} · worst distance "
               f"{identity['worst']:.2f}" if identity.get("worst") is not None else "identity: no variation measured")
    if identity.get("leakage_distance") is not None:
        st.caption(f"distance to its face-library photo: {identity['leakage_distance']:.2f}")
    if identity.get("duplicates"):
        st.caption("same face as persona(s) " + ", ".join(f"#{d}" for d in identity["duplicates"][:10]))


def _detail(result_id: int) -> None:
    persona = gallery.get_persona(rt.db, user, result_id)
    if persona is None:
        st.warning("This persona is not available.")
        return
    # Model text: escaped wherever it meets markdown (ui.plain), shown as text (st.text) otherwise.
    st.subheader(ui.plain(f"{persona['firstname']} {persona['lastname']}"))
    st.caption(" · ".join(ui.plain(v) for v in (persona.get("gender"), persona.get("age") or "?",
                                                 persona.get("ethnicity") or "?", persona.get("job_title") or "?",
                                                 persona.get("current_city") or "?"))
               + f" · status {persona['status']}")
    if persona.get("error"):
        st.error(ui.plain(persona["error"]))
    identity = (persona.get("quality") or {}).get("identity")
    flags = persona.get("quality_flags") or []
    if flags:
        st.markdown(ui.flag_badges(flags))
    left, right = st.columns([1, 2])
    with left:
        base = ui.image_source(rt, persona.get("base_image_url"))
        if base:
            st.image(base, caption="base selfie" + (f" · {_faces(identity.get('base_faces'))}" if identity else ""))
        _identity_note(identity)
        # What the form's widgets were drawn with (kept while they live): a save writes only what changed since.
        drawn_key = f"drawn_{result_id}"
        if f"tags_{result_id}" not in st.session_state:
            st.session_state[drawn_key] = gallery.Curation.of(persona)
        fav = st.toggle("Favourite", value=bool(persona.get("favorite")), key=f"fav_{result_id}")
        tags_text = st.text_input("Tags (comma-separated)", value=", ".join(persona.get("tags") or []),
                                  key=f"tags_{result_id}")
        stars = st.feedback("stars", key=f"stars_{result_id}")
        if st.button("Save curation", key=f"save_{result_id}", icon=":material/save:"):
            drawn = st.session_state[drawn_key]
            edited = gallery.Curation(fav, tuple(t for t in tags_text.split(",") if t.strip()),
                                      drawn.rating if stars is None else int(stars) + 1)
            try:
                gallery.save_curation(rt.db, user, result_id, drawn, edited)
            except PipelineError as exc:
                ui.show_error(exc)
            else:
                st.session_state[drawn_key] = edited  # what the form shows from now on
                _facet_counts.clear()
                st.toast("Saved", icon=":material/check:")
        st.caption(f"rating: {persona.get('rating') or '—'}")
    with right:
        tabs = st.tabs(["Facebook", "Instagram", "X", "TikTok", "About"])
        for tab, key in zip(tabs, ["bio_facebook", "bio_instagram", "bio_x", "bio_tiktok", "about"], strict=True):
            tab.text(persona.get(key) or "—")  # LLM text is shown as text, never as markdown or HTML
        images = persona.get("images") or []
        if images:
            cols = st.columns(4)
            for i, uri in enumerate(images):
                source = ui.image_source(rt, uri)
                if source:
                    cols[i % 4].image(source, caption=f"img{i + 1:02d}" + _image_identity(identity, i))
    with st.expander("All fields and raw JSON"):
        st.json(json.loads(json.dumps(persona, default=str)), expanded=False)
    dataset_map.similar(rt, user, result_id)


def _reports() -> dict[str, Any]:
    return {tid: task_status(rt.db, tid, user) for tid in flt.task_ids}


# Only the open tab runs (on_change="rerun"): charts, comparisons and downloads cost nothing until asked for.
table_tab, cards_tab, map_tab, charts_tab, curate_tab, compare_tab, download_tab = st.tabs(
    ["Table", "Cards", "Map", "Charts", "Curate", "Compare", "Download"], key="g_tab", on_change="rerun"
)
with table_tab:
    if table_tab.open:
        frame = pd.DataFrame(
            [
                {
                    "id": row["id"],
                    "photo": ui.data_uri(rt, row.get("thumb_uri")),
                    "name": f"{row['firstname']} {row['lastname']}",
                    "gender": row.get("gender"),
                    "age": row.get("age"),
                    "ethnicity": row.get("ethnicity"),
                    "job": row.get("job_title"),
                    "city": row.get("current_city"),
                    "language": row.get("language"),
                    "images": row.get("image_count"),
                    "status": row.get("status"),
                    "favourite": bool(row.get("favorite")),
                    "rating": row.get("rating"),
                    "tags": ", ".join(row.get("tags") or []),
                    "flags": ", ".join(ui.flag_label(f) for f in row.get("quality_flags") or []),
                    "task": row.get("task_id"),
                }
                for row in result.rows
            ]
        )
        event: Any = st.dataframe(
            frame,
            hide_index=True,
            width="stretch",
            on_select="rerun",
            selection_mode="single-row",
            key="g_table",
            column_config={
                "id": None,
                "photo": st.column_config.ImageColumn("Photo", width="small"),
                "age": st.column_config.NumberColumn("Age", format="%d"),
                "images": st.column_config.NumberColumn("Images", format="%d"),
                "favourite": st.column_config.CheckboxColumn("★"),
                "rating": st.column_config.NumberColumn("Rating", format="%d ⭐"),
            },
        )
        selected_rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
        if selected_rows and not frame.empty:
            _detail(int(frame.iloc[selected_rows[0]]["id"]))

with cards_tab:
    if cards_tab.open:
        columns = st.columns(4)
        for i, row in enumerate(result.rows):
            with columns[i % 4].container(border=True):
                st.image(ui.thumbnail_source(rt, row.get("thumb_uri")), width="stretch")
                st.markdown(f"**{ui.plain(row['firstname'])} {ui.plain(row['lastname'])}**"
                            + (" ★" if row.get("favorite") else ""))
                st.caption(" · ".join(ui.plain(v) for v in (row.get("age") or "?", row.get("gender"),
                                                             row.get("job_title") or "?")))
                identity_flags = [f for f in row.get("quality_flags") or [] if f in IDENTITY_FLAGS]
                if identity_flags:
                    st.markdown(ui.flag_badges(identity_flags))
                if st.button("Details", key=f"card_{row['id']}"):
                    st.session_state["g_detail"] = row["id"]
        if st.session_state.get("g_detail"):
            st.divider()
            _detail(int(st.session_state["g_detail"]))

with map_tab:
    if map_tab.open and (picked := dataset_map.render_map(rt, user, flt)) is not None:
        _detail(picked)

with charts_tab:
    if charts_tab.open:
        dataset_map.diversity(rt, user, flt.task_ids)
        reports = _reports()
        for tid in flt.task_ids:
            report = reports[tid]
            if report.targets_report or report.quality_summary:
                with st.expander(f"Task {tid}: quality checks and requested vs achieved demographics"):
                    ui.quality_summary(report.quality_summary)
                    ui.targets_report(report.targets_report)
        dist = gallery.distributions(rt.db, user, flt)
        c1, c2 = st.columns(2)
        for column, key, title in ((c1, "age", "Age"), (c2, "gender", "Gender"), (c1, "ethnicity", "Ethnicity"),
                                   (c2, "job_title", "Top jobs"), (c1, "current_city", "Top cities")):
            with column:
                st.markdown(f"**{title}**")
                values = dist.get(key) or []
                if values:
                    st.bar_chart(pd.DataFrame(values, columns=[title, "personas"]).set_index(title),
                                 horizontal=key not in ("age",))
                else:
                    st.caption("no data")

with curate_tab:
    if curate_tab.open:
        st.caption(f"Applies to the whole filtered view: {result.total:,} personas on all pages.")
        action = st.selectbox("Action", ["keep", "reject", "clear keep/reject", "favourite", "unfavourite", "add a tag"],
                              key="g_bulk_action")
        bulk_tag = st.text_input("Tag", key="g_bulk_tag", disabled=action != "add a tag")
        sure = st.checkbox(f"Apply to all {result.total:,} personas", key="g_bulk_sure")
        if st.button("Apply", key="g_bulk_apply", disabled=not sure or result.total == 0, icon=":material/done_all:"):
            options: dict[str, Any] = {
                "keep": {"curation": "keep"}, "reject": {"curation": "reject"}, "clear keep/reject": {"clear_curation": True},
                "favourite": {"favorite": True}, "unfavourite": {"favorite": False}, "add a tag": {"add_tag": bulk_tag},
            }[action]
            try:
                changed = gallery.bulk_curate(rt.db, user, flt, **options)
            except PipelineError as exc:
                ui.show_error(exc)
            else:
                _facet_counts.clear()
                st.success(f"{changed:,} personas updated")

with compare_tab:
    if compare_tab.open:
        if len(flt.task_ids) < 2:
            st.info("Pick two or more tasks above to compare their distributions and configurations.")
        else:
            reports = _reports()
            dataset_map.diversity(rt, user, flt.task_ids)
            snapshots = {tid: _flatten(r.config_snapshot or {}) for tid, r in reports.items()}
            keys = sorted({k for snap in snapshots.values() for k in snap} - {"frozen_at"})
            differing = [k for k in keys if len({str(snap.get(k)) for snap in snapshots.values()}) > 1]
            st.markdown("**Configuration differences**" if differing else "**Same configuration**")
            if differing:
                st.dataframe(
                    pd.DataFrame({tid: [str(snapshots[tid].get(k, "—"))[:200] for k in differing] for tid in snapshots},
                                 index=differing),
                    width="stretch",
                )
            per_task = {tid: gallery.distributions(rt.db, user, gallery.GalleryFilter(task_ids=[tid])) for tid in reports}
            for key, title in (("gender", "Gender"), ("age", "Age"), ("ethnicity", "Ethnicity"),
                               ("job_title", "Top jobs"), ("current_city", "Top cities")):
                frame = pd.DataFrame({tid: dict(dist.get(key) or []) for tid, dist in per_task.items()}).fillna(0)
                if frame.empty:
                    continue
                st.markdown(f"**{title}** (share of each task)")
                st.bar_chart(frame / frame.sum(), horizontal=key != "age", stack=False)

with download_tab:
    if download_tab.open:
        st.caption(f"Downloads hold the current filtered view: {result.total:,} personas, all pages. Each file is "
                   "built once, on the server, then downloaded from there.")
        view_key = json.dumps(sorted(flt.to_query_params().items()))
        prepared_links: dict[str, Any] = st.session_state.setdefault("g_downloads", {})
        cols = st.columns(len(FORMATS))
        for column, fmt in zip(cols, FORMATS, strict=True):
            label = {"hf": "HF imagefolder", "parquet-images": "Parquet + images"}.get(fmt, fmt.upper())
            with column:
                if st.button(f"Prepare {label}", key=f"dl_{fmt}", icon=":material/build:"):
                    try:
                        with st.spinner(f"Building {downloads.FILE_NAMES[fmt]}…"):
                            prepared_links[f"{view_key} {fmt}"] = downloads.prepare_download(
                                rt.db, rt.storage, rt.settings, user, flt, fmt)
                    except PipelineError as exc:
                        ui.show_error(exc)
                ready = prepared_links.get(f"{view_key} {fmt}")
                if ready is not None and ready.expires_at > time.time():
                    # A plain link with the download attribute: the browser saves the file from the server's
                    # /downloads route (app.py); the token holds only URL-safe characters.
                    st.markdown(f'<a href="{html.escape(ready.url)}" download="{html.escape(ready.filename)}">'
                                f"Download {label}</a> ({ready.size / 1e6:,.1f} MB)",
                                unsafe_allow_html=True)
