"""What the pages share: the list of pages, the process runtime, the login gate, the current user, and small
display helpers. Pages are thin: they call ``pipeline`` functions and show ``PipelineError``s with ``st.error``.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import pandas as pd
import streamlit as st
import streamlit_authenticator as stauth

from pipeline.core.config import get_settings
from pipeline.core.errors import PipelineError
from pipeline.outputs import images
from pipeline.submit import accounts
from pipeline.submit.accounts import User
from pipeline.worker.runtime import Runtime, open_runtime

USER_KEY = "adg_user_email"
ADMIN_KEY = "adg_user_is_admin"
COOKIE_NAME = "adg_auth"
_REROUTED_KEY = "adg_rerouted_through_home"
_FLASH_KEY = "adg_flash"

# url path -> (file in this folder, title, icon). "users" is for administrators only.
PAGES: dict[str, tuple[str, str, str]] = {
    # The default page's URL path differs from its file's name: in Streamlit's pages/-folder mode (AppTest runs
    # every script in it) the current page would otherwise run as pages/overview.py alone, without the login gate.
    "dashboard": ("overview.py", "Overview", ":material/dashboard:"),
    "new": ("new.py", "New task", ":material/add_circle:"),
    "tasks": ("tasks.py", "Tasks", ":material/list_alt:"),
    "gallery": ("gallery.py", "Gallery", ":material/photo_library:"),
    "settings": ("settings.py", "Settings", ":material/tune:"),
    "users": ("users.py", "Users", ":material/group:"),
}
ADMIN_PAGES = {"users"}


def app_pages(admin: bool) -> list[st.Page]:
    """The app's pages for ``st.navigation`` (Overview, the first, is the default), without the administrators'
    pages unless ``admin``."""
    folder = Path(__file__).resolve().parent
    return [
        st.Page(folder / file, title=title, icon=icon, url_path=url, default=url == next(iter(PAGES)))
        for url, (file, title, icon) in PAGES.items()
        if admin or url not in ADMIN_PAGES
    ]

STATUS_BADGES: dict[str, tuple[str, str]] = {
    "pending": ("gray", ":material/schedule:"),
    "generating-data": ("blue", ":material/edit_note:"),
    "data-generated": ("violet", ":material/description:"),
    "generating-images": ("blue", ":material/image:"),
    "completed": ("green", ":material/check_circle:"),
    "partial": ("orange", ":material/warning:"),
    "failed": ("red", ":material/error:"),
    "cancelled": ("gray", ":material/cancel:"),
    "held": ("orange", ":material/pause_circle:"),
}


@st.cache_resource(show_spinner="Starting: migrating the database…")
def _runtime(database_url: str, storage_url: str, worker_in_app: bool) -> Runtime:
    settings = get_settings()
    return open_runtime(settings, start_worker=worker_in_app)


def runtime() -> Runtime:
    """The process's runtime (one per Streamlit server process, with its in-app worker when enabled)."""
    settings = get_settings()
    try:
        return _runtime(settings.database_url, settings.storage_url, settings.worker_in_app)
    except PipelineError as exc:
        st.error(f"The app cannot start: {exc}")
        st.stop()
        raise


COOKIE_EXPIRY_DAYS = 1
_SINCE_KEY = "adg_session_since"  # when this session's login began (epoch seconds): a logout elsewhere ends it
_CLIENT_KEY = "adg_client"


@st.cache_resource
def _unusable_hash() -> str:
    """A valid bcrypt hash of a secret nobody knows: the login cookie's directory never holds a real hash (the
    password form is ours; streamlit-authenticator only reads and writes the cookie)."""
    return bcrypt.hashpw(secrets.token_bytes(32), bcrypt.gensalt(rounds=4)).decode()


def _first_admin_form(rt: Runtime) -> None:
    st.title("Avatar Data Generator")
    st.info("No account exists yet. Create the first administrator to start.")
    with st.form("first_admin"):
        email = st.text_input("E-mail")
        password = st.text_input("Password (8 characters or more)", type="password")
        repeat = st.text_input("Repeat password", type="password")
        if st.form_submit_button("Create administrator", type="primary"):
            if password != repeat:
                st.error("The passwords do not match.")
                return
            try:
                accounts.create_first_admin(rt.db, email, password)
            except PipelineError as exc:
                st.error(str(exc))
                return
            st.session_state[_FLASH_KEY] = "Administrator created: log in below."
            st.rerun()


def login_client() -> str:
    """Who is trying to log in, for the failed-login throttle: the connection's address where Streamlit knows it
    (behind a trusted reverse proxy, the address the proxy saw), else this browser session (Streamlit gives no address for a connection from localhost)."""
    direct = st.context.ip_address
    address = accounts.login_client_address(
        direct if isinstance(direct, str) else None,  # (AppTest's mocked runtime answers with a non-string)
        st.context.headers.get("X-Forwarded-For"),
        trust_proxy=get_settings().trust_proxy_headers,
    )
    if address:
        return "address " + address
    if _CLIENT_KEY not in st.session_state:
        st.session_state[_CLIENT_KEY] = "session " + secrets.token_hex(8)
    return str(st.session_state[_CLIENT_KEY])


def _cookie_issued_at(key: str) -> datetime | None:
    """When the login cookie this browser sent was issued: streamlit-authenticator's cookie is a JWT holding
    only the e-mail and its expiry, which is the issue time plus ``COOKIE_EXPIRY_DAYS``."""
    token = st.context.cookies.get(COOKIE_NAME)
    if not token:
        return None
    try:
        claims = jwt.decode(token, key, algorithms=["HS256"])
        expires = float(claims["exp_date"])
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return None
    return datetime.fromtimestamp(expires, timezone.utc) - timedelta(days=COOKIE_EXPIRY_DAYS)


def _password_form(rt: Runtime, authenticator: Any) -> None:
    """The login form (ours, so that every attempt goes through ``accounts.authenticate``: one bcrypt cost,
    the per-client delay, the lock-out, the same words for known and unknown e-mails)."""
    client = login_client()
    wait = accounts.client_wait(rt.db, client)
    if wait > 0:  # no form at all while this client must wait: nothing is checked meanwhile
        st.error(accounts.client_wait_message(wait))
        return
    with st.form("Login"):
        st.subheader("Log in")
        email = st.text_input("E-mail", autocomplete="off")
        password = st.text_input("Password", type="password", autocomplete="off")
        submitted = st.form_submit_button("Log in")
    if not submitted:
        return
    result = accounts.authenticate(rt.db, email, password, client=client)
    if result.user is None:
        st.error(result.message or accounts.WRONG_LOGIN)
        return
    user = result.user
    # streamlit-authenticator's session keys: its cookie and logout button read them
    st.session_state.update(authentication_status=True, username=user.email, name=user.email, email=user.email,
                            roles=[user.role], logout=None)
    st.session_state[_SINCE_KEY] = time.time()
    st.session_state[USER_KEY] = user.email
    st.session_state.pop(_FLASH_KEY, None)
    authenticator.cookie_controller.set_cookie()


DRAFT_PREFIX = "nt_"  # the New task form's widget keys: a draft the user keeps while looking at other pages
_DRAFT_OWNER_KEY = "adg_draft_owner"  # the account whose draft it is


def _drafts() -> list[str]:
    return [key for key in st.session_state if str(key).startswith(DRAFT_PREFIX)]


def keep_drafts(email: str) -> None:
    """Keep the New task form's values through runs of other pages (Home.py calls this before every page).

    Streamlit drops a widget's value at the end of a run that did not draw the widget, so a population typed on New
    task was gone after a look at the gallery. Set again as session state, the values stay until the logout; a
    draft left by another account in this browser session (its login expired, someone else logged in) goes."""
    if st.session_state.get(_DRAFT_OWNER_KEY) != email:
        _forget_drafts()
        st.session_state[_DRAFT_OWNER_KEY] = email
    for key in _drafts():
        st.session_state[key] = st.session_state[key]


def _forget_drafts() -> None:
    for key in _drafts():
        del st.session_state[key]


def _forget_session() -> None:
    """What this browser session knew of its user: who they are, since when, and their New task draft."""
    _forget_drafts()
    for key in (USER_KEY, _SINCE_KEY):
        st.session_state.pop(key, None)


def log_out(rt: Runtime, email: str) -> None:
    """The logout button's callback: this account's sessions and login cookies end everywhere (a copy of the
    cookie is refused by the gate from now on, not only the one this browser deletes)."""
    accounts.end_sessions(rt.db, email)
    _forget_session()


def _end_session(authenticator: Any, message: str) -> tuple[None, Any]:
    authenticator.logout(location="unrendered")
    _forget_session()
    st.error(message)
    return None, authenticator


def login_gate(rt: Runtime) -> tuple[User | None, Any]:
    """The logged-in, active user (or None after rendering the login or first-admin form) and the authenticator.

    Call it inside a container that comes first on the page (Home.py does): the first-administrator form and the
    login form then start at the same place, so while a run replaces one with the other Streamlit overwrites
    the old form in place and never shows both (two "E-mail" fields).

    streamlit-authenticator keeps the login cookie (its directory lists every account, for the cookie only);
    the password form is ours (``_password_form``). Lock-out, deactivation and ended sessions live in the
    database and are checked on every run: a deactivated account, or a session begun before a logout or a
    password reset of its account, is signed out; a lock-out does not end sessions already signed in.
    """
    if accounts.count_users(rt.db) == 0:
        _first_admin_form(rt)
        return None, None
    entries = {
        row["email"].strip().lower(): {"email": row["email"], "name": row["email"], "password": _unusable_hash(),
                                        "roles": [row["role"]], "failed_login_attempts": 0, "logged_in": False}
        for row in accounts.login_directory(rt.db)
        if row["active"]
    }
    if not st.session_state.get("authentication_status"):
        st.title("Avatar Data Generator")  # where the first-administrator form has its title
        flash = st.session_state.get(_FLASH_KEY)  # kept until the login: the login page reruns before anyone types
        if flash:
            st.success(flash)
    authenticator = stauth.Authenticate(  # draws its cookie component here, before the login form
        {"usernames": entries},
        cookie_name=COOKIE_NAME,
        cookie_key=rt.settings.cookie_key(),
        cookie_expiry_days=COOKIE_EXPIRY_DAYS,
        auto_hash=False,
        login_sleep_time=0,  # stauth waits 0.7 s before the form by default; the cookie check needs no wait
    )
    # Signs in from a valid cookie and draws nothing. A cookie of an account that is gone or deactivated raises:
    # the password form follows.
    with contextlib.suppress(stauth.LoginError, stauth.AuthenticateError, stauth.CredentialsError):
        authenticator.login(location="unrendered")
    if not st.session_state.get("authentication_status"):
        _password_form(rt, authenticator)
        if not st.session_state.get("authentication_status"):
            return None, authenticator
    email = str(st.session_state.get("username") or "").strip().lower()
    if st.session_state.get(USER_KEY) != email or _SINCE_KEY not in st.session_state:
        # A session resumed from the login cookie began when the cookie was issued (signed in otherwise, by a
        # path that records no time, it begins now).
        issued = _cookie_issued_at(rt.settings.cookie_key())
        st.session_state[_SINCE_KEY] = issued.timestamp() if issued is not None else time.time()
        st.session_state[USER_KEY] = email
        st.session_state.pop(_FLASH_KEY, None)
    since = datetime.fromtimestamp(float(st.session_state[_SINCE_KEY]), timezone.utc)
    current = accounts.session_user(rt.db, email, since)
    if current is None:
        return _end_session(authenticator, "your session has ended (signed out, deactivated or password reset): "
                                           "log in again")
    return current, authenticator


def current_user(rt: Runtime) -> User:
    """The logged-in user for a page (Home.py has run the gate); stops the page when there is none.

    A page runs without Home.py only in the first script run of a fresh server process: until some session
    declares ``st.navigation``, Streamlit runs the requested file of ``pages/`` directly (its behaviour for a
    folder of that name beside the main script). Then this declares the navigation and runs the same URL again,
    through Home.py's login gate; the page, with its query string, follows the login.
    """
    email = st.session_state.get(USER_KEY)
    user = accounts.active_user(rt.db, email) if email else None
    if user is None:
        if not st.session_state.get(_REROUTED_KEY):
            st.session_state[_REROUTED_KEY] = True  # once per session: a page run on its own stops below
            st.navigation(app_pages(admin=True), position="hidden")
            st.rerun()
        st.warning("Please log in.")
        st.stop()
        raise RuntimeError("unreachable")
    return user


def fresh_user(rt: Runtime) -> User:
    """The signed-in user as the database has them now (role, active), for the start of every fragment run and
    every widget callback that reads or changes data.

    Fragments (the Tasks list refreshes every 3 s) and callbacks do not pass through Home.py's login gate, and a
    ``User`` kept from the last full run still carries the role it had then: a demoted administrator would keep
    seeing and deleting everyone's tasks. When the account is gone or deactivated, the whole app reruns (the gate
    then ends the session) and nothing after this call runs.
    """
    email = st.session_state.get(USER_KEY)
    user = accounts.active_user(rt.db, email) if email else None
    if user is None:
        st.session_state.pop(USER_KEY, None)
        st.rerun()  # from a fragment or a callback alike: a full run, through the gate
    return user


_MARKDOWN_CHARACTERS = re.compile(r"[!-/:-@\[-`{-~]")  # every ASCII punctuation character


def plain(text: object) -> str:
    """Text written by a model or a user, for an element that renders markdown (headers, captions, alerts,
    toasts, labels): every markdown, HTML, LaTeX and Streamlit-directive character is escaped, so it shows as
    written. A name like ``![](https://host/x)`` must never make a browser fetch an outside image, nor
    ``**bold**`` restyle a page. Long texts (bios, error logs) go to ``st.text``/``st.code`` instead."""
    return _MARKDOWN_CHARACTERS.sub(lambda m: "\\" + m.group(0), "" if text is None else str(text))


def show_error(exc: PipelineError) -> None:
    st.error(plain(exc), icon=":material/error:")  # messages can quote a model's reply


def status_badge(status: str) -> None:
    color, icon = STATUS_BADGES.get(status, ("gray", ":material/help:"))
    st.badge(status, color=color, icon=icon)  # type: ignore[arg-type]


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "—"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


IMAGE_CACHE_BYTES = 64 * 1024 * 1024  # images read for the pages, kept per server process


@st.cache_resource(show_spinner=False)
def _image_cache() -> images.ImageCache:
    return images.ImageCache(IMAGE_CACHE_BYTES)


def image_source(rt: Runtime, uri: str | None) -> str | bytes | None:
    """What ``st.image`` may show for a stored image: a short-lived presigned URL, or bytes sent after the login."""
    if not uri:
        return None
    url = images.display_url(rt.storage, uri)
    if url:
        return url
    key = ("image", rt.settings.storage_url, uri)
    data = _image_cache().get(key)
    if data is None:
        data = images.image_bytes(rt.storage, uri)
        if data is not None:
            _image_cache().put(key, data)
    return data


def thumbnail_source(rt: Runtime, uri: str | None) -> str | bytes:
    """A small image for a list of personas, always: a presigned URL of the stored thumbnail, or a small JPEG
    (made from a full image when there is no thumbnail; a placeholder when there is no image)."""
    url = images.thumbnail_url(rt.storage, uri)
    if url:
        return url
    key = ("thumbnail", rt.settings.storage_url, uri or "")
    data = _image_cache().get(key)
    if data is None:
        data = images.thumbnail_bytes(rt.storage, uri)
        _image_cache().put(key, data)
    return data


def data_uri(rt: Runtime, uri: str | None) -> str:
    """A thumbnail for ``st.dataframe``'s ImageColumn: a presigned URL or the data URI of a small JPEG (never a
    public path, never a full image: 96 full PNGs in one table could pass Streamlit's message limit)."""
    source = thumbnail_source(rt, uri)
    return source if isinstance(source, str) else images.data_uri(source)


def targets_report(report: dict[str, Any] | None) -> None:
    """Requested vs achieved, one table per target, with the chi-square test where there is one."""
    if not report:
        return
    for name in ("gender", "ethnicity", "age"):
        part = report.get(name)
        if not part:
            continue
        if "rows" in part:
            verdict = ""
            if part.get("p_value") is not None:
                verdict = f" · chi² {part.get('chi2', 0):.2f}, p = {part['p_value']:.3f}"
            st.caption(f"{name}: requested vs achieved{verdict}")
            st.dataframe(part["rows"], hide_index=True, width="stretch")
        elif "range" in part:
            st.caption(f"age {part['range'][0]}–{part['range'][1]}: {part['inside']} inside, {part['outside']} outside")


FLAG_LABELS: dict[str, str] = {
    "identity_inconsistent": "inconsistent identity",
    "no_face": "no face in the base",
    "several_faces": "several faces in the base",
    "grid_face_count": "a variation without exactly one face",
    "duplicate_identity": "duplicate identity",
    "face_leakage": "face-library leakage",
    "duplicate_name": "duplicate name",
    "near_duplicate_bio": "near-duplicate bio",
    "near_duplicate_image": "near-duplicate image",
    "language_mismatch": "bio language mismatch",
    "grid_retried": "grid asked for again",
}


def flag_label(flag: str) -> str:
    return FLAG_LABELS.get(flag, flag.replace("_", " "))


def flag_badges(flags: list[str]) -> str:
    """Markdown badges naming quality flags (their labels are ours, never model text)."""
    return " ".join(f":orange-badge[{flag_label(f)}]" for f in flags)


def quality_summary(summary: dict[str, Any] | None) -> None:
    if not summary:
        return
    flags = summary.get("flags") or summary.get("counts") or {}
    if isinstance(flags, dict) and flags:
        st.caption("quality flags (personas): " + ", ".join(f"{flag_label(k)} {v}" for k, v in sorted(flags.items())))
    else:
        st.caption("quality checks: nothing flagged")
    identity_summary(summary.get("identity"))


def identity_summary(identity: dict[str, Any] | None) -> None:
    """The identity check of one task: what was scored, and the histogram of variation-to-base distances."""
    if not identity:
        return
    analysed, scored = identity.get("personas_analysed", 0), identity.get("personas_scored", 0)
    threshold = (identity.get("thresholds") or {}).get("same_person", 0.6)
    if analysed and not scored:
        st.info("Identity check: no face was found in any base selfie, so identity was not scored. Drawn faces "
                "(the offline renderer's) are usually not faces to the detector.", icon=":material/face:")
        return
    within, measured = identity.get("variations_within", 0), identity.get("variations_measured", 0)
    parts = [f"{scored} of {analysed} personas scored", f"mean identity score {identity.get('mean_score')}",
             f"{within} of {measured} variations within {threshold} of their base"]
    if identity.get("duplicate_pairs"):
        parts.append(f"{identity['duplicate_pairs']} duplicate-identity pairs")
    if identity.get("personas_not_analysed"):
        parts.append(f"{identity['personas_not_analysed']} personas not analysed")
    st.caption("identity check: " + " · ".join(parts))
    hist = identity.get("histogram") or {}
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if measured and len(edges) == len(counts) + 1:
        frame = pd.DataFrame({"distance to base": [f"{e:.2f}" for e in edges[:-1]], "variations": counts})
        st.bar_chart(frame, x="distance to base", y="variations", height=180)
        st.caption(f"face-embedding distance of each variation to its base; same person below {threshold}")


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
