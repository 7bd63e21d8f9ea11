"""New task: the request, the config that will be frozen with it (the toggles, identity check and bio prompts are
this task's own, pre-filled from the global defaults, with a live preview of the image toggles on a sample photo),
an estimate, and a quick persona preview. ``?from=TASK_ID`` pre-fills the form from one of the user's tasks
("Re-run with changes" on the Tasks page)."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from pages import ui
from pipeline.core.domain import (
    ALLOWED_IMAGES_PER_PERSONA,
    BIO_PROMPT_KEYS,
    CONFIG_TOGGLES,
    MAX_DESCRIPTION_CHARS,
    MAX_PERSONAS,
    MIN_PERSONAS,
)
from pipeline.core.errors import PipelineError
from pipeline.core.identity import IDENTITY_MODES, IDENTITY_SETTING_KEY, resolve_mode
from pipeline.core.languages import LANGUAGES
from pipeline.core.targets import load_targets_json
from pipeline.core.usage import cost_text, parse_budget
from pipeline.submit.estimates import estimate_task
from pipeline.submit.image_preview import SamplePhoto, TogglePreview, preview_toggles, sample_photo
from pipeline.submit.settings import TASK_SETTING_KEYS, TaskSettings, default_task_settings, read_settings
from pipeline.submit.submission import MAX_SEED, build_snapshot, preview_personas, submit_task, validate_spec
from pipeline.submit.task_form import task_form

rt = ui.runtime()
user = ui.current_user(rt)
st.header("New task")
st.caption("Describe a population; the executor generates the personas and their photos in the background.")

CFG = "nt_cfg_"  # the widget key of each of the task's own settings is CFG + its setting key
current = read_settings(rt.db)
defaults = default_task_settings(current)
form_defaults: dict[str, Any] = {"nt_description": "", "nt_language": "English", "nt_count": 20,
                                 "nt_images": ALLOWED_IMAGES_PER_PERSONA[1], "nt_seed": "",
                                 **{CFG + key: value for key, value in defaults.items()}}


def _prefill(task_id: str) -> None:
    """The form as the task was asked for (its request and frozen settings), as a starting point."""
    form = task_form(rt.db, task_id, user)
    state = st.session_state
    state["nt_description"] = form.description
    if form.language in LANGUAGES:
        state["nt_language"] = form.language
    state["nt_count"] = min(MAX_PERSONAS, max(MIN_PERSONAS, form.count))
    if form.images_per_persona in ALLOWED_IMAGES_PER_PERSONA:
        state["nt_images"] = form.images_per_persona
    state["nt_seed"] = "" if form.seed is None else str(form.seed)
    state["nt_t_gender"] = state["nt_t_age"] = False  # the targets come whole in the JSON box
    state["nt_t_json"] = json.dumps(form.targets) if form.targets else ""
    for key, value in (form.settings or defaults).items():
        state[CFG + key] = value


from_id = str(st.query_params.get("from", "")).strip()[:40]
if from_id and st.session_state.get("nt_from") != from_id:  # once per task asked for, not at every rerun
    st.session_state["nt_from"] = from_id
    try:
        _prefill(from_id)
    except PipelineError as exc:
        st.session_state["nt_from_error"] = str(exc)
    else:
        st.session_state.pop("nt_from_error", None)
if from_id:
    if st.session_state.get("nt_from_error"):
        st.error(ui.plain(st.session_state["nt_from_error"]), icon=":material/error:")
    else:
        st.info(f"Pre-filled from task **{ui.plain(from_id)}**: change what you want; submitting makes a new task.",
                icon=":material/edit_note:")
for widget_key, value in form_defaults.items():  # initial values in one place (a widget given one too would warn)
    st.session_state.setdefault(widget_key, value)

left, right = st.columns([3, 2], gap="large")
with left:
    description = st.text_area(
        "Population description",
        placeholder="urban cyclists in Lisbon, 25–40",
        max_chars=MAX_DESCRIPTION_CHARS,
        height=120,
        key="nt_description",
    )
    language = st.selectbox(f"Bio language ({len(LANGUAGES)} languages, type to search)", LANGUAGES, key="nt_language")
    c1, c2, c3 = st.columns(3)
    count = c1.number_input("Personas", min_value=MIN_PERSONAS, max_value=MAX_PERSONAS, step=1, key="nt_count")
    images = c2.selectbox("Images per persona", ALLOWED_IMAGES_PER_PERSONA, key="nt_images")
    seed_text = c3.text_input("Seed (optional)", placeholder="random", key="nt_seed",
                              help="The same seed with the same config gives the same dataset.")
    budget_text = st.text_input("Budget in dollars (optional)", placeholder="no budget", key="nt_budget",
                                help="The task makes no provider call that would take its cost over this amount "
                                     "(at the prices set on the Settings page): it then ends partial.")
    with st.expander("Demographic targets (optional)", icon=":material/groups:"):
        st.caption("The offline provider meets them exactly; LLM providers get one slot per persona. After the "
                   "data stage a requested-vs-achieved report (with a chi-square test) is stored with the task.")
        use_gender = st.checkbox("Gender mix", key="nt_t_gender")
        g1, g2, g3 = st.columns(3)
        share_f = g1.number_input("women %", 0, 100, 50, disabled=not use_gender, key="nt_t_f")
        share_m = g2.number_input("men %", 0, 100, 45, disabled=not use_gender, key="nt_t_m")
        share_o = g3.number_input("other %", 0, 100, 5, disabled=not use_gender, key="nt_t_o")
        use_age = st.checkbox("Age range", key="nt_t_age")
        age_range = st.slider("Ages", 13, 100, (25, 40), disabled=not use_age, key="nt_t_ages")
        extra = st.text_area("More targets as JSON (ethnicity shares, age bands, locales)", key="nt_t_json",
                             placeholder='{"ethnicity": {"White": 0.6, "Black": 0.2, "Mixed": 0.2}}', height=80)
    submitted = st.button("Submit task", type="primary", icon=":material/send:")
    preview_n = st.slider("Preview personas", 1, 3, 2, key="nt_preview_n")
    previewed = st.button("Preview (no images, nothing stored)", icon=":material/visibility:")

with right:
    estimate = estimate_task(rt.db, rt.settings, int(count), int(images))
    st.subheader("Estimate")
    m1, m2, m3 = st.columns(3)
    m1.metric("Provider calls", f"{estimate.calls:,}")
    m2.metric("Duration (rough)", ui.fmt_duration(estimate.seconds))
    m3.metric("Cost", cost_text(estimate.cost, partial=estimate.cost_partial),
              help="At the prices set on the Settings page; — when a provider has no price. ≥: a price per token "
                   "is left out until the provider has reported the tokens of some calls.")
    st.caption(f"{ui.plural(estimate.persona_calls, 'persona batch', 'persona batches')} · "
               f"{ui.plural(estimate.prompt_calls, 'grid prompt')} · {ui.plural(estimate.image_calls, 'image call')}"
               " · " + ("seconds per call from recent tasks" if estimate.observed else
                        "seconds per call: documented defaults until calls are observed")
               + ", at the providers' limits")
    st.subheader("Config frozen with the task")
    st.write("Providers:", f"persona **{rt.settings.persona_provider}**, image **{rt.settings.image_provider}**")
    st.caption("Pre-filled from the global defaults (an administrator sets them on Settings); what you change here "
               "applies to this task only.")


def _task_settings() -> TaskSettings:
    """The settings the form changed from the global defaults: this task's own (checked when it is submitted)."""
    form = {key: st.session_state.get(CFG + key, defaults[key]) for key in TASK_SETTING_KEYS}
    return {key: value for key, value in form.items() if value != defaults[key]}


def _reset_settings() -> None:
    for key, value in defaults.items():
        st.session_state[CFG + key] = value


def _preview_seed() -> tuple[int, str]:
    """The form's seed for the style preview, or 0 while it is blank or not a whole number."""
    text = str(st.session_state.get("nt_seed", "")).strip()
    if text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_SEED:
        return int(text), f"seed {text}"
    return 0, "seed 0 (the task draws its own seed when the field is blank)"


@st.cache_data(ttl=300, max_entries=256, show_spinner=False)
def _sample(database_url: str, user_id: int, _rt: Any) -> SamplePhoto:
    """The user's sample photo, read at most every five minutes (the URL keys the cache by database)."""
    return sample_photo(_rt.db, _rt.storage, user_id)


@st.cache_data(max_entries=64, show_spinner=False)
def _toggle_preview(photo: bytes, crop: bool, style: bool, seed: int) -> TogglePreview:
    """The sample through the image stage's crop and style, once per combination of its inputs."""
    return preview_toggles(photo, crop_borders=crop, randomize_style=style, seed=seed)


@st.fragment
def task_config() -> None:
    """The task's own toggles, identity check and bio prompts, and the toggles' preview on a sample photo; a
    toggle's change reruns only this part of the page."""
    ui.fresh_user(rt)  # a fragment run skips the gate: a deactivated session ends here
    labels = {key: key.replace("_", " ").capitalize() for key in CONFIG_TOGGLES}
    for key in CONFIG_TOGGLES:  # one per line: the column is too narrow for two whole labels side by side
        st.toggle(labels[key], key=CFG + key)
    auto_on = resolve_mode("auto", rt.settings.image_provider)
    st.radio(
        "Identity check (face embeddings on every image)", IDENTITY_MODES, horizontal=True,
        key=CFG + IDENTITY_SETTING_KEY,
        format_func=lambda m: f"auto ({'on' if auto_on else 'off'} with {rt.settings.image_provider})" if m == "auto"
        else m,
        help="Identity consistency, duplicate faces and face-library leakage, measured on every image",
    )
    with st.expander("Bio prompts"):
        for key in BIO_PROMPT_KEYS:
            st.text_area(key.removeprefix("bio_prompt_").upper(), key=CFG + key, height=110)
    own = _task_settings()
    if own:
        st.caption("Set for this task (differs from the global default): "
                   + ", ".join(key.replace("_", " ") for key in own))
        st.button("Back to the global defaults", on_click=_reset_settings, icon=":material/restart_alt:")

    crop = bool(st.session_state[CFG + "crop_white_borders"])
    style = bool(st.session_state[CFG + "randomize_image_style"])
    seed, seed_note = _preview_seed()
    sample = _sample(rt.settings.database_url, user.id, rt)
    shown = _toggle_preview(sample.data, crop, style, seed)
    b1, b2 = st.columns(2)
    b1.image(shown.before, caption=f"As a grid's tile arrives ({shown.before_size[0]}×{shown.before_size[1]})")
    done = [name for name, on in (("border crop", crop), ("style", style)) if on]
    look = f" · {shown.style['preset']}" if shown.style else ""
    b2.image(shown.after, caption=f"As the task stores it: {' + '.join(done) or 'trim only'}{look} "
                                  f"({shown.after_size[0]}×{shown.after_size[1]})")
    st.caption(f"What the image toggles do to a sample: {sample.source}; the style drawn from {seed_note} (each "
               "image of a task draws its own). Computed here, no provider called.")


with right:
    task_config()

def _targets() -> dict[str, object] | None:
    """The JSON targets with the ticked boxes' targets over them; ``ValidationError`` when the JSON is unusable."""
    chosen: dict[str, object] = load_targets_json(extra) if extra.strip() else {}
    if use_gender:
        chosen["gender"] = {"f": share_f, "m": share_m, "other": share_o}
    if use_age:
        chosen["age"] = {"min": age_range[0], "max": age_range[1]}
    return chosen or None


if submitted:
    try:
        targets = _targets()
        spec = validate_spec(
            user_id=user.id,
            description=description,
            language=language,
            count=count,
            images_per_persona=images,
            seed=seed_text.strip() or None,
            targets=targets,
        )
        snapshot = build_snapshot(rt.db, rt.settings, _task_settings())
        task_id = submit_task(rt.db, spec, snapshot, budget=parse_budget(budget_text))
        rt.wake_worker()  # the in-app worker starts it now, not at its next poll
    except PipelineError as exc:
        ui.show_error(exc)
    else:
        st.success(f"Task **{task_id}** submitted: follow it on the Tasks page.", icon=":material/check_circle:")
        st.page_link("pages/tasks.py", label="Go to Tasks", icon=":material/list_alt:")

if previewed:
    try:
        seed = int(seed_text) if seed_text.strip() else None
    except ValueError:
        st.error("seed must be a whole number")
    else:
        try:
            with st.spinner("Asking the persona provider…"):
                batch = preview_personas(rt.db, rt.settings, description, language, int(preview_n), seed,
                                         _task_settings(), user=user)
        except PipelineError as exc:
            ui.show_error(exc)
        else:
            if batch.rejected:
                st.warning(f"{batch.rejected} unusable object(s) in the reply: "
                           + ui.plain("; ".join(batch.problems[:3])))
            for persona in batch.personas:
                with st.container(border=True):
                    st.markdown(f"**{ui.plain(persona.firstname)} {ui.plain(persona.lastname)}**")
                    st.caption(" · ".join(ui.plain(v) for v in (persona.gender, persona.age or "?",
                                                                 persona.ethnicity or "?", persona.job_title or "?",
                                                                 persona.current_city or "?")))
                    tabs = st.tabs(["Facebook", "Instagram", "X", "TikTok", "About"])
                    texts = [persona.bio_facebook, persona.bio_instagram, persona.bio_x, persona.bio_tiktok, persona.about]
                    for tab, bio in zip(tabs, texts, strict=True):
                        tab.text(bio or "—")
