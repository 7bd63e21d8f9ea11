"""Overview, the landing page: the user's tasks (an administrator's: everyone's, per user) at a glance: tasks by
status, personas and images made with a 30-day chart, the tasks running now, recent failures and quality flags.
While a task runs the page refreshes itself every few seconds; once none runs it stops asking."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from pages import ui
from pipeline.outputs.overview import DAYS_CHARTED, Overview, provider_usage_this_week, read_overview
from pipeline.submit.accounts import User

REFRESH_SECONDS = 5
rt = ui.runtime()
user = ui.current_user(rt)
st.header("Overview")
st.caption("Your tasks" + (" and everyone else's (administrator)" if user.is_admin else "") + ".")


def _made(ov: Overview) -> None:
    cols = st.columns(5)
    cols[0].metric("Tasks", f"{ov.tasks:,}")
    cols[1].metric("Running or waiting", f"{len(ov.running):,}")
    cols[2].metric("Personas", f"{ov.made['all'].personas:,}", f"+{ov.made['7 days'].personas:,} in 7 days",
                   delta_color="off")
    cols[3].metric("Images", f"{ov.made['all'].images:,}", f"+{ov.made['7 days'].images:,} in 7 days",
                   delta_color="off")
    cols[4].metric("Personas in 30 days", f"{ov.made['30 days'].personas:,}",
                   f"{ov.made['30 days'].images:,} images", delta_color="off")
    with st.container(horizontal=True):
        for status, n in sorted(ov.status_counts.items(), key=lambda item: -item[1]):
            color, icon = ui.STATUS_BADGES.get(status, ("gray", ":material/help:"))
            st.badge(f"{status} {n:,}", color=color, icon=icon)  # type: ignore[arg-type]
    frame = pd.DataFrame(ov.daily).set_index("day")
    frame.index = frame.index.map(str)  # days as categories (ISO, in order): a time axis clips today's bars
    st.markdown(f"**Personas and images per day** (last {DAYS_CHARTED} days, UTC)")
    st.bar_chart(frame, height=220, stack=False)


def _running(ov: Overview, viewer: User) -> None:
    st.subheader("Running now")
    if not ov.running:
        st.caption("No task is running or waiting.")
        return
    for row in ov.running:
        task, progress = row.task, row.progress
        total_images = task.number_to_generate * task.images_per_persona
        with st.container(border=True):
            st.markdown(f"**{task.task_id}** · {task.status} · {task.number_to_generate} × {task.images_per_persona}"
                        f" images" + (f" · `{row.owner_email}`" if viewer.is_admin else ""))
            st.progress(min(1.0, progress.personas_total / max(1, task.number_to_generate)),
                        text=f"personas {progress.personas_total}/{task.number_to_generate}")
            st.progress(min(1.0, progress.images_done / max(1, total_images)),
                        text=f"images {progress.images_done}/{total_images} · failed {progress.personas_failed}")
    st.page_link("pages/tasks.py", label="All tasks", icon=":material/list_alt:")


def _failures(ov: Overview, viewer: User) -> None:
    st.subheader("Recent failures")
    if not ov.failures:
        st.caption("No failed or partial task.")
        return
    for failure in ov.failures:
        with st.expander(f"{failure['task_id']} · {failure['status']} · {ui.fmt_time(failure['when'])}"
                         + (f" · {failure['owner']}" if viewer.is_admin else "")):
            st.text(failure["description"][:300])
            st.code("\n".join(failure["reasons"]) or "no reason recorded", language=None)


def _quality(ov: Overview) -> None:
    st.subheader("Quality at a glance")
    if not ov.reviewed:
        st.caption("No finished task yet: quality checks run when a task finishes.")
        return
    st.caption(f"{ov.flagged:,} of {ov.reviewed:,} personas of finished tasks flagged by a check "
               f"({ov.flagged / ov.reviewed:.0%})")
    if ov.flags:
        shares = pd.DataFrame({"flag": [ui.flag_label(f) for f in ov.flags],
                               "share": [n / ov.reviewed for n in ov.flags.values()]})
        chart = alt.Chart(shares).mark_bar().encode(  # whole flag names, shares as percentages
            x=alt.X("share:Q", title=None, axis=alt.Axis(format="%")),
            y=alt.Y("flag:N", title=None, sort="-x", axis=alt.Axis(labelLimit=320)),
            tooltip=["flag", alt.Tooltip("share:Q", format=".1%")])
        st.altair_chart(chart.properties(height=30 + 30 * len(shares)), width="stretch")


def _usage(viewer: User) -> None:
    usage = provider_usage_this_week(rt.db, viewer)
    st.subheader("Provider calls this week")
    if not usage:
        st.caption("Calls and cost per provider appear here once providers record their usage.")
        return
    st.dataframe(pd.DataFrame(usage), hide_index=True, width="stretch")


def _per_user(ov: Overview, viewer: User) -> None:
    if not viewer.is_admin or not ov.per_user:
        return
    st.subheader("Per user")
    st.dataframe(pd.DataFrame(ov.per_user).rename(columns={"personas_recent": "personas (7 days)",
                                                           "images_recent": "images (7 days)"}),
                 hide_index=True, width="stretch")


def _show(ov: Overview, viewer: User) -> None:
    """The page below its caption, for ``viewer`` (a refresh passes the user as the database has them now)."""
    if not ov.tasks:
        st.info("No tasks yet: describe a population on the New task page to generate your first dataset.")
        st.page_link("pages/new.py", label="New task", icon=":material/add_circle:")
        return
    _made(ov)
    left, right = st.columns(2)
    with left:
        _running(ov, viewer)
        _failures(ov, viewer)
    with right:
        _quality(ov)
        _usage(viewer)
    _per_user(ov, viewer)


first = read_overview(rt.db, user)
if first.is_running:
    st.caption(f":material/autorenew: refreshing every {REFRESH_SECONDS} s while tasks run")
    ready = [(first, user)]  # the full run's read is shown once; each refresh reads again

    @st.fragment(run_every=REFRESH_SECONDS)
    def live() -> None:
        if ready:
            ov, viewer = ready.pop()
        else:
            viewer = ui.fresh_user(rt)  # role and account as of now: a refresh does not pass the login gate
            ov = read_overview(rt.db, viewer)
        _show(ov, viewer)
        if not ov.is_running:
            st.rerun()  # the whole page: drawn again without the refresh

    live()
else:
    _show(first, user)
