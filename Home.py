"""Avatar Data Generator: page config, login gate, navigation over the pages, the in-app worker."""

from __future__ import annotations

import streamlit as st

from pages import ui

st.set_page_config(page_title="Avatar Data Generator", page_icon=":material/diversity_3:", layout="wide")

PAGES = {
    "new": ("pages/new_task.py", "New task", ":material/add_circle:"),
    "tasks": ("pages/tasks.py", "Tasks", ":material/list_alt:"),
    "gallery": ("pages/gallery.py", "Gallery", ":material/photo_library:"),
    "settings": ("pages/settings.py", "Settings", ":material/tune:"),
    "users": ("pages/users.py", "Users", ":material/group:"),
}


def _pages(admin: bool) -> list[st.Page]:
    return [
        st.Page(path, title=title, icon=icon, url_path=url, default=url == "new")
        for url, (path, title, icon) in PAGES.items()
        if admin or url != "users"
    ]


# The navigation is declared before any widget, on every run: a shared link such as /gallery?tasks=… keeps its
# page through the login, and Streamlit never falls back to listing the files of pages/ (which, on a fresh
# server, would drop the first form submitted). Logged out, the pages are hidden and never run.
known = st.session_state.get(ui.USER_KEY)
was_admin = bool(st.session_state.get(ui.ADMIN_KEY))
navigation = st.navigation(_pages(admin=was_admin or not known), position="sidebar" if known else "hidden")

rt = ui.runtime()
user, authenticator = ui.login_gate(rt)
if user is None:
    st.session_state.pop(ui.USER_KEY, None)
    st.stop()
st.session_state[ui.ADMIN_KEY] = user.is_admin
if not known or was_admin != user.is_admin:
    st.rerun()  # just logged in (or the role changed): draw the navigation that fits the user
if authenticator is not None and ui.COOKIE_NAME not in st.context.cookies:
    authenticator.cookie_controller.set_cookie()  # the rerun above dropped stauth's cookie: set it now

with st.sidebar:
    st.caption(f"Signed in as `{user.email}` ({user.role})")
    if authenticator is not None:
        authenticator.logout("Log out", location="sidebar", key="adg_logout",
                             callback=lambda *_: st.session_state.pop(ui.USER_KEY, None))
    if rt.worker is not None:
        st.caption(":material/memory: in-app worker running")

navigation.run()
