"""Settings: the four bio prompts (with history), the concurrency cap, the toggles, the identity check, the limits
per user, and the configured providers with their connection test (administrators) and the face library.

Administrators edit; everyone else reads. Changes apply to the next submitted task: a task keeps its snapshot.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from pages import ui
from pipeline.core.domain import BIO_PROMPT_KEYS, CONFIG_TOGGLES, MAX_CONCURRENT_TASKS_KEY
from pipeline.core.errors import PipelineError
from pipeline.core.identity import IDENTITY_MODES, IDENTITY_SETTING_KEY, resolve_mode
from pipeline.submit.connectivity import check_providers, face_counts
from pipeline.submit.settings import (
    MAX_PROVIDER_CONCURRENCY,
    USER_LIMIT_KEYS,
    read_settings,
    set_setting_value,
    setting_history,
)
from pipeline.submit.usage import price_rows, set_price
from pipeline.submit.user_limits import MAX_PREVIEWS_PER_HOUR_KEY, MAX_RUNNING_TASKS_PER_USER_KEY, MAX_USER_LIMIT

rt = ui.runtime()
user = ui.current_user(rt)
st.header("Settings")
editable = user.is_admin
if not editable:
    st.info("Only administrators can change settings; you can read them here.", icon=":material/lock:")
st.caption("Changes take effect for the next submitted task; running tasks keep the config frozen with them.")
current = read_settings(rt.db)


def _save(key: str, value: str, setter: Callable[..., bool] = set_setting_value) -> None:
    """Store one setting (or, with ``setter``, a price) and say so; a refused value shows why and changes nothing."""
    try:
        changed = setter(rt.db, key, value, user)
    except PipelineError as exc:
        ui.show_error(exc)
    else:
        st.toast(f"{key} saved" if changed else f"{key} unchanged", icon=":material/check:")


general, prompts, providers = st.tabs(["General", "Bio prompts", "Providers"])
with general:
    with st.form("general"):
        cap = st.number_input("Max concurrent tasks (all workers, all hosts)", min_value=1, max_value=64,
                              value=max(1, current.max_concurrent_tasks), disabled=not editable)
        toggles = {
            key: st.toggle(key.replace("_", " ").capitalize(), value=current.toggles[key], disabled=not editable)
            for key in CONFIG_TOGGLES
        }
        mode = st.radio(
            "Identity check (face embeddings on every image)", IDENTITY_MODES, horizontal=True,
            index=IDENTITY_MODES.index(current.identity_check), disabled=not editable,
            format_func=lambda m: {"auto": f"auto ({'on' if resolve_mode('auto', rt.settings.image_provider) else 'off'}"
                                           f" with the {rt.settings.image_provider} image provider)"}.get(m, m),
            help="Finds the faces in each base and variation, measures each variation's distance to its base, "
                 "duplicate faces across personas and closeness to the face-library photo. auto: on for real "
                 "image providers, off for the offline renderer (its drawn faces are not real faces).",
        )
        if st.form_submit_button("Save", type="primary", disabled=not editable):
            _save(MAX_CONCURRENT_TASKS_KEY, str(int(cap)))
            if mode != current.identity_check:
                _save(IDENTITY_SETTING_KEY, mode)
            for key, value in toggles.items():
                if value != current.toggles[key]:
                    _save(key, "true" if value else "false")
    st.subheader("Limits per user")
    st.caption("How many unfinished tasks (pending, held or running) one user may have, and how many previews one "
               "user may ask for in an hour; 0 is no limit. A submit or a preview over the limit is refused with a "
               "message; tasks already queued are not touched.")
    with st.form("user_limits"):
        wanted = {
            key: st.number_input(label, min_value=0, max_value=MAX_USER_LIMIT, step=1,
                                 value=min(MAX_USER_LIMIT, current.user_limits.get(key, 0)), disabled=not editable)
            for key, label in ((MAX_RUNNING_TASKS_PER_USER_KEY, "Max unfinished tasks per user"),
                               (MAX_PREVIEWS_PER_HOUR_KEY, "Max previews per user per hour"))
        }
        if st.form_submit_button("Save user limits", disabled=not editable):
            for key, value in wanted.items():
                if int(value) != current.user_limits.get(key, 0):
                    _save(key, str(int(value)))
    with st.expander("Change history"):
        history = [e for key in (MAX_CONCURRENT_TASKS_KEY, IDENTITY_SETTING_KEY, *CONFIG_TOGGLES, *USER_LIMIT_KEYS) for e in setting_history(rt.db, key)]
        history.sort(key=lambda e: e.created_at, reverse=True)
        if history:
            st.dataframe(
                [{"when": ui.fmt_time(e.created_at), "who": e.actor, "setting": e.target, "old": e.old_value,
                  "new": e.new_value} for e in history],
                hide_index=True,
            )
        else:
            st.caption("No changes yet.")

with prompts:
    for key in BIO_PROMPT_KEYS:
        platform = key.removeprefix("bio_prompt_")
        with st.form(f"prompt_{platform}"):
            text = st.text_area(f"{platform.capitalize()} bio prompt", value=current.bio_prompts[key], height=140,
                                disabled=not editable)
            if st.form_submit_button("Save", disabled=not editable):
                _save(key, text)
        entries = setting_history(rt.db, key)
        if entries:
            with st.expander(f"{platform.capitalize()} prompt history ({len(entries)})"):
                for entry in entries:
                    st.caption(f"{ui.fmt_time(entry.created_at)} · {entry.actor}")
                    st.text(entry.new_value or "")

with providers:
    st.write(f"Persona provider: **{rt.settings.persona_provider}** · image provider: "
             f"**{rt.settings.image_provider}** · storage: **{rt.settings.storage_url.split('://', 1)[0]}**")
    if not editable:
        st.caption("Only administrators can test the connections.")
    elif st.button("Test connection", icon=":material/network_check:"):
        with st.spinner("Checking providers…"):
            try:
                results = check_providers(rt.settings, ui.fresh_user(rt))  # the role as it is now
            except PipelineError as exc:
                ui.show_error(exc)
                results = []
        for check in results:
            (st.success if check.ok else st.error)(f"{check.kind} · {check.name}: " + ui.plain(check.detail))
    try:
        counts = face_counts(rt.settings)
    except PipelineError as exc:
        ui.show_error(exc)
    else:
        if counts is None:
            st.caption("No face library (FACES_URL) is configured: randomize face base cannot be used.")
        else:
            st.metric("Face library", f"{sum(counts.values())} faces",
                      help=", ".join(f"{n} {g}" for g, n in counts.items()))
    st.subheader("Provider limits")
    st.caption("How many calls each provider may have in flight at once, and optionally per minute, counted over "
               "every worker and host together (the provider account's limit). A change applies within seconds to "
               "running tasks too. When a provider answers 429 or slows down, fewer calls are sent until it recovers.")
    with st.form("provider_limits"):
        limit_values: dict[str, str] = {}
        for kind, label in (("persona", "Persona LLM"), ("prompt", "Grid-prompt LLM"), ("image", "Image API")):
            limits = current.provider_limits[kind]
            left, right = st.columns(2)
            concurrency = left.number_input(f"{label}: calls at once", min_value=1, max_value=MAX_PROVIDER_CONCURRENCY,
                                            value=limits.concurrency, step=1, disabled=not editable,
                                            key=f"limit_{kind}")
            rate = right.text_input(f"{label}: calls per minute (a number, or off)",
                                    value=str(limits.rate_per_minute or "off"), disabled=not editable,
                                    key=f"rate_{kind}")
            if int(concurrency) != limits.concurrency:
                limit_values[f"{kind}_concurrency"] = str(int(concurrency))
            if rate.strip() != str(limits.rate_per_minute or "off"):
                limit_values[f"{kind}_rate_per_minute"] = rate
        if st.form_submit_button("Save provider limits", disabled=not editable):
            for key, value in limit_values.items():
                _save(key, value)
            if not limit_values:
                st.toast("limits unchanged", icon=":material/check:")
    st.subheader("Prices")
    st.caption("What each provider and model charges, in dollars: tasks then show their cost, the New task page "
               "estimates it, and a task's budget can stop it. Any of per_call (a call that succeeded), per_image, "
               "per_1k_input and per_1k_output (tokens, where the API reports them), e.g. per_image=0.04 or "
               "per_1k_input=0.00015 per_1k_output=0.0006; off for none. A change applies to the next call of "
               "every task.")
    prices = price_rows(rt.db, rt.settings)
    if not prices:
        st.caption("The offline providers are free: no price to set.")
    else:
        with st.form("prices"):
            price_values: dict[str, str] = {}
            for price in prices:
                used = f" ({price.used_for})" if price.used_for else " (not configured now)"
                text = st.text_input(price.key.removeprefix("price:") + used, value=price.text or "off",
                                     disabled=not editable, key=f"price_{price.key}")
                if text.strip() != (price.text or "off"):
                    price_values[price.key] = text
            if st.form_submit_button("Save prices", disabled=not editable):
                for key, value in price_values.items():
                    _save(key, value, set_price)
                if not price_values:
                    st.toast("prices unchanged", icon=":material/check:")
