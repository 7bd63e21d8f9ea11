"""Avatar Data Generator: the entry point (``streamlit run Home.py``).

Every run passes here first: the page config, the navigation, the login gate, the sidebar with the page links and
the signed-in user, then the page the URL names (``pages/``). The in-app worker starts with the process's runtime.
"""

from __future__ import annotations

import streamlit as st

from pages import ui

st.set_page_config(page_title="Avatar Data Generator", page_icon=":material/diversity_3:", layout="wide")

# The navigation is declared before any widget, on every run, so a shared link such as /gallery?tasks=… keeps its
# page and query string through the login. Logged out, the pages are declared but never run. The sidebar's links
# are drawn below, after the gate: .streamlit/config.toml hides Streamlit's own page list
# (client.showSidebarNavigation), which on a fresh server would otherwise list the files of pages/.
known = st.session_state.get(ui.USER_KEY)
was_admin = bool(st.session_state.get(ui.ADMIN_KEY))
pages = ui.app_pages(admin=was_admin or not known)
navigation = st.navigation(pages, position="hidden")

gate = st.container()  # first on the page, before the runtime's start-up spinner: see ui.login_gate
rt = ui.runtime()
with gate:
    user, authenticator = ui.login_gate(rt)
if user is None:
    st.session_state.pop(ui.USER_KEY, None)
    st.stop()
st.session_state[ui.ADMIN_KEY] = user.is_admin
if not known or was_admin != user.is_admin:
    st.rerun()  # just logged in (or the role changed): declare the pages that fit the user
if authenticator is not None and ui.COOKIE_NAME not in st.context.cookies:
    authenticator.cookie_controller.set_cookie()  # the rerun above dropped stauth's cookie: set it now
ui.keep_drafts(user.email)

with st.sidebar:
    for page in pages:
        st.page_link(page)
    st.divider()
    st.caption(f"Signed in as `{user.email}` ({user.role})")
    if authenticator is not None:
        authenticator.logout("Log out", location="sidebar", key="adg_logout",
                             callback=lambda *_: ui.log_out(rt, user.email))
    if rt.worker is not None:
        st.caption(":material/memory: in-app worker running")

navigation.run()
