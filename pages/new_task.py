"""New task: the request, the config that will be frozen with it, an estimate, and a quick preview."""

from __future__ import annotations

import streamlit as st

from pages import ui
from pipeline.core.domain import ALLOWED_IMAGES_PER_PERSONA, MAX_DESCRIPTION_CHARS, MAX_PERSONAS, MIN_PERSONAS
from pipeline.core.errors import PipelineError
from pipeline.core.identity import resolve_mode
from pipeline.core.languages import LANGUAGES
from pipeline.core.targets import load_targets_json
from pipeline.submit.settings import read_settings
from pipeline.submit.submission import build_snapshot, estimate_task, preview_personas, submit_task, validate_spec

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
    estimate = estimate_task(rt.settings, int(count), int(images))
    st.subheader("Estimate")
    m1, m2 = st.columns(2)
    m1.metric("Provider calls", f"{estimate.calls:,}")
    m2.metric("Duration (rough)", ui.fmt_duration(estimate.seconds))
    st.caption(f"{ui.plural(estimate.persona_calls, 'persona batch', 'persona batches')} · "
               f"{ui.plural(estimate.prompt_calls, 'grid prompt')} · {ui.plural(estimate.image_calls, 'image call')}")
    st.subheader("Config frozen with the task")
    current = read_settings(rt.db)
    st.write("Providers:", f"persona **{rt.settings.persona_provider}**, image **{rt.settings.image_provider}**")
    for name, value in current.toggles.items():
        st.checkbox(name.replace("_", " "), value=value, disabled=True, key=f"nt_toggle_{name}")
    identity_on = resolve_mode(current.identity_check, rt.settings.image_provider)
    st.checkbox(f"identity check ({current.identity_check})", value=identity_on, disabled=True, key="nt_identity",
                help="Face embeddings on every image: identity consistency, duplicate faces, face-library leakage")
    with st.expander("Bio prompts"):
        for key, text in current.bio_prompts.items():
            st.caption(key.removeprefix("bio_prompt_").upper())
            st.text(text or "(empty)")

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
        task_id = submit_task(rt.db, spec, build_snapshot(rt.db, rt.settings))
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
                batch = preview_personas(rt.db, rt.settings, description, language, int(preview_n), seed)
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
