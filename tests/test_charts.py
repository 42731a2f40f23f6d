"""Frame helpers, live-run charts and comparison charts built from hand-made store records."""

from __future__ import annotations

import json
import re

import altair as alt
import numpy as np
import pandas as pd
import pytest

from bsq_engine.runs.queries import downsample
from dashboard.views.charts import (
    accuracy_chart,
    bits_chart,
    bits_per_layer_chart,
    curves_parts,
    density_heatmap,
    events_table,
    loss_chart,
)
from dashboard.views.compare import (
    density_heatmaps,
    differing_rows,
    grouped_bits_chart,
    highlight_differences,
    overlay_curves,
    summary_table,
)
from dashboard.views.frames import (
    density_matrix,
    epochs_frame,
    layers_frame,
    runs_frame,
    snapshot_at,
)


def _epoch(stage, epoch, g, acc):
    bits = None if stage == "pretrain" else 8.0 - g * 0.5
    return {
        "stage": stage, "epoch": epoch, "global_epoch": g, "train_loss": 2.0 / g,
        "train_acc": acc, "test_loss": 2.5 / g, "test_acc": acc - 0.02, "reg": 0.0,
        "alpha_reg": 0.0, "lr": 0.1, "avg_bits": bits,
        "compression": None if bits is None else 32.0 / bits, "seconds": 1.0, "step_ms": 3.0,
    }  # fmt: skip


@pytest.fixture
def records():
    stages = ["pretrain"] * 2 + ["bsq"] * 3 + ["finetune"] * 2
    out, counts = [], {}
    for g, stage in enumerate(stages, start=1):
        counts[stage] = counts.get(stage, 0) + 1
        out.append(_epoch(stage, counts[stage], g, 0.5 + g * 0.05))
    return out[::-1]  # store order must not matter


def _layer(g, idx, name, n_bits, offset, stage="bsq"):
    density = [0.1 * (k + 1) for k in range(n_bits)]
    return {
        "stage": stage, "epoch": g, "global_epoch": g, "layer_index": idx, "name": name,
        "n_bits": n_bits, "n_weights": 100 * (idx + 1), "density": density,
        "group_norm": [d * 10 for d in density], "msb_offset": offset,
    }  # fmt: skip


@pytest.fixture
def snapshot():
    rows = [_layer(3, i, n, 8, 0) for i, n in enumerate(["conv1", "conv2", "fc"])]
    rows += [_layer(5, 0, "conv1", 8, 0), _layer(5, 1, "conv2", 5, 2), _layer(5, 2, "fc", 0, 0)]
    return snapshot_at(layers_frame(rows[::-1]), 5)


def test_epochs_frame_sorts_and_turns_none_into_nan(records):
    df = epochs_frame(records)
    assert df["global_epoch"].tolist() == list(range(1, 8))
    assert df.loc[0, "stage"] == "pretrain"
    assert np.isnan(df.loc[0, "avg_bits"]) and df.loc[2, "avg_bits"] == pytest.approx(6.5)
    assert epochs_frame([]).empty


def test_snapshot_at_keeps_one_epoch_in_layer_order(snapshot):
    assert snapshot["name"].tolist() == ["conv1", "conv2", "fc"]
    assert snapshot["n_bits"].tolist() == [8, 5, 0]
    assert set(snapshot["global_epoch"]) == {5}


def test_density_matrix_places_planes_at_msb_offset(snapshot):
    matrix, names, labels = density_matrix(snapshot, 8)
    assert matrix.shape == (3, 8) and names == ["conv1", "conv2", "fc"]
    assert labels[0] == "b7 (MSB)" and labels[-1] == "b0 (LSB)"
    np.testing.assert_allclose(matrix[1, 2:7], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert np.isnan(matrix[1, [0, 1, 7]]).all()
    assert np.isnan(matrix[2]).all()  # pruned layer: no planes at all
    with pytest.raises(ValueError, match="max_bits"):
        density_matrix(snapshot, 6)


def test_downsample_keeps_ends_and_limit():
    df = pd.DataFrame({"v": range(1000)})
    out = downsample(df, 50)
    assert len(out) <= 50 and out["v"].iloc[0] == 0 and out["v"].iloc[-1] == 999
    assert downsample(df.head(10), 50) is not None and len(downsample(df.head(10), 50)) == 10


def test_runs_frame_converts_units_and_flattens_scheme():
    run = {
        "run_id": "r1", "name": "bsq a=5e-3", "status": "finished", "method": "bsq",
        "model": "resnet20", "dataset": "cifar10", "alpha": 5e-3, "accuracy": 0.9123,
        "float_accuracy": 0.925, "avg_bits": 2.25, "compression": 14.22, "config": {},
        "created_at": 1_700_000_000.0, "started_at": 1_700_000_010.0,
        "finished_at": 1_700_000_130.0,
        "summary": {"layers": [{"name": "a", "n_bits": 8, "n_weights": 1},
                               {"name": "b", "n_bits": 0, "n_weights": 1}]},
    }  # fmt: skip
    pending = {"run_id": "r2", "status": "queued", "accuracy": None, "summary": None}
    df = runs_frame([run, pending])
    row = df.iloc[0]
    assert row["accuracy_pct"] == pytest.approx(91.23)
    assert row["float_accuracy_pct"] == pytest.approx(92.5)
    assert row["bits"] == "8/0" and row["duration_s"] == pytest.approx(120.0)
    assert row["created"] == pd.Timestamp("2023-11-14 22:13:20")
    assert df.iloc[1]["name"] == "r2" and np.isnan(df.iloc[1]["accuracy_pct"])


def test_bits_chart_bars_equal_input_and_mark_pruned(snapshot):
    fig = bits_per_layer_chart(snapshot, start_bits=8)
    assert fig.layout.title.text == "Bits per layer"
    bar = fig.data[0]
    assert list(bar.x) == ["conv1", "conv2", "fc"] and list(bar.y) == [8, 5, 0]
    assert list(bar.text) == ["8", "5", "0 (pruned)"]
    pruned = [t for t in fig.data if t.name == "pruned"]
    assert len(pruned) == 1 and list(pruned[0].x) == ["fc"]
    line = fig.layout.shapes[0]
    assert line.y0 == 8 and line.line.dash == "dash"
    assert fig.layout.annotations[0].text == "start: 8 bits"
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    assert not bits_per_layer_chart(snapshot.iloc[:2]).layout.shapes


def test_heatmap_z_equals_matrix_with_blank_dropped_planes(snapshot):
    fig = density_heatmap(snapshot, 8)
    assert fig.layout.title.text == "Bit-plane density"
    heat = fig.data[0]
    z = np.array(heat.z, dtype=float)
    np.testing.assert_array_equal(z, density_matrix(snapshot, 8)[0])
    assert (heat.zmin, heat.zmax) == (0.0, 1.0)
    assert "density: 0.300" in heat.text[1][4] and "group norm: 3" in heat.text[1][4]
    assert "dropped" in heat.text[1][0]


def test_curves_chart_spans_all_stages_with_boundaries(records):
    df = epochs_frame(records)
    spec = curves_parts(df, ["test_acc", "train_acc"], "Accuracy").chart().to_dict()
    datasets = list(spec["datasets"].values())
    long = next(d for d in datasets if d and "metric" in d[0])
    assert {r["stage"] for r in long} == {"pretrain", "bsq", "finetune"}
    assert len(long) == 14
    rules = next(d for d in datasets if d and "x" in d[0])
    assert [(r["x"], r["stage"]) for r in rules] == [(2.5, "bsq"), (5.5, "finetune")]
    for chart in (loss_chart(df), accuracy_chart(df), bits_chart(df)):
        assert isinstance(chart, alt.TopLevelMixin) and chart.to_dict()["title"]


def test_bits_chart_skips_pretrain_gaps(records):
    spec = bits_chart(epochs_frame(records)).to_dict()
    rows = [r for d in spec["datasets"].values() for r in d if "metric" in r]
    assert {r["stage"] for r in rows} == {"bsq", "finetune"}


def test_events_table_is_readable_and_ordered():
    events = [
        {"layer": "fc", "old_bits": 3, "new_bits": 0, "msb_dropped": 3, "lsb_dropped": 0,
         "grown": 0, "stage": "finetune", "epoch": 1, "message": ""},
        {"layer": "conv2", "old_bits": 8, "new_bits": 5, "msb_dropped": 2, "lsb_dropped": 1,
         "grown": 0, "stage": "bsq", "epoch": 12, "message": ""},
    ]  # fmt: skip
    df = events_table(events)
    assert df["layer"].tolist() == ["conv2", "fc"]
    # no stored message: the engine's wording (PrecisionEvent.message), the one home
    assert df.loc[0, "change"] == "conv2: 8 -> 5 bits (dropped 2 MSB, 1 LSB) at epoch 12"
    assert "pruned" in df.loc[1, "change"]
    grown = {**events[1], "new_bits": 6, "msb_dropped": 0, "lsb_dropped": 0, "grown": 1}
    assert "grew 1 MSB on overflow" in events_table([grown]).loc[0, "change"]
    assert events_table([{**grown, "message": "as stored"}]).loc[0, "change"] == "as stored"
    assert events_table([]).empty


def _cmp_run(run_id, name, alpha, acc, layers):
    return {
        "run_id": run_id, "name": name, "method": "bsq", "alpha": alpha, "accuracy": acc,
        "float_accuracy": 0.925, "avg_bits": 3.0, "compression": 32 / 3,
        "config": {"pretrain_epochs": 0, "bsq_epochs": 350, "finetune_epochs": 300},
        "summary": {"layers": [{"name": n, "n_bits": b, "n_weights": 10} for n, b in layers]},
    }  # fmt: skip


def test_summary_table_and_highlight_of_differing_rows():
    runs = [
        _cmp_run("r1", "small", 5e-3, 0.91, [("conv1", 8), ("fc", 4)]),
        _cmp_run("r2", "big", 2e-3, 0.91, [("conv1", 8), ("fc", 0)]),
    ]
    df = summary_table(runs)
    assert list(df.columns) == ["small", "big"]
    assert df.loc["alpha"].tolist() == ["0.005", "0.002"]
    assert df.loc["accuracy", "small"] == "91.00%"
    assert df.loc["epochs per stage", "big"] == "pretrain 0 / bsq 350 / finetune 300"
    assert df.loc["bits: fc"].tolist() == ["4", "0 (pruned)"]
    diff = differing_rows(df)
    assert diff[diff].index.tolist() == ["alpha", "bits: fc"]
    html = highlight_differences(df).to_html()
    css = html.split("</style>")[0]
    blocks = re.findall(r"([^{}]+)\{([^}]*)\}", css)
    selectors = " ".join(sel for sel, body in blocks if "background-color" in body)
    styled = set(re.findall(r"_row(\d+)_col\d+", selectors))
    assert styled == {str(df.index.get_loc("alpha")), str(df.index.get_loc("bits: fc"))}
    same_names = summary_table([runs[0], {**runs[1], "name": "small"}])
    assert list(same_names.columns) == ["small (r1)", "small (r2)"]


def test_grouped_bits_aligns_layers_by_name():
    fig = grouped_bits_chart(
        {"A": [{"name": "c1", "n_bits": 8, "n_weights": 1}, {"name": "fc", "n_bits": 2}],
         "B": [{"name": "fc", "n_bits": 0}, {"name": "c1", "n_bits": 4, "n_weights": 1}]}
    )  # fmt: skip
    a, b = fig.data
    assert list(a.x) == list(b.x) == ["c1", "fc"]
    assert list(a.y) == [8, 2] and list(b.y) == [4, 0]
    assert list(b.text) == ["4", "0 (pruned)"] and fig.layout.barmode == "group"


def test_density_heatmaps_share_one_colour_scale(snapshot):
    fig = density_heatmaps({"A": snapshot, "B": snapshot.iloc[:2]}, 8)
    assert len(fig.data) == 2 and {t.coloraxis for t in fig.data} == {"coloraxis"}
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 1.0)
    assert [a.text for a in fig.layout.annotations] == ["A", "B"]


def test_overlay_curves_in_percent(records):
    df = epochs_frame(records)
    fig = overlay_curves({"A": df, "B": df.head(3)}, "test_acc")
    assert [t.name for t in fig.data] == ["A", "B"]
    assert fig.data[1].y[0] == pytest.approx((0.55 - 0.02) * 100)
    assert "%" in fig.layout.yaxis.title.text


def test_a_shared_spec_carries_arrow_datasets_that_read_back_for_a_png(records):
    """``vega_spec`` converts the rows to Arrow once (what st.vega_lite_chart would do on
    every send); the PNG download reads the same rows back, NaN as null."""
    from dashboard.ui.chart_downloads import HAS_VL_CONVERT, _json_datasets, png_bytes
    from dashboard.ui.run_charts import vega_spec

    chart = bits_chart(epochs_frame(records))
    plain = chart.to_dict(validate=False)["datasets"]
    spec = vega_spec(chart)
    assert set(spec["datasets"]) == set(plain)
    assert all(isinstance(data, bytes) for data in spec["datasets"].values())
    back = _json_datasets(spec)["datasets"]
    for name, rows in plain.items():
        assert len(back[name]) == len(rows)
        for got, want in zip(back[name], rows):
            for column, value in want.items():
                assert got[column] == (None if value != value else value)  # NaN -> null
    assert all(isinstance(data, bytes) for data in spec["datasets"].values())  # not changed
    if HAS_VL_CONVERT:
        assert png_bytes(spec).startswith(b"\x89PNG")


def _data_refs_blanked(node):
    """A spec with every dataset reference replaced by one placeholder."""
    if isinstance(node, dict):
        if set(node) == {"name"} and isinstance(node["name"], str):
            return "<data>"
        return {k: _data_refs_blanked(v) for k, v in node.items() if k != "datasets"}
    if isinstance(node, list):
        return [_data_refs_blanked(v) for v in node]
    return node


def _rows(spec) -> list:
    from dashboard.ui.chart_downloads import _json_datasets

    datasets = _json_datasets(spec)["datasets"].values()
    return sorted(json.dumps(rows, sort_keys=True) for rows in datasets)


@pytest.mark.parametrize("kind", ["loss", "accuracy", "bits", "smoothed", "step"])
def test_a_shared_layout_draws_the_same_chart_as_a_whole_build(records, kind):
    """``shared_spec`` (a layout built once per key, new rows each time) gives the spec a
    whole Altair build gives, but for the datasets' names; a second call with other rows
    reuses the layout."""
    from dashboard.ui.run_charts import shared_spec, vega_spec
    from dashboard.views import charts, curves

    def parts(n):
        df = epochs_frame(records[:n])
        steps = curves.step_frame([{"step": i, "stage": "bsq", "epoch": 1, "loss": 1 / i,
                                    "batch_acc": 0.5, "reg": 0.1, "time": float(i)}
                                   for i in range(1, n + 1)])  # fmt: skip
        return {
            "loss": lambda: charts.loss_parts(df),
            "accuracy": lambda: charts.accuracy_parts(df),
            "bits": lambda: charts.bits_parts(df),
            "smoothed": lambda: charts.loss_parts(df, curves.CurveOptions(smoothing=0.6)),
            "step": lambda: curves.step_parts(steps, curves.CurveOptions(x="step", smoothing=0.6)),
        }[kind]()

    full, shared = parts(7), shared_spec(parts(7))
    whole = vega_spec(full.chart())
    assert _data_refs_blanked(shared) == _data_refs_blanked(whole)
    assert _rows(shared) == _rows(whole)
    fewer = parts(6)
    assert fewer.key == full.key
    again = shared_spec(fewer)
    assert _rows(again) == _rows(vega_spec(fewer.chart())) != _rows(shared)
    assert again["config"] is shared["config"] and again["layer"] is shared["layer"]  # reused


def test_a_layout_key_changes_with_what_shapes_the_layout(records):
    from dashboard.views import charts, curves

    df = epochs_frame(records)
    keys = {charts.loss_parts(df).key, charts.accuracy_parts(df).key,
            charts.loss_parts(df, curves.CurveOptions(log_y=True)).key,
            charts.loss_parts(df, curves.CurveOptions(x="wall")).key,
            charts.loss_parts(df[df["stage"] == "bsq"]).key}  # fmt: skip
    assert len(keys) == 5  # the last: one stage, no stage rules


@pytest.mark.parametrize("n", [0, 1, 40])
def test_epochs_frame_is_the_plain_frame_of_its_records(records, n):
    """Built column by column for speed, it equals the obvious construction: missing keys,
    None and text in a number column become NaN, rows sorted by global epoch."""
    from dashboard.views.frames import EPOCH_COLUMNS

    rows = [dict(records[i % len(records)], global_epoch=n - i) for i in range(n)]
    for i, row in enumerate(rows):
        row.update({"test_loss": None} if i % 3 else {"lr": "n/a", "unknown": 1})
        if i % 5 == 4:
            del row["stage"]
    plain = pd.DataFrame(rows).reindex(columns=EPOCH_COLUMNS)
    numeric = [c for c in EPOCH_COLUMNS if c != "stage"]
    plain[numeric] = plain[numeric].apply(pd.to_numeric, errors="coerce")
    plain["stage"] = plain["stage"].astype(object)
    plain = plain.sort_values("global_epoch", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(epochs_frame(rows), plain)


@pytest.mark.parametrize("cut", [0, 1, 4, 9, 10])
def test_extending_an_epochs_frame_equals_building_it_whole(records, cut):
    """A live view converts only the epochs that arrived since its last read: the frame is
    the same as the whole build, dtypes included (an int64 column turns float64 when a new
    epoch brings a missing or fractional value, as the whole build's does)."""
    from dashboard.views.frames import extend_epochs_frame

    rows = [dict(records[i % len(records)], global_epoch=i + 1, epoch=i + 1) for i in range(10)]
    for i, row in enumerate(rows):
        if i >= 6:
            row["epoch"] = None if i == 6 else row["epoch"]  # int64 so far, then a None
        if i == 8:
            row["lr"] = "n/a"
            del row["stage"]
    whole = epochs_frame(rows)
    extended = extend_epochs_frame(epochs_frame(rows[:cut]), rows[cut:])
    pd.testing.assert_frame_equal(extended, whole)
    # an epoch that sorts before the frame's last, or without a global epoch: whole build
    assert extend_epochs_frame(whole, [dict(rows[0], global_epoch=3)]) is None
    assert extend_epochs_frame(whole, [{"stage": "bsq", "epoch": 1}]) is None


def _count_epoch_frames(monkeypatch):
    """``frames.epochs_frame`` recording how many records each call converts (the list),
    and the real one; no live run's last frames kept."""
    from dashboard.ui import accessors
    from dashboard.views import frames

    counts, real = [], frames.epochs_frame
    monkeypatch.setattr(frames, "epochs_frame", lambda rs: counts.append(len(rs)) or real(rs))
    monkeypatch.setattr(accessors, "_BUILT", {})
    return counts, real


def test_a_live_view_reuses_its_frames_and_converts_only_new_epochs(records, monkeypatch):
    """Views of one run, read as it trains: the layers frame is reused while its records
    are the same, the epochs frame is extended (the new epochs converted, not all of them),
    and a run whose earlier epochs changed (resumed with others) gets a whole new frame."""
    from dashboard.ui import accessors

    converted, real = _count_epoch_frames(monkeypatch)
    rows = [dict(records[i % len(records)], global_epoch=i + 1) for i in range(12)]
    layers = [{"global_epoch": 5, "layer_index": 0, "name": "fc", "n_bits": 4, "density": [1]}]
    first = accessors._live_frames("r", rows[:8], layers)
    second = accessors._live_frames("r", rows[:11], [dict(layers[0])])  # equal records
    assert converted == [8, 3]
    assert second[1] is first[1]
    pd.testing.assert_frame_equal(second[0], real(rows[:11]))
    changed = [dict(rows[0], test_acc=0.5), *rows[1:12]]
    third = accessors._live_frames("r", changed, [dict(layers[0], n_bits=3)])
    assert converted[-1] == 12 and third[1] is not second[1]
    pd.testing.assert_frame_equal(third[0], real(changed))


def test_the_last_epoch_from_records_is_the_frames_last_row(records):
    """A live panel's progress and tiles read the last epoch from the records (no frame):
    the same row as ``epochs_frame(...).iloc[-1]``, whatever the order, ties, missing
    numbers and text in number columns; of one stage too."""
    from dashboard.views.frames import last_epoch

    def frame_last(rows, stage=None):
        df = epochs_frame(rows)
        df = df if stage is None else df[df["stage"] == stage]
        return None if df.empty else df.iloc[-1].to_dict()

    def same(a, b):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.keys() == b.keys()
            for k in a:
                assert a[k] == b[k] or (pd.isna(a[k]) and pd.isna(b[k])), (k, a[k], b[k])

    rows = [dict(records[i % len(records)], global_epoch=g) for i, g in enumerate([3, 1, 5, 2])]
    tie = dict(rows[2], test_acc=0.123)  # a second epoch 5: the later one is last
    odd = dict(rows[1], global_epoch=4, avg_bits=None, lr="0.5", compression=True)
    del odd["test_loss"]
    for case in (rows, [*rows, tie], [*rows, odd], [odd], [*rows, tie, odd], []):
        same(last_epoch(case), frame_last(case))
        same(last_epoch([r for r in case if r.get("stage") == "bsq"]), frame_last(case, "bsq"))
    no_number = dict(rows[0], global_epoch=None)  # sorts last in the frame
    same(last_epoch([*rows, no_number, tie]), frame_last([*rows, no_number, tie]))


def test_a_live_views_progress_part_builds_no_frame(records, monkeypatch):
    """The top of a live panel (counts, last epoch, last BSQ epoch) reads the records; the
    frames are built once, when first asked for, and then equal the whole build."""
    from dashboard.ui import accessors

    built, real = _count_epoch_frames(monkeypatch)
    rows = [dict(records[i % len(records)], global_epoch=i + 1) for i in range(6)]
    layers = [{"global_epoch": 6, "layer_index": 0, "name": "fc", "n_bits": 4, "density": [1]}]
    view = accessors.RunView({"run_id": "r", "status": "running"}, live=True, snapshot={},
                             records=(rows, layers))  # fmt: skip
    assert view.n_epochs == 6 and view.n_layers == 1
    assert view.last_epoch()["global_epoch"] == 6 and view.last_epoch("nope") is None
    assert built == []
    pd.testing.assert_frame_equal(view.epochs, real(rows))
    assert view.n_layers == len(view.layers) == 1 and built == [6]
    assert view.last_epoch("bsq") == view.epochs[view.epochs["stage"] == "bsq"].iloc[-1].to_dict()
    with pytest.raises(ValueError, match="records"):
        accessors.RunView({"run_id": "r", "status": "running"}, epochs=real(rows))


def test_figures_get_the_white_template_as_plotlys_default(snapshot, monkeypatch):
    """The template is Plotly's default (applied without validating it again, 13 ms a
    figure less), and a figure is the same as with the template set on it; if the default
    was changed elsewhere, the figure still gets the template."""
    import json

    import plotly.graph_objects as go
    import plotly.io as pio

    from dashboard.views import charts

    fast = charts.style_figure(go.Figure(), "t", "x", "y")
    slow = go.Figure().update_layout(template=charts.TEMPLATE)
    slow = charts.style_figure(slow, "t", "x", "y")
    assert json.loads(fast.to_json()) == json.loads(slow.to_json())
    heat = json.loads(charts.density_heatmap(snapshot, 8).to_json())
    assert heat["layout"]["template"] == slow.to_dict()["layout"]["template"]
    monkeypatch.setattr(pio.templates, "default", "plotly")
    assert json.loads(charts.style_figure(go.Figure(), "t", "x", "y").to_json()) == json.loads(
        slow.to_json()
    )
    assert (
        charts.density_heatmap(snapshot, 8).to_dict()["layout"]["template"]
        == (slow.to_dict()["layout"]["template"])
    )


def test_the_bits_chart_made_in_one_go_is_plotlys_own_step_by_step_figure(snapshot):
    """The live bits chart is made from dicts in one go (7x cheaper); it must be the figure
    Plotly's own calls make: ``add_bar``, ``add_hline`` (our dashed start line and its label
    are written out by hand), the axis updates."""
    import plotly.graph_objects as go

    from dashboard.views.charts import BAR_COLOR, PRUNED_COLOR, style_figure

    fig = style_figure(go.Figure(), "Bits per layer", "Layer", "Bits")
    bits = [8, 5, 0]
    fig.add_bar(
        x=["conv1", "conv2", "fc"],
        y=bits,
        name="bits",
        text=["8", "5", "0 (pruned)"],
        textposition="outside",
        marker_color=[BAR_COLOR, BAR_COLOR, PRUNED_COLOR],
        customdata=list(snapshot["n_weights"]),
        hovertemplate="%{x}<br>%{text} bits<br>%{customdata:,} weights<extra></extra>",
    )
    fig.add_scatter(
        x=["fc"],
        y=[0],
        mode="markers",
        name="pruned",
        marker={"symbol": "x", "size": 12, "color": PRUNED_COLOR},
        hovertemplate="%{x}<br>0 bits (pruned)<extra></extra>",
    )
    fig.add_hline(
        y=8,
        line_dash="dash",
        line_color="grey",
        annotation_text="start: 8 bits",
        annotation_position="top right",
        annotation_yshift=12,
    )
    fig.update_yaxes(range=[0, 10], dtick=1)
    fig.update_layout(showlegend=False, xaxis={"type": "category", "tickangle": -45})
    assert bits_per_layer_chart(snapshot, start_bits=8).to_dict() == fig.to_dict()


def _reference_long(epochs_df, metrics, max_points):
    """The tidy rows as ``DataFrame.melt`` makes them (what ``charts._long`` replaced)."""
    from dashboard.views import charts, curves

    cols = ["global_epoch", "wall", "stage", *metrics]
    df = downsample(curves.with_wall_clock(epochs_df)[cols], max_points)
    long = df.melt(["global_epoch", "wall", "stage"], var_name="metric", value_name="value")
    long = long.dropna(subset=["value"])
    long["metric"] = long["metric"].map(lambda m: charts.METRIC_LABELS.get(m, m))
    return long


def _reference_stages(epochs_df, x):
    """Stage starts as ``groupby(...).first()`` found them (what ``charts._stage_starts``
    replaced)."""
    from dashboard.views import curves

    df = curves.with_wall_clock(epochs_df)
    firsts = df.sort_values("global_epoch").groupby("stage", sort=False).first().reset_index()
    firsts = firsts.sort_values("global_epoch").iloc[1:]
    where = firsts["global_epoch"] - 0.5 if x == "epoch" else firsts["wall_start"]
    return pd.DataFrame({"x": where.to_numpy(), "stage": firsts["stage"].to_numpy()})


def _epoch_frames(records):
    """Epoch frames a chart meets: a whole run, a long one (downsampled), one stage, a
    missing value in every column, whole-number columns (int64), no seconds, one epoch."""
    rng = np.random.default_rng(0)
    long_run = []
    for g in range(1, 1201):
        stage = "pretrain" if g <= 100 else "bsq" if g <= 1100 else "finetune"
        long_run.append(_epoch(stage, g, g, float(rng.uniform(0.4, 0.9))))
        long_run[-1]["seconds"] = float(rng.uniform(0.05, 0.2))
    holes = [dict(r) for r in records]
    for i, col in enumerate(["train_loss", "test_acc", "avg_bits", "seconds", "compression"]):
        holes[i][col] = None
    whole = [{**r, "avg_bits": 4, "compression": 8, "train_acc": 1} for r in records]
    no_seconds = [{k: v for k, v in r.items() if k != "seconds"} for r in records]
    return {
        "run": epochs_frame(records), "long": epochs_frame(long_run),
        "one stage": epochs_frame([r for r in records if r["stage"] == "bsq"]),
        "holes": epochs_frame(holes), "whole numbers": epochs_frame(whole),
        "no seconds": epochs_frame(no_seconds).drop(columns="seconds"),
        "one epoch": epochs_frame(records[-1:]),
    }  # fmt: skip


@pytest.mark.parametrize("x", ["epoch", "wall"])
@pytest.mark.parametrize("smoothing", [0.0, 0.6])
def test_epoch_parts_equal_the_charts_made_one_by_one(records, x, smoothing):
    """``epoch_parts`` (what the live panel builds) works the epochs' wall clock and stage
    starts out once for its three charts: each of its parts equals the same chart made on
    its own, and their rows equal the melt-based rows they replaced, frame for frame."""
    from dashboard.views import charts, curves

    options = curves.CurveOptions(x=x, smoothing=smoothing)
    for name, df in _epoch_frames(records).items():
        parts = charts.epoch_parts(df, options)
        alone = {"loss": charts.loss_parts(df, options), "acc": charts.accuracy_parts(df, options)}
        if df["avg_bits"].notna().any():
            alone["avg"] = charts.bits_parts(df)
        assert parts.keys() == alone.keys(), name
        for kind, part in parts.items():
            assert part.key == alone[kind].key, (name, kind)
            assert part.data.keys() == alone[kind].data.keys(), (name, kind)
            for dataset, rows in part.data.items():
                pd.testing.assert_frame_equal(rows, alone[kind].data[dataset], obj=f"{name} {kind}")
        for kind, metrics in (
            ("loss", ["train_loss", "test_loss"]),
            ("acc", ["train_acc", "test_acc"]),
        ):
            rows = parts[kind].data["curves"]
            reference = _reference_long(df, metrics, 500)
            pd.testing.assert_frame_equal(rows.drop(columns="smoothed", errors="ignore"),
                                          reference, obj=f"{name} {kind}")  # fmt: skip
            stages = _reference_stages(df, x)
            if len(stages):
                pd.testing.assert_frame_equal(parts[kind].data["stages"], stages, obj=name)
            else:
                assert "stages" not in parts[kind].data, name
        if "avg" in parts:
            both = _reference_long(df, ["avg_bits", "compression"], 500)
            for dataset, label in (
                ("avg_bits", "average bits"),
                ("compression", "compression (x)"),
            ):
                pd.testing.assert_frame_equal(parts["avg"].data[dataset],
                                              both[both["metric"] == label], obj=name)  # fmt: skip
