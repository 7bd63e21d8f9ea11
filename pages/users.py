"""Users (administrators): create, deactivate, reset password, change role. Every change is audited."""

from __future__ import annotations

import streamlit as st

from pages import ui
from pipeline.core.errors import PipelineError
from pipeline.submit import accounts

rt = ui.runtime()
user = ui.current_user(rt)
st.header("Users")
if not user.is_admin:
    st.error("Only administrators can manage users.")
    st.stop()

try:
    users = accounts.list_users(rt.db, user)
except PipelineError as exc:
    ui.show_error(exc)
    st.stop()
st.dataframe(
    [{"e-mail": u.email, "role": u.role, "active": u.is_active, "last login": ui.fmt_time(u.last_login),
      "locked until": ui.fmt_time(u.locked_until), "created": ui.fmt_time(u.created_at)} for u in users],
    hide_index=True,
    width="stretch",
)

create, manage = st.columns(2, gap="large")
with create, st.form("create_user", clear_on_submit=True):
    st.subheader("Create a user")
    email = st.text_input("E-mail")
    password = st.text_input("Initial password", type="password")
    admin = st.checkbox("Administrator")
    if st.form_submit_button("Create", type="primary"):
        try:
            accounts.create_user(rt.db, email, password, admin=admin, actor=user)
        except PipelineError as exc:
            ui.show_error(exc)
        else:
            st.success(f"{email} created")
            st.rerun()

with manage:
    st.subheader("Change a user")
    target = st.selectbox("User", [u.email for u in users])
    chosen = next((u for u in users if u.email == target), None)
    if chosen is not None:
        c1, c2 = st.columns(2)
        try:
            if c1.button("Deactivate" if chosen.is_active else "Activate"):
                accounts.set_active(rt.db, user, chosen.email, not chosen.is_active)
                st.rerun()
            new_role = "user" if chosen.role == "admin" else "admin"
            if c2.button(f"Make {new_role}"):
                accounts.set_role(rt.db, user, chosen.email, new_role)
                st.rerun()
            with st.form("reset_password", clear_on_submit=True):
                new_password = st.text_input("New password", type="password")
                if st.form_submit_button("Reset password"):
                    accounts.reset_password(rt.db, user, chosen.email, new_password)
                    st.success(f"Password of {chosen.email} reset; the lock-out is cleared.")
        except PipelineError as exc:
            ui.show_error(exc)
