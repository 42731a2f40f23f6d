"""Who this browser session is: a name kept in the URL (``?user=``), and admin rights.

A session that has not typed a name gets ``guest-xxxx``, so one person on their own laptop
never has to type anything; in a class each student types a name once. The name lives in
session state and is mirrored into ``?user=`` on every script run, so a reload (or a
bookmarked link) keeps it while page switches, which drop query parameters, restore it.
Names are no security boundary (anyone can type any name); the admin password is. Admin
rights stay in session state only, never in the URL. The rule itself is
``bsq_engine.runs.ownership``.
"""

from __future__ import annotations

import secrets as _secrets

import streamlit as st

from bsq_engine.runs.ownership import (
    Actor,
    OwnershipError,
    admin_password,
    check_control,
    check_password,
)
from bsq_engine.runs.ownership import clean_name as _clean_name
from dashboard.views import plain

__all__ = ["KEY_ADMIN", "KEY_USER", "actor", "allowed", "refusal", "sidebar", "user_name"]

KEY_USER = "app.user"
KEY_ADMIN = "app.admin"
_KEY_NAME_INPUT = "app.user_input"
_KEY_PASSWORD = "app.admin_password"
_GUEST = "guest-"
_NAME_HELP = ("Runs you start are yours: only you or an admin can stop, resume or delete "
              "them. Everyone can look at every run.")  # fmt: skip


def user_name() -> str:
    """This session's name: typed, from ``?user=``, or a new guest name; kept in the URL."""
    name = st.session_state.get(KEY_USER)
    if name is None:
        try:
            name = _clean_name(st.query_params.get("user"))
        except ValueError:  # none, or not a valid name: never echo it back anywhere
            name = _GUEST + _secrets.token_hex(2)
        st.session_state[KEY_USER] = name
    if st.query_params.get("user") != name:
        st.query_params["user"] = name
    return name


def actor() -> Actor:
    return Actor(name=user_name(), admin=bool(st.session_state.get(KEY_ADMIN)))


def allowed(run: dict) -> bool:
    """May this session stop, resume and delete ``run``?"""
    try:
        check_control(run, actor(), "stop")
    except OwnershipError:
        return False
    return True


def refusal(run: dict, action: str) -> str | None:
    """Why this session may not ``action`` the run (Markdown-safe), or None if it may."""
    try:
        check_control(run, actor(), action)
    except OwnershipError as exc:
        return plain.md(str(exc))
    return None


def _rename() -> None:
    try:
        st.session_state[KEY_USER] = _clean_name(st.session_state.get(_KEY_NAME_INPUT))
    except ValueError as exc:
        st.session_state["app.user_error"] = str(exc)


def _login() -> None:
    # Empty the field instead of popping its key: a popped widget key made Streamlit fire
    # on_change once more with an empty value, which logged the admin straight out again
    # (why an admin's Stop on a live panel was refused). An empty field changes nothing.
    given = st.session_state.get(_KEY_PASSWORD, "")
    st.session_state[_KEY_PASSWORD] = ""
    if not given:
        return
    ok = check_password(given, _secrets_or_none())
    st.session_state[KEY_ADMIN] = ok
    if not ok:
        st.session_state["app.user_error"] = (
            "Wrong admin password." if _has_password() else
            "No admin password is set: start the app with BSQ_ADMIN_PASSWORD=... (README)."
        )  # fmt: skip


def _secrets_or_none():
    try:
        return st.secrets
    except Exception:  # no secrets.toml: Streamlit raises on access
        return None


def _has_password() -> bool:
    return admin_password(_secrets_or_none()) is not None


def sidebar() -> None:
    """The name box and the admin login, at the bottom of the sidebar on every page."""
    name = user_name()
    with st.sidebar:
        st.caption("You are")
        st.text(name)  # plain text: a name is never Markdown
        with st.popover("Change name" if not name.startswith(_GUEST) else "Type your name"):
            st.text_input("Your name", key=_KEY_NAME_INPUT, max_chars=40, on_change=_rename,
                          help=_NAME_HELP)  # fmt: skip
        if st.session_state.get(KEY_ADMIN):
            st.caption("Admin: you can stop, resume and delete every run.")
            if st.button("Leave admin mode", key="app.admin_logout"):
                st.session_state[KEY_ADMIN] = False
                st.rerun()
        else:
            with st.popover("Admin"):
                st.text_input("Admin password", type="password", key=_KEY_PASSWORD,
                              on_change=_login)  # fmt: skip
        error = st.session_state.pop("app.user_error", None)
        if error:
            st.error(plain.md(error))
