"""Streamlit pieces of the Runs page: filters, the selectable table, the action buttons and
the delete confirmation. The rules behind the buttons live in ``dashboard.views.runs``."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from bsq_engine import list_datasets, list_models
from bsq_engine.units import MISSING
from dashboard.ui import identity, state, widgets
from dashboard.ui.accessors import forget_run_colors, list_runs_frame
from dashboard.ui.run_panel import render_run_panel
from dashboard.views import plain
from dashboard.views import runs as rv

__all__ = ["COLUMN_CONFIG", "runs_table", "selected_run"]

TABLE_VERSION = "runs.table_version"  # bumped to clear the selection after a change
COLUMN_CONFIG = {
    "name": st.column_config.TextColumn("Name"),
    "owner": st.column_config.TextColumn("Started by", help="Only they (or an admin) can "
                                         "stop, resume or delete it; 'cli': the command line"),
    "status": st.column_config.TextColumn("Status"),
    "model": st.column_config.TextColumn("Model"),
    "dataset": st.column_config.TextColumn("Dataset"),
    "method": st.column_config.TextColumn("Method"),
    "alpha": st.column_config.NumberColumn("alpha", format="%.4g"),
    "accuracy_pct": st.column_config.NumberColumn("Accuracy %", format="%.2f"),
    "avg_bits": st.column_config.NumberColumn("Avg bits", format="%.2f"),
    "compression": st.column_config.NumberColumn("Compression", format="%.1fx",
                                                  help="32 / average bits (sign not counted)"),
    "bits": st.column_config.TextColumn("Bits per layer"),
    "duration_s": st.column_config.NumberColumn("Duration (s)", format="%.0f"),
    "device": st.column_config.TextColumn("Device"),
    "world_size": st.column_config.NumberColumn("Procs", format="%d",
                                                help="processes of a DDP (torchrun) run"),
    "worker": st.column_config.TextColumn("Worker", help="job-queue thread, torchrun or Ray node"),
    "created": st.column_config.DatetimeColumn("Created (UTC)", format="YYYY-MM-DD HH:mm"),
    "run_id": st.column_config.TextColumn("Run id"),
}  # fmt: skip


def _reset_selection() -> None:
    st.session_state[TABLE_VERSION] = st.session_state.get(TABLE_VERSION, 0) + 1


def _filters() -> dict:
    c1, c2, c3 = st.columns([2, 1, 1])
    statuses = c1.multiselect("Status", rv.STATUS_CHOICES, key="runs.f_status",
                              placeholder="any status", on_change=_reset_selection)  # fmt: skip
    model = c2.selectbox("Model", [rv.ALL, *list_models()], key="runs.f_model",
                         on_change=_reset_selection)  # fmt: skip
    dataset = c3.selectbox("Dataset", [rv.ALL, *list_datasets()], key="runs.f_dataset",
                           on_change=_reset_selection)  # fmt: skip
    return rv.filters(statuses, model, dataset)


def _each(action, run_ids: list[str], verb: str, done_text: str) -> None:
    """Apply ``action`` to every run this session may control (the ownership rule, checked
    again here: the table may be stale); say what worked and, per run, what did not."""
    done, problems = 0, []
    for run_id in run_ids:
        try:
            refusal = identity.refusal(state.store().get_run(run_id), verb)
            if refusal is not None:
                raise ValueError(refusal)
            action(run_id)
            done += 1
        except (ValueError, KeyError, RuntimeError) as exc:
            problems.append(plain.md(f"{run_id}: {exc}"))
    if problems:
        state.set_flash("error", f"Could not {verb} " + "; ".join(problems))
    elif done:
        state.set_flash("success", f"{done} run(s) {done_text}.")
    _reset_selection()
    st.rerun()


def _actions(selected: list[str], status: dict[str, str]) -> None:
    if not selected:
        st.caption("Select rows (the box at the left of each row) to open, resume, stop, "
                   "delete or compare runs.")  # fmt: skip
        return
    mgr, can = state.manager(), rv.actions(selected, status)
    refusals = [r for r in (identity.refusal(state.store().get_run(rid), "stop")
                            for rid in selected) if r]  # fmt: skip
    if refusals:  # viewing is open to all; controls only to owners and admins
        st.caption(refusals[0] + (f" ({len(refusals) - 1} more)" if len(refusals) > 1 else ""))
    mine = not refusals
    row = st.container(horizontal=True)
    if row.button("Open", icon=":material/visibility:", disabled=not can.open,
                  help="Show it below"):  # fmt: skip
        state.set_url_run(selected[0])
    hint = "Continue interrupted, stopped or failed runs from their last checkpoint"
    if row.button("Resume", icon=":material/replay:", disabled=not (can.resume and mine),
                  help=hint):  # fmt: skip
        _each(mgr.resume, selected, "resume", "queued to resume")
    if row.button("Stop", icon=":material/stop_circle:", disabled=not (can.stop and mine)):
        _each(mgr.stop, can.to_stop, "stop", "asked to stop")
    hint = "Asks for a confirmation" if can.delete else "Stop running runs first"
    if row.button("Delete", icon=":material/delete:", disabled=not (can.delete and mine),
                  help=hint):  # fmt: skip
        st.session_state[state.KEY_DELETE_PENDING] = list(selected)
    if row.button("Compare", icon=":material/compare_arrows:", disabled=not can.compare,
                  help=f"Select 2 to {rv.MAX_COMPARE} runs"):  # fmt: skip
        st.switch_page("pages/compare.py", query_params={"runs": ",".join(selected)})
    if row.button(
        "Clone settings into the form",
        icon=":material/content_copy:",
        disabled=not can.open,
        help="Open the Train page with this run's settings",
    ):
        widgets.clone_into_form(state.store().get_run(selected[0])["config"])
        st.switch_page("pages/train.py")
    if can.open:
        _annotate(state.store().get_run(selected[0]))


def _annotate(run: dict) -> None:
    """Rename, tag or note the one selected run (shown as plain text everywhere)."""
    expander = st.expander("Rename, tag or add a note", icon=":material/edit:")
    with expander, st.form(key=f"runs.annotate.{run['run_id']}", border=False):
        rid = run["run_id"]  # per-run keys: another selected run starts from its own values
        name = st.text_input("Name", value=run.get("name") or "", max_chars=120,
                             key=f"runs.name.{rid}")  # fmt: skip
        tags = st.text_input("Tags (comma-separated)", value=", ".join(run.get("tags") or []),
                             key=f"runs.tags.{rid}")  # fmt: skip
        note = st.text_area("Note", value=run.get("note") or "", max_chars=4000,
                            key=f"runs.note.{rid}")  # fmt: skip
        if st.form_submit_button("Save", icon=":material/save:"):
            try:
                state.store().annotate(run["run_id"], name=name, tags=rv.parse_tags(tags),
                                       note=note)  # fmt: skip
            except (ValueError, KeyError) as exc:
                st.error(f"Nothing was saved: {exc}")
                return
            state.set_flash("success", "Saved.")
            st.rerun()


def _delete(run_id: str) -> None:
    state.store().delete_run(run_id)
    forget_run_colors()  # the colours of later runs move up


def _confirm_delete() -> None:
    pending = st.session_state.get(state.KEY_DELETE_PENDING)
    if not pending:
        return
    with st.container(border=True):
        st.warning(f"Delete {len(pending)} run(s) with their checkpoints and exports? "
                   "This cannot be undone.", icon=":material/warning:")  # fmt: skip
        row = st.container(horizontal=True)
        if row.button("Yes, delete", type="primary", key="runs.confirm_delete"):
            del st.session_state[state.KEY_DELETE_PENDING]
            if state.url_run_id() in pending:
                state.set_url_run(None)
            _each(_delete, pending, "delete", "deleted")
        if row.button("Cancel", key="runs.cancel_delete"):
            del st.session_state[state.KEY_DELETE_PENDING]
            st.rerun()


def runs_table() -> None:
    """Filters, the table of matching runs, and the buttons for the selected rows."""
    filters = _filters()
    df = list_runs_frame(**filters)  # warns about damaged rows, which it leaves out
    if df.empty:
        st.info("No runs match these filters." if any(filters.values()) else "No runs yet.")
        st.page_link(
            "pages/train.py", label="Start one on the Train page", icon=":material/play_arrow:"
        )
        return
    extra = st.multiselect("More columns", list(rv.EXTRA_COLUMNS), default=rv.DEFAULT_EXTRA,
                           format_func=rv.EXTRA_COLUMNS.get, key="runs.extra_columns")  # fmt: skip
    runs = state.store().list_runs(**filters)  # the same rows, with config and tags
    df = df.merge(pd.DataFrame(rv.extra_columns(runs)), on="run_id", how="left")
    column_config = {**COLUMN_CONFIG, **{c: st.column_config.Column(rv.EXTRA_COLUMNS[c])
                                         for c in rv.EXTRA_COLUMNS}}  # fmt: skip
    order = [*rv.COLUMNS[:1], *[c for c in extra if c in ("tags", "note")], *rv.COLUMNS[1:-1],
             *[c for c in extra if c not in ("tags", "note")], rv.COLUMNS[-1]]  # fmt: skip
    event = st.dataframe(
        df, key=f"runs.table.{st.session_state.get(TABLE_VERSION, 0)}", on_select="rerun",
        selection_mode="multi-row", hide_index=True, column_order=order,
        column_config=column_config, width="stretch", placeholder=MISSING,
    )  # fmt: skip
    rows = [r for r in event.selection.rows if r < len(df)]
    _actions(df.iloc[rows]["run_id"].tolist(), dict(zip(df["run_id"], df["status"])))
    _confirm_delete()


def selected_run() -> None:
    """The panel of the run opened with ``?run=``, if any."""
    if run_id := state.url_run_id():
        st.divider()
        render_run_panel(run_id, key="runs")
