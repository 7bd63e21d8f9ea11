"""New task: the request, the config that will be frozen with it, an estimate, and a quick preview."""

from __future__ import annotations

import streamlit as st

from pages import ui
from pipeline.app_settings import read_settings
from pipeline.domain import ALLOWED_IMAGES_PER_PERSONA, MAX_DESCRIPTION_CHARS, MAX_PERSONAS, MIN_PERSONAS
from pipeline.errors import PipelineError
from pipeline.languages import LANGUAGES
from pipeline.tasks import build_snapshot, estimate_task, preview_personas, submit_task, validate_spec

rt = ui.runtime()
user = ui.current_user(rt)
st.header("New task")
st.caption("Describe a population; the executor generates the personas and their photos in the background.")

left, right = st.columns([3, 2], gap="large")
with left:
    description = st.text_area(
        "Population description",
        placeholder="urban cyclists in Lisbon, 25–40",
        max_chars=MAX_DESCRIPTION_CHARS,
        height=120,
        key="nt_description",
    )
    language = st.selectbox(
        f"Bio language ({len(LANGUAGES)} languages, type to search)",
        LANGUAGES,
        index=LANGUAGES.index("English"),
        key="nt_language",
    )
    c1, c2, c3 = st.columns(3)
    count = c1.number_input("Personas", min_value=MIN_PERSONAS, max_value=MAX_PERSONAS, value=20, step=1, key="nt_count")
    images = c2.selectbox("Images per persona", ALLOWED_IMAGES_PER_PERSONA, index=1, key="nt_images")
    seed_text = c3.text_input("Seed (optional)", placeholder="random", key="nt_seed",
                              help="The same seed with the same config gives the same dataset.")
    submitted = st.button("Submit task", type="primary", icon=":material/send:")
    preview_n = st.slider("Preview personas", 1, 3, 2, key="nt_preview_n")
    previewed = st.button("Preview (no images, nothing stored)", icon=":material/visibility:")

with right:
    estimate = estimate_task(rt.settings, int(count), int(images))
    st.subheader("Estimate")
    m1, m2 = st.columns(2)
    m1.metric("Provider calls", f"{estimate.calls:,}")
    m2.metric("Duration (rough)", ui.fmt_duration(estimate.seconds))
    st.caption(f"{estimate.persona_calls} persona batches · {estimate.prompt_calls} grid prompts · "
               f"{estimate.image_calls} image calls")
    st.subheader("Config frozen with the task")
    current = read_settings(rt.db)
    st.write("Providers:", f"persona **{rt.settings.persona_provider}**, image **{rt.settings.image_provider}**")
    for name, value in current.toggles.items():
        st.checkbox(name.replace("_", " "), value=value, disabled=True, key=f"nt_toggle_{name}")
    with st.expander("Bio prompts"):
        for key, text in current.bio_prompts.items():
            st.caption(key.removeprefix("bio_prompt_").upper())
            st.text(text or "(empty)")

if submitted:
    try:
        spec = validate_spec(
            user_id=user.id,
            description=description,
            language=language,
            count=count,
            images_per_persona=images,
            seed=seed_text.strip() or None,
        )
        task_id = submit_task(rt.db, spec, build_snapshot(rt.db, rt.settings))
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
                batch = preview_personas(rt.db, rt.settings, description, language, int(preview_n), seed)
        except PipelineError as exc:
            ui.show_error(exc)
        else:
            if batch.rejected:
                st.warning(f"{batch.rejected} unusable object(s) in the reply: {'; '.join(batch.problems[:3])}")
            for persona in batch.personas:
                with st.container(border=True):
                    st.markdown(f"**{persona.firstname} {persona.lastname}**")
                    st.caption(f"{persona.gender} · {persona.age or '?'} · {persona.ethnicity or '?'} · "
                               f"{persona.job_title or '?'} · {persona.current_city or '?'}")
                    tabs = st.tabs(["Facebook", "Instagram", "X", "TikTok", "About"])
                    texts = [persona.bio_facebook, persona.bio_instagram, persona.bio_x, persona.bio_tiktok, persona.about]
                    for tab, text in zip(tabs, texts, strict=True):
                        tab.text(text or "—")
