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


rt = ui.runtime()
user, authenticator = ui.login_gate(rt)
if user is None:
    # Declare the pages (hidden, never run) so a shared link such as /gallery?tasks=… survives the login,
    # and so Streamlit does not list the files of pages/ to a logged-out visitor.
    st.navigation(_pages(admin=True), position="hidden")
    st.stop()

navigation = st.navigation(_pages(user.is_admin))
with st.sidebar:
    st.caption(f"Signed in as **{user.email}** ({user.role})")
    if authenticator is not None:
        authenticator.logout("Log out", location="sidebar", key="logout")
    if rt.worker is not None:
        st.caption(":material/memory: in-app worker running")

navigation.run()
