"""Tasks: the user's tasks (everyone's for an administrator) with their progress, refreshed every few seconds;
cancel, retry, re-run (as it was, or with changes on New task) and delete, and (administrators) resume a task held
at upgrade; each task's frozen configuration (its settings that differ from the global defaults marked), dataset
report and error log."""

from __future__ import annotations

import streamlit as st

from pages import ui
from pipeline.core.domain import TaskStatus
from pipeline.core.errors import PipelineError
from pipeline.core.usage import format_money, parse_budget, usage_table, usage_total
from pipeline.submit.providers_status import provider_status
from pipeline.submit.settings import (
    TASK_SETTING_KEYS,
    TaskSettings,
    default_task_settings,
    read_settings,
    task_settings_of,
)
from pipeline.submit.task_control import (
    HELD_EXPLANATION,
    cancel_task,
    delete_task,
    eta_seconds,
    list_tasks,
    rerun_task,
    resume_task,
    retry_task,
)
from pipeline.submit.usage import task_usage

rt = ui.runtime()
user = ui.current_user(rt)
st.header("Tasks")
st.caption("Your tasks" + (" and everyone else's (administrator)" if user.is_admin else "") + ". Refreshes every 3 s.")


@st.fragment(run_every=3)
def provider_limits() -> None:
    """The providers' limits as every task shares them: calls in flight over all workers and hosts, the limit in
    force (lower than the configured one while a provider pushes back) and its recent 429s."""
    ui.fresh_user(rt)  # a fragment run skips the gate: a deactivated session ends here
    rows = provider_status(rt.db)
    if rows:
        st.dataframe(
            [{"provider": r.provider, "in flight": r.in_flight, "limit in force": r.effective,
              "configured": r.configured, "per minute": str(r.rate_per_minute or "off"),
              "recent 429s": r.recent_throttles, "state": r.note} for r in rows],
            hide_index=True,
        )


provider_limits()

RETRYABLE = {TaskStatus.PARTIAL.value, TaskStatus.FAILED.value, TaskStatus.CANCELLED.value}


def _act(label: str, action: object) -> None:
    me = ui.fresh_user(rt)  # the role as it is now, not as it was at the last full run
    try:
        result = action(me) if callable(action) else None
    except PipelineError as exc:
        st.session_state["tasks_flash"] = ("error", str(exc))
    else:
        st.session_state["tasks_flash"] = ("success", label.format(result=result))
        rt.wake_worker()  # a retried or re-run task starts now, not at the in-app worker's next poll


DIFFERS = "**≠**"  # marks a task's setting that differs from the global default


def _setting_text(value: bool | str) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def frozen_settings(snapshot: dict[str, object], defaults: TaskSettings) -> None:
    """A task's toggles, identity check and bio prompts as frozen, those that differ from the global defaults
    marked (a prompt is shown by its start), then the whole snapshot."""
    own = task_settings_of(snapshot)
    lines = []
    for key in TASK_SETTING_KEYS:
        label, value, default = key.replace("_", " ").capitalize(), own[key], defaults.get(key)
        differs = value != default
        if key.startswith("bio_prompt_"):
            start = " ".join(str(value).split())
            shown = ui.plain(start[:90]) + ("…" if len(start) > 90 else "")
            text = f"{label}{' (differs from the global default)' if differs else ''}: {shown}"
        else:
            text = f"{label}: {_setting_text(value)}"
            if differs:
                text += f" (global default: {_setting_text(default if default is not None else '')})"
        lines.append(f"- {DIFFERS + ' ' if differs else ''}{text}")
    st.markdown("\n".join(lines))
    st.json(snapshot, expanded=False)


flash = st.session_state.pop("tasks_flash", None)
if flash:
    (st.error if flash[0] == "error" else st.success)(flash[1])


@st.fragment(run_every=3)
def task_list() -> None:
    me = ui.fresh_user(rt)  # a fragment run skips the gate: re-read the role (or end a deactivated session)
    rows = list_tasks(rt.db, me)
    defaults = default_task_settings(read_settings(rt.db))  # what a task gets unless it sets its own
    if not rows:
        st.info("No tasks yet: create one on the New task page.")
        st.page_link("pages/new.py", label="New task", icon=":material/add_circle:")
        return
    usage = task_usage(rt.db, [row.task.id for row in rows])
    for row in rows:
        task, progress = row.task, row.progress
        total_images = task.number_to_generate * task.images_per_persona
        with st.container(border=True):
            head, actions = st.columns([5, 3])
            with head:
                cols = st.columns([2, 5])
                with cols[0]:
                    ui.status_badge(task.status)
                cols[1].markdown(f"**{task.task_id}** · {task.bio_language} · {task.number_to_generate} × "
                                 f"{task.images_per_persona} images" + (f" · `{row.owner_email}`" if me.is_admin else ""))
                st.text(task.persona_description[:300])
                data_fraction = min(1.0, progress.personas_total / max(1, task.number_to_generate))
                image_fraction = min(1.0, progress.images_done / max(1, total_images))
                st.progress(data_fraction, text=f"personas {progress.personas_total}/{task.number_to_generate}")
                st.progress(image_fraction, text=f"images {progress.images_done}/{total_images} · personas done "
                                                 f"{progress.personas_done} · failed {progress.personas_failed}")
                st.caption(f"created {ui.fmt_time(task.created_at)} · started {ui.fmt_time(task.started_at)} · "
                           f"finished {ui.fmt_time(task.completed_at)} · ETA {ui.fmt_duration(eta_seconds(row))} · "
                           f"seed {task.seed if task.seed is not None else '—'}"
                           + (" · cancel requested" if task.cancel_requested else ""))
                if task.status == TaskStatus.HELD.value:
                    st.warning(f"Held: {HELD_EXPLANATION}. " + ("Resume it or cancel it." if me.is_admin else
                               "An administrator resumes or cancels it."), icon=":material/pause_circle:")
                if task.config_snapshot:
                    own = task_settings_of(task.config_snapshot)
                    changed = sum(own[key] != defaults.get(key) for key in TASK_SETTING_KEYS)
                    with st.expander("Configuration frozen with this task"
                                     + (f" · {changed} differ from the global defaults" if changed else "")):
                        frozen_settings(task.config_snapshot, defaults)
                if task.targets_report or task.quality_summary:
                    with st.expander("Dataset report: quality checks and demographic targets"):
                        ui.quality_summary(task.quality_summary)
                        ui.targets_report(task.targets_report)
                if usage.get(task.id) or task.budget is not None:
                    calls = usage.get(task.id, [])
                    budget = "" if task.budget is None else f" of a budget of {format_money(task.budget)}"
                    with st.expander(f"Provider usage: {usage_total(calls)}{budget}"):
                        st.dataframe(usage_table(calls), hide_index=True)
                if task.error_log:
                    with st.expander(f"Error log ({ui.plural(task.error_log.count(chr(10)) + 1, 'line')})"):
                        st.code(task.error_log, language=None)
            with actions:
                tid = task.task_id
                if task.status not in TaskStatus.finished():
                    st.button("Cancel", key=f"cancel_{tid}", icon=":material/cancel:",
                              on_click=_act, args=("Cancel: {result}", lambda who, t=tid: cancel_task(rt.db, t, who)))
                if task.status == TaskStatus.HELD.value and me.is_admin:
                    st.button("Resume", key=f"resume_{tid}", icon=":material/play_arrow:",
                              help="Calls the configured providers: may cost money",
                              on_click=_act, args=("Resumed: {result}",
                                                   lambda who, t=tid: resume_task(rt.db, rt.settings, t, who)))
                if task.status in RETRYABLE:
                    budget_key = f"retry_budget_{tid}"
                    if task.budget is not None:  # a task stopped at its budget goes on with a higher one
                        shown = f"{task.budget:.2f}" if round(task.budget, 2) == task.budget else f"{task.budget:g}"
                        st.text_input("Budget for the retry ($)", value=shown, key=budget_key,
                                      help="More than the task has spent so far, over all its runs")
                    st.button("Retry failed", key=f"retry_{tid}", icon=":material/replay:",
                              on_click=_act, args=("{result} persona(s) queued again",
                                                   lambda who, t=tid, k=budget_key: retry_task(
                                                       rt.db, t, who, budget=parse_budget(st.session_state.get(k)))))
                if task.status != TaskStatus.HELD.value:  # resumed or cancelled first
                    c1, c2 = st.columns(2)
                    c1.button("Re-run", key=f"rerun_{tid}", help="Same request, same seed",
                              icon=":material/content_copy:",
                              on_click=_act, args=("New task {result}", lambda who, t=tid: rerun_task(rt.db, t, who)))
                    c2.button("New seed", key=f"reseed_{tid}", help="Same request, a new seed",
                              icon=":material/casino:",
                              on_click=_act, args=("New task {result}",
                                                   lambda who, t=tid: rerun_task(rt.db, t, who, same_seed=False)))
                    if st.button("Re-run with changes", key=f"rerun_edit_{tid}", icon=":material/edit_note:",
                                 help="New task, pre-filled with this task's request and settings"):
                        st.switch_page("pages/new.py", query_params={"from": tid})
                if task.status in (*TaskStatus.finished(), TaskStatus.PENDING.value, TaskStatus.HELD.value):
                    confirm = st.checkbox("confirm delete", key=f"confirm_{tid}")
                    st.button("Delete", key=f"delete_{tid}", icon=":material/delete:", disabled=not confirm,
                              on_click=_act, args=("Deleted ({result} stored objects removed)",
                                                   lambda who, t=tid: delete_task(rt.db, rt.storage, t, who)))
                if progress.personas_total:
                    st.page_link("pages/gallery.py", label="Open in gallery", icon=":material/photo_library:",
                                 query_params={"tasks": tid})


task_list()
