"""Who may stop, resume and delete a run: the one home of the rule, for the app and the CLI.

- Everyone can view every run.
- A run's owner (the name a browser session typed) may stop, resume and delete it.
- Runs started from the CLI (owner ``"cli"``) are controlled only from the CLI.
- The CLI is the machine's operator (it can open the store file anyway): it controls all.
- An admin (a session that entered the password of ``BSQ_ADMIN_PASSWORD`` or of Streamlit
  secrets ``admin_password``) controls all.
- Runs stored before owners existed (owner NULL) stay open to everyone, as they were: they
  come from a single-user install (a class server starts with owners recorded).

Names are not a security boundary (anyone can type any name): they keep a class's students
from stopping each other's runs by accident. The admin password is the one real gate, like
Jupyter's token; it is compared in constant time and never stored.
"""

from __future__ import annotations

import hmac
import os
import unicodedata
from dataclasses import dataclass

__all__ = [
    "ACTIONS",
    "ADMIN_PASSWORD_ENV",
    "CLI_OWNER",
    "Actor",
    "OwnershipError",
    "can_control",
    "check_control",
    "check_password",
    "clean_name",
]

CLI_OWNER = "cli"
ADMIN_PASSWORD_ENV = "BSQ_ADMIN_PASSWORD"
ACTIONS = ("stop", "resume", "delete")
_MAX_NAME = 40


class OwnershipError(PermissionError):
    """The actor may not do this to that run; the message says who may."""


@dataclass(frozen=True)
class Actor:
    """Who asks: a session's name (None before one is typed), admin, or the CLI."""

    name: str | None = None
    admin: bool = False
    cli: bool = False

    @classmethod
    def command_line(cls) -> Actor:
        return cls(name=CLI_OWNER, cli=True)


def clean_name(text: str | None) -> str:
    """A session's name as typed -> the stored owner; ValueError says what to type instead.

    Whitespace is collapsed and control characters refused, so a name always prints on one
    line; ``cli`` is reserved for the command line.
    """
    name = " ".join(str(text or "").split())
    if not name:
        raise ValueError("Type a name (e.g. your first name) so your runs are yours.")
    if len(name) > _MAX_NAME:
        raise ValueError(f"A name has at most {_MAX_NAME} characters; {len(name)} given.")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise ValueError("A name cannot hold control characters; use letters and digits.")
    if name.casefold() == CLI_OWNER:
        raise ValueError(f"{CLI_OWNER!r} is reserved for runs started from the command line.")
    return name


def can_control(run: dict, actor: Actor) -> bool:
    """May ``actor`` stop, resume or delete ``run`` (a store run dict)?"""
    if actor.admin or actor.cli:
        return True
    owner = run.get("owner")
    if owner is None:
        return True
    if owner == CLI_OWNER or actor.name is None:
        return False
    return owner.casefold() == actor.name.casefold()


def check_control(run: dict, actor: Actor, action: str) -> None:
    """Raise :class:`OwnershipError` (what is refused, who may) unless ``can_control``."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}; use one of {', '.join(ACTIONS)}.")
    if can_control(run, actor):
        return
    rid, owner = run.get("run_id"), run.get("owner")
    if owner == CLI_OWNER:
        who = f"it was started from the command line: `python -m bsq_engine {action} {rid}`"
    elif actor.name is None:
        who = f"it belongs to {owner}; type your name first (only an owner or an admin may)"
    else:
        who = f"it belongs to {owner} (only its owner or an admin may)"
    raise OwnershipError(f"You cannot {action} run {rid}: {who}.")


def admin_password(secrets=None) -> str | None:
    """The admin password: ``$BSQ_ADMIN_PASSWORD``, else ``secrets["admin_password"]``
    (a Mapping such as ``st.secrets``); None (admin disabled) when neither is set."""
    value = os.environ.get(ADMIN_PASSWORD_ENV, "")
    if not value and secrets is not None:
        try:
            value = str(secrets.get("admin_password") or "")
        except Exception:  # no secrets.toml at all: Streamlit raises on access
            value = ""
    return value or None


def check_password(given: str | None, secrets=None) -> bool:
    """True when ``given`` is the admin password (constant-time); False when none is set."""
    expected = admin_password(secrets)
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
