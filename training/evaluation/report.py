"""The clinician report: one self-contained HTML page about a mortality model.

Written for the ICU clinicians who will receive the model's alerts, not for data
scientists: every number comes with a sentence saying what it means at the bedside,
and a short glossary closes the page. The page has no external resource (figures are
PNGs inlined as ``data:`` URIs, the style is inline), so it can be e-mailed or opened
on a ward computer without network access.

The metrics are those of :mod:`bedside.training.evaluation.metrics`: ``metrics`` is
the dict of :func:`~bedside.training.evaluation.metrics.binary_metrics`, with the
dict of :func:`~bedside.training.evaluation.metrics.survival_metrics` under
``"survival"`` (or the two under ``"binary"`` and ``"survival"``; a survival part
merged at the top level is found too). The figures are drawn from ``predictions``,
the headline numbers are read from ``metrics``: both must come from the same stays.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from scipy import stats
from sklearn.metrics import precision_recall_curve, roc_curve

from bedside.schemas.tables import ICU_TYPES
from bedside.training.evaluation.metrics import PredictionError, check_predictions

#: Survival columns of the predictions: ``surv_24h`` is the probability of being alive 24 h
#: after the prediction time.
SURVIVAL_COLUMN = re.compile(r"^surv_(\d+(?:\.\d+)?)h$")
#: Variables shown in the importance chart.
TOP_VARIABLES = 20
#: Share of deaths caught by the alternative thresholds shown next to the chosen one.
RECALL_TARGETS = (0.9, 0.75, 0.5)

#: Colours of the four alert outcomes (colour-blind safe, Okabe-Ito).
COLOURS = {"tp": "#D55E00", "fp": "#E69F00", "fn": "#0072B2", "tn": "#BBBBBB"}

GLOSSARY = (
    (
        "Risk",
        "The model's estimate of the probability that the patient dies before leaving hospital.",
    ),
    (
        "Alert threshold",
        "A patient whose risk is at or above it raises an alert. A lower threshold catches "
        "more deaths and raises more false alerts.",
    ),
    (
        "Sensitivity (recall)",
        "Of the patients who died, the share that raised an alert.",
    ),
    ("Specificity", "Of the patients who survived, the share that raised no alert."),
    (
        "PPV (positive predictive value, precision)",
        "Of the alerts, the share raised for a patient who then died.",
    ),
    ("NPV (negative predictive value)", "Of the patients without alert, the share who survived."),
    (
        "Event 1",
        "The PhysioNet/CinC 2012 challenge score: the smaller of sensitivity and PPV "
        "(best entry 0.5353). High only when the alerts catch deaths and are mostly right.",
    ),
    (
        "AUROC",
        "The chance that a patient who died was given a higher risk than a patient who "
        "survived. 0.5 is a coin toss, 1 is perfect ranking. It ignores whether the risks "
        "themselves are right.",
    ),
    (
        "AUPRC",
        "Area under the precision-recall curve (average precision): the PPV averaged over "
        "all the thresholds, weighted by the deaths each one adds. A model that "
        "knows nothing scores the mortality rate.",
    ),
    (
        "Calibration",
        "Whether predicted risks match what happens: among patients given 20 %, about 20 "
        "in 100 should die.",
    ),
    (
        "Brier score",
        "The mean squared difference between risk and outcome (0 or 1); lower is better. "
        "It rewards both ranking and calibration.",
    ),
    (
        "ECE (expected calibration error)",
        "The average gap between predicted and observed mortality over ten risk bands "
        "(0-10 %, 10-20 %, ...); 0.02 means 2 percentage points.",
    ),
    (
        "Calibration slope",
        "1 is ideal; below 1 the risks are too extreme (too high for the sickest, too low "
        "for the others), above 1 too cautious.",
    ),
    (
        "Calibration intercept (calibration-in-the-large)",
        "0 is ideal; above 0 the model predicts fewer deaths than happen overall, below 0 more.",
    ),
    (
        "Hosmer-Lemeshow H",
        "A test that observed and predicted deaths agree in ten risk groups; lower is "
        "better. The plain H comes with a p-value (small p: miscalibrated). The challenge "
        "H is the PhysioNet 2012 event-2 score (normalised by the spread of risks, best "
        "entry 17.88); the two are different numbers.",
    ),
    (
        "95 % CI",
        "Confidence interval from the bootstrap: the test patients resampled many "
        "times; the range covers how much the number would move with other patients "
        "like these.",
    ),
    (
        "Survival curve",
        "The predicted probability of being alive at each time after the prediction.",
    ),
    (
        "C-index",
        "Like AUROC for survival: the chance that of two patients, the one who died "
        "first had the higher risk. Uno's version corrects for patients whose follow-up "
        "ended early.",
    ),
    (
        "Time-dependent AUC",
        "AUROC for death before a given time (24 h, 3 days, ...) among those followed that long.",
    ),
    (
        "Integrated Brier score",
        "The Brier score of the survival curves averaged over time; lower is better; "
        "0.25 is what a curve stuck at 50 % scores.",
    ),
    (
        "Permutation importance",
        "How much the model's performance drops when one variable's values are shuffled "
        "between patients. It shows what the model relies on, not what causes death.",
    ),
)

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.sub { color: #666; margin-top: 0; }
.box { background: #f4f7fb; border-left: 4px solid #0072B2; padding: 0.6em 1.2em; }
.alarm { background: #fff6ec; border-left: 4px solid #D55E00; padding: 0.6em 1.2em; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
.note { color: #666; font-size: 0.9em; }
dt { font-weight: bold; margin-top: 0.5em; }
nav a { margin-right: 1em; }
"""


# -------------------------------------------------------------------------- formatting


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: Any, digits: int = 0) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def _with_ci(metrics: dict[str, Any], name: str, digits: int = 3, percent: bool = False) -> str:
    show = (lambda v: _pct(v, 1)) if percent else (lambda v: _num(v, digits))
    text = show(metrics.get(name))
    ci = (metrics.get("ci") or {}).get(name)
    if metrics.get(name) is not None and ci:
        text += f" (95 % CI {show(ci[0])} to {show(ci[1])})"
    elif metrics.get(name) is None and name in (metrics.get("notes") or {}):
        text += f" ({metrics['notes'][name]})"
    return text


def inline_png(figure: Figure, alt: str, dpi: int = 110) -> str:
    """An ``<img>`` holding the figure as an inline PNG, described by ``alt``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def html_table(header: list[str], rows: list[list[Any]], number: Callable[[Any], Any] = str) -> str:
    """An HTML table; numbers right-aligned and shown with ``number``."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_esc(number(c))}</td>'
            if isinstance(c, int | float)
            else f"<td>{_esc(c)}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _rule_in_words(rule: str) -> str:
    """How the threshold was chosen, in words, with the rule as recorded when it says more."""
    words = {
        "event1": "chosen to make the smaller of sensitivity and PPV as large as possible "
        "(the PhysioNet 2012 event-1 rule)",
        "youden": "chosen to make sensitivity + specificity as large as possible (Youden's rule)",
        "fixed": "fixed in advance",
    }
    name = re.split(r"[\s:(]", rule.strip().lower(), maxsplit=1)[0]
    if name not in words:
        return f"chosen by the rule “{rule}”"
    return words[name] if rule.strip().lower() == name else f"{words[name]}; recorded as “{rule}”"


# ------------------------------------------------------------------------ the parts


def _cohort_rows(stays: pl.DataFrame) -> tuple[list[str], list[list[Any]]]:
    groups = [
        ("All", stays),
        ("Survived", stays.filter(pl.col("label") == 0)),
        ("Died", stays.filter(pl.col("label") == 1)),
    ]
    los_column, los_name = (
        ("los_days", "ICU length of stay, days")
        if "los_days" in stays.columns and stays["los_days"].is_not_null().any()
        else ("hospital_los_days", "Hospital length of stay, days")
    )

    def median_iqr(frame: pl.DataFrame, column: str) -> str:
        if column not in frame.columns:
            return "n/a"
        values = frame[column].drop_nulls().to_numpy()
        if values.size == 0:
            return "n/a"
        q1, q2, q3 = np.percentile(values, [25, 50, 75])
        return f"{q2:.0f} [{q1:.0f}-{q3:.0f}]"

    def count(frame: pl.DataFrame, mask: pl.Expr) -> str:
        k = frame.filter(mask).height
        return f"{k} ({_pct(k / frame.height, 1)})" if frame.height else "0"

    rows: list[list[Any]] = [["Stays"] + [str(f.height) for _, f in groups]]
    rows.append(["Age, years: median [IQR]"] + [median_iqr(f, "age") for _, f in groups])
    if "sex" in stays.columns:
        rows.append(["Female"] + [count(f, pl.col("sex") == "F") for _, f in groups])
    if "icu_type" in stays.columns:
        for icu in (*ICU_TYPES, None):
            mask = pl.col("icu_type").is_null() if icu is None else pl.col("icu_type") == icu
            if stays.filter(mask).height:
                label = "ICU type unknown" if icu is None else f"ICU: {icu.replace('_', ' ')}"
                rows.append([label] + [count(f, mask) for _, f in groups])
    rows.append(["In-hospital death", count(stays, pl.col("label") == 1), "", ""])
    rows.append([f"{los_name}: median [IQR]"] + [median_iqr(f, los_column) for _, f in groups])
    header = ["", *(f"{name} (n = {frame.height})" for name, frame in groups)]
    return header, rows


def _per_hundred(counts: dict[str, int]) -> dict[str, int]:
    """The four outcomes per 100 patients, rounded to whole patients that add up to 100."""
    total = sum(counts.values())
    exact = {k: 100 * v / total for k, v in counts.items()}
    rounded = {k: int(np.floor(v)) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - rounded[k], reverse=True)[
        : 100 - sum(rounded.values())
    ]:
        rounded[k] += 1
    return rounded


def _icon_array(per_100: dict[str, int]) -> Figure:
    figure = Figure(figsize=(4.2, 4.4))
    ax = figure.add_subplot()
    order = ["tp", "fn", "fp", "tn"]
    kinds = [k for k in order for _ in range(per_100[k])]
    for i, kind in enumerate(kinds):
        ax.add_patch(Circle((i % 10, 9 - i // 10), 0.42, color=COLOURS[kind]))
    ax.set_xlim(-0.6, 9.6)
    ax.set_ylim(-0.6, 9.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("100 typical patients of this cohort", fontsize=10)
    return figure


def _discrimination_figure(y: np.ndarray, risk: np.ndarray, binary: dict[str, Any]) -> Figure:
    figure = Figure(figsize=(10, 4.3))
    roc_ax, pr_ax = figure.subplots(1, 2)
    fpr, tpr, _ = roc_curve(y, risk)
    roc_ax.plot(fpr, tpr, color="#0072B2", lw=2, label=f"model (AUROC {_num(binary['auroc'])})")
    roc_ax.plot([0, 1], [0, 1], color="#999", ls="--", label="coin toss")
    precision, recall, _ = precision_recall_curve(y, risk)
    pr_ax.step(
        recall,
        precision,
        where="post",
        color="#0072B2",
        lw=2,
        label=f"model (AUPRC {_num(binary['auprc'])})",
    )
    pr_ax.axhline(y.mean(), color="#999", ls="--", label=f"mortality rate ({_pct(y.mean())})")
    se, sp, ppv = binary.get("sensitivity"), binary.get("specificity"), binary.get("ppv")
    if se is not None and sp is not None:
        roc_ax.plot(1 - sp, se, "o", color=COLOURS["tp"], ms=9, label="alert threshold")
    if se is not None and ppv is not None:
        pr_ax.plot(se, ppv, "o", color=COLOURS["tp"], ms=9, label="alert threshold")
    roc_ax.set(
        xlabel="1 - specificity (survivors alerted)",
        ylabel="sensitivity (deaths alerted)",
        title="ROC curve",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    pr_ax.set(
        xlabel="sensitivity (deaths alerted)",
        ylabel="PPV (alerts that are deaths)",
        title="Precision-recall curve",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc_ax else "upper right", fontsize=9)
    return figure


def _calibration_figure(y: np.ndarray, risk: np.ndarray) -> Figure:
    figure = Figure(figsize=(6.2, 6.4))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    order = np.argsort(risk, kind="stable")
    groups = [g for g in np.array_split(order, min(10, y.size)) if g.size]
    predicted = np.array([risk[g].mean() for g in groups])
    deaths = np.array([y[g].sum() for g in groups])
    sizes = np.array([g.size for g in groups])
    low, high = zip(
        *(
            stats.binomtest(int(k), int(n)).proportion_ci(method="wilson")
            for k, n in zip(deaths, sizes, strict=True)
        ),
        strict=True,
    )
    observed = deaths / sizes
    limit = min(1.0, max(risk.max(), np.max(high)) * 1.05)
    top.plot([0, limit], [0, limit], color="#999", ls="--", label="perfect calibration")
    top.errorbar(
        predicted,
        observed,
        yerr=[observed - np.array(low), np.array(high) - observed],
        fmt="o",
        color="#0072B2",
        capsize=3,
        label="tenths of patients by risk (95 % CI)",
    )
    top.set(
        ylabel="observed mortality",
        title="Calibration: predicted vs observed",
        xlim=(0, limit),
        ylim=(0, limit),
    )
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=9)
    bins = np.linspace(0, limit, 31)
    bottom.hist(
        [risk[y == 0], risk[y == 1]],
        bins=bins,
        stacked=True,
        color=[COLOURS["tn"], COLOURS["tp"]],
        label=["survived", "died"],
    )
    bottom.set(xlabel="predicted risk", ylabel="patients")
    bottom.legend(fontsize=9)
    return figure


def _importance_figure(importance: pl.DataFrame) -> Figure:
    top = importance.sort("importance", descending=True).head(TOP_VARIABLES)
    figure = Figure(figsize=(7, 0.32 * top.height + 1.2))
    ax = figure.add_subplot()
    positions = np.arange(top.height)[::-1]
    std = top["std"].to_numpy() if "std" in top.columns else None
    ax.barh(positions, top["importance"].to_numpy(), xerr=std, color="#0072B2", capsize=2)
    ax.set_yticks(positions, [str(v).replace("_", " ") for v in top["variable"]])
    ax.set(
        xlabel="drop in performance when the variable is shuffled",
        title="Which variables the model relies on",
    )
    ax.axvline(0, color="#444", lw=0.8)
    ax.grid(axis="x", alpha=0.3)
    return figure


def _survival_figure(
    predictions: pl.DataFrame, columns: list[tuple[float, str]]
) -> tuple[Figure, list[list[Any]]]:
    risk = predictions["risk"].to_numpy()
    order = np.argsort(risk, kind="stable")
    picks = sorted({int(order[round(q * (risk.size - 1))]) for q in (0.05, 0.25, 0.5, 0.75, 0.95)})
    hours = np.array([0.0] + [h for h, _ in columns])
    in_days = hours[-1] > 96
    x = hours / 24 if in_days else hours
    figure = Figure(figsize=(7.5, 4.3))
    ax = figure.add_subplot()
    rows = []
    colours = ["#009E73", "#56B4E9", "#F0E442", "#E69F00", "#D55E00"]
    for colour, i in zip(colours, sorted(picks, key=lambda i: risk[i]), strict=False):
        row = predictions.row(i, named=True)
        curve = np.array([1.0] + [row[c] for _, c in columns])
        outcome = "died" if row["label"] == 1 else "survived"
        ax.plot(
            x, curve, color=colour, lw=2, label=f"in-hospital risk {_pct(row['risk'])}, {outcome}"
        )
        rows.append(
            [str(row["stay_id"]), _pct(row["risk"]), outcome]
            + [_pct(curve[k]) for k in range(1, curve.size)]
        )
    ax.set(
        xlabel="days after the prediction" if in_days else "hours after the prediction",
        ylabel="predicted probability of being alive",
        ylim=(0, 1.02),
        title="Predicted survival of five patients of different risk",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower left")
    return figure, rows


def _threshold_rows(y: np.ndarray, risk: np.ndarray, chosen: float) -> list[list[Any]]:
    """Alerts, deaths caught and PPV at the chosen threshold and at a few others."""
    candidates = [("chosen", chosen)]
    deaths = np.sort(risk[y == 1])[::-1]
    for target in RECALL_TARGETS:
        if deaths.size:
            k = int(np.ceil(target * deaths.size)) - 1
            candidates.append((f"catch {target:.0%} of deaths", float(deaths[k])))
    rows = []
    for name, threshold in sorted(candidates, key=lambda c: -c[1]):
        alert = risk >= threshold
        tp = int(np.sum(alert & (y == 1)))
        alerts = int(alert.sum())
        rows.append(
            [
                name,
                _pct(threshold, 1),
                f"{100 * alerts / y.size:.1f}",
                f"{100 * tp / y.size:.1f}",
                _pct(tp / max(1, y.sum())),
                _pct(tp / alerts) if alerts else "n/a",
            ]
        )
    return rows


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class _Evaluation:
    """What every section reads: the metrics and the predictions they were computed on."""

    binary: dict[str, Any]
    survival: dict[str, Any] | None
    y: np.ndarray
    risk: np.ndarray
    counts: dict[str, int]
    threshold: float
    rule: str

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    @property
    def deaths(self) -> int:
        return self.counts["tp"] + self.counts["fn"]

    @property
    def alerts(self) -> int:
        return self.counts["tp"] + self.counts["fp"]

    def alarm_sentence(self) -> str:
        """At this threshold, X alerts per 100 patients, of which Y die; Z of 100 deaths missed."""
        n = max(self.n, 1)
        missed = (
            f"<b>{100 * self.counts['fn'] / self.deaths:.0f} of 100 deaths are missed</b> "
            "(no alert)."
            if self.deaths
            else "there were no deaths to miss."
        )
        return (
            f"At the alert threshold of {_pct(self.threshold, 1)} risk, the model raises "
            f"<b>{100 * self.alerts / n:.1f} alerts per 100 patients</b>, of which "
            f"<b>{100 * self.counts['tp'] / n:.1f} are patients who die</b>; {missed}"
        )


def _summary_section(ev: _Evaluation) -> str:
    b = ev.binary
    ranking = f"<b>Ranking</b>: AUROC {_esc(_with_ci(b, 'auroc'))}."
    if b.get("auroc") is not None:
        ranking += (
            f" A patient who died was given a higher risk than one who survived "
            f"{_pct(b['auroc'])} of the time."
        )
    items = [
        f"Tested on <b>{ev.n}</b> ICU stays, of whom <b>{ev.deaths}</b> "
        f"({_pct(ev.deaths / max(ev.n, 1), 1)}) died in hospital.",
        ranking,
        f"<b>Calibration</b>: predicted and observed mortality differ by "
        f"{_num(100 * b['ece'] if b.get('ece') is not None else None, 1)} percentage points "
        f"on average (ECE); calibration slope "
        f"{_num(b.get('calibration_slope'), 2)} (1 is ideal).",
        ev.alarm_sentence(),
    ]
    bullets = "".join(f"<li>{item}</li>" for item in items)
    return f'<div class="box"><h2 style="border:0">In short</h2><ul>{bullets}</ul></div>'


def _alarm_section(ev: _Evaluation) -> str:
    b, c = ev.binary, ev.counts
    ppv = b.get("ppv")
    one_in = f" About <b>1 alert in {1 / ppv:.1f}</b> is for a patient who dies." if ppv else ""
    intro = (
        f'<div class="alarm"><p>{ev.alarm_sentence()}</p><p>The threshold was '
        f"{_esc(_rule_in_words(ev.rule))}.{one_in}</p></div>"
    )

    def cell(count: int, what: str, colour: str = "") -> str:
        style = f' style="background:{colour}"' if colour else ""
        return f'<td class="num"{style}>{count}<br><span class="note">{what}</span></td>'

    matrix = (
        "<table><tr><th></th><th>Died</th><th>Survived</th><th>Total</th></tr>"
        f"<tr><th>Alert</th>{cell(c['tp'], 'alert for a death', '#fbe3d3')}"
        f"{cell(c['fp'], 'false alarm', '#fcefd6')}<td class='num'>{ev.alerts}</td></tr>"
        f"<tr><th>No alert</th>{cell(c['fn'], 'missed death', '#d9e8f4')}"
        f"{cell(c['tn'], 'quiet, survived')}<td class='num'>{c['tn'] + c['fn']}</td></tr>"
        f"<tr><th>Total</th><td class='num'>{ev.deaths}</td>"
        f"<td class='num'>{ev.n - ev.deaths}</td><td class='num'>{ev.n}</td></tr></table>"
    )
    rates = html_table(
        ["", "value"],
        [
            ["Sensitivity", _with_ci(b, "sensitivity", percent=True)],
            ["Specificity", _with_ci(b, "specificity", percent=True)],
            ["PPV", _with_ci(b, "ppv", percent=True)],
            ["NPV", _with_ci(b, "npv", percent=True)],
            ["Event 1 (min of sensitivity and PPV)", _with_ci(b, "event1")],
            ["Alerts per 100 patients", _with_ci(b, "alerts_per_100_patients", 1)],
        ],
    )
    per_100 = _per_hundred(c)
    legend = " &nbsp; ".join(
        f'<span style="color:{COLOURS[k]}">&#9679;</span> {per_100[k]} {what}'
        for k, what in (
            ("tp", "alerted and die"),
            ("fn", "die without alert"),
            ("fp", "false alarms"),
            ("tn", "no alert, survive"),
        )
    )
    icons = inline_png(_icon_array(per_100), "what happens to 100 patients at this threshold")
    others = html_table(
        ["threshold", "risk", "alerts", "alerts for a death", "deaths caught", "PPV"],
        _threshold_rows(ev.y, ev.risk, ev.threshold),
    )
    return (
        f'<h2 id="alarms">What the numbers mean for alarms</h2>{intro}'
        f"<h3>Confusion matrix at the threshold {_pct(ev.threshold, 1)}</h3>"
        f'<table style="border:0"><tr><td style="border:0">{matrix}{rates}</td>'
        f'<td style="border:0">{icons}<p>{legend}</p></td></tr></table>'
        "<h3>Other thresholds</h3><p>A lower threshold catches more deaths at the price of "
        f"more alerts. Per 100 patients of this cohort:</p>{others}"
    )


def _cohort_section(stays: pl.DataFrame, predictions: pl.DataFrame) -> str:
    cohort = stays.join(predictions.select("stay_id", "label"), on="stay_id", how="inner")
    header, rows = _cohort_rows(cohort)
    out = '<h2 id="cohort">The patients</h2>'
    if cohort.height < predictions.height:
        out += (
            f'<p class="note">{predictions.height - cohort.height} predicted stays are not in '
            "the stays table and are left out of this table.</p>"
        )
    return out + html_table(header, rows)


def _discrimination_section(ev: _Evaluation) -> str:
    out = '<h2 id="discrimination">Ranking patients by risk</h2>'
    if not 0 < ev.deaths < ev.n:
        return out + "<p>Not available: the test patients all had the same outcome.</p>"
    return out + (
        f"<p>AUROC {_esc(_with_ci(ev.binary, 'auroc'))}; AUPRC "
        f"{_esc(_with_ci(ev.binary, 'auprc'))} (a model that knows nothing scores "
        f"{_num(ev.deaths / ev.n)}). The dot marks the alert threshold.</p>"
        + inline_png(
            _discrimination_figure(ev.y, ev.risk, ev.binary), "ROC and precision-recall curves"
        )
    )


def _calibration_section(ev: _Evaluation) -> str:
    b = ev.binary
    h_plain = _num(b.get("hl_h"), 2)
    if b.get("hl_h_p") is not None:
        h_plain += f" (df {b.get('hl_h_df')}, p = {b['hl_h_p']:.3f})"
    table = html_table(
        ["measure", "value", "ideal"],
        [
            ["Brier score", _with_ci(b, "brier", 4), "0 (lower is better)"],
            ["ECE (10 risk bands)", _with_ci(b, "ece", 4), "0"],
            ["Calibration slope", _with_ci(b, "calibration_slope", 2), "1"],
            ["Calibration intercept", _with_ci(b, "calibration_intercept", 2), "0"],
            ["Hosmer-Lemeshow H, plain (10 risk groups)", h_plain, "small; p > 0.05"],
            [
                "Hosmer-Lemeshow H, PhysioNet 2012 challenge (lemeshow.m)",
                _num(b.get("hl_h_challenge"), 2),
                "low (challenge best 17.88)",
            ],
        ],
    )
    return (
        '<h2 id="calibration">Are the risks right? (calibration)</h2>'
        "<p>Patients are put in ten groups of equal size by predicted risk; each dot is a "
        "group's mean predicted risk against the share who died. Dots on the dashed line "
        "mean the risks can be read as probabilities.</p>"
        + inline_png(_calibration_figure(ev.y, ev.risk), "calibration plot")
        + table
    )


def _importance_section(importance: pl.DataFrame | None, measured_as: str | None) -> str:
    out = '<h2 id="importance">Which variables matter</h2>'
    if importance is None or importance.height == 0:
        return out + "<p>Not computed for this evaluation.</p>"
    return out + (
        "<p>Permutation importance: how much performance drops when a variable's values "
        "are shuffled between patients (bars: mean; lines: spread over repeats). It shows "
        "what the model relies on, not what causes death."
        + (f" Measured as: {_esc(measured_as)}." if measured_as else "")
        + "</p>"
        + inline_png(_importance_figure(importance), "variable importance")
    )


def _survival_section(ev: _Evaluation, predictions: pl.DataFrame) -> str:
    out = '<h2 id="survival">Survival curves</h2>'
    columns = sorted(
        (float(m.group(1)), c) for c in predictions.columns if (m := SURVIVAL_COLUMN.match(c))
    )
    if columns:
        figure, rows = _survival_figure(predictions, columns)
        out += (
            "<p>Besides the in-hospital risk, the model predicts each patient's chance of "
            "being alive at every time after the prediction. Five patients from the lowest "
            "to the highest risk:</p>" + inline_png(figure, "example survival curves")
        )
        if len(columns) <= 8:
            hours = [f"alive at {h:g} h" for h, _ in columns]
            out += html_table(["stay", "in-hospital risk", "outcome", *hours], rows)
    if ev.survival:
        out += _survival_table(ev.survival)
    if not columns and not ev.survival:
        out += "<p>This model predicts no survival curves.</p>"
    return out


def _survival_table(survival: dict[str, Any]) -> str:
    horizon = survival.get("c_index_horizon_h")
    rows: list[list[Any]] = [
        [
            "C-index (Harrell)",
            _num(survival.get("c_index")),
            f"risk of death by {horizon:g} h" if horizon else "",
        ],
        ["C-index (Uno, corrected for censoring)", _num(survival.get("c_index_uno")), ""],
    ]
    for key, value in (survival.get("td_auc") or {}).items():
        brier = (survival.get("brier") or {}).get(key)
        rows.append([f"Time-dependent AUC at {key}", _num(value), f"Brier score {_num(brier, 4)}"])
    span = survival.get("integrated_brier_range_h")
    rows.append(
        [
            "Integrated Brier score",
            _num(survival.get("integrated_brier"), 4),
            f"from {span[0]:g} h to {span[1]:g} h" if span else "",
        ]
    )
    return html_table(["measure", "value", ""], rows)


def _model_section(ev: _Evaluation, info: dict[str, Any]) -> str:
    out = '<h2 id="model">About the model</h2>'
    if info:
        rows = [
            [k, v if isinstance(v, str) else json.dumps(v, default=str)] for k, v in info.items()
        ]
        out += html_table(["", ""], rows)
    boot = ev.binary.get("bootstrap") or {}
    if boot.get("resamples"):
        out += (
            f'<p class="note">95 % confidence intervals: {boot["resamples"]} bootstrap '
            f"resamples ({_esc(boot.get('method', ''))}), seed {_esc(boot.get('seed'))}.</p>"
        )
    notes = {**(ev.binary.get("notes") or {}), **((ev.survival or {}).get("notes") or {})}
    if notes:
        listed = "; ".join(f"{_esc(k)}: {_esc(v)}" for k, v in notes.items())
        out += f'<p class="note">Notes on missing numbers: {listed}</p>'
    return out


def _glossary_section() -> str:
    terms = "".join(f"<dt>{_esc(term)}</dt><dd>{_esc(text)}</dd>" for term, text in GLOSSARY)
    return f'<h2 id="glossary">Glossary</h2><dl>{terms}</dl>'


def write_report(
    out_dir: Path,
    *,
    metrics: dict[str, Any],
    predictions: pl.DataFrame,
    stays: pl.DataFrame,
    importance: pl.DataFrame | None = None,
    model_info: dict[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` for clinicians and return its path.

    Parameters
    ----------
    out_dir
        Created if missing.
    metrics
        :func:`~bedside.training.evaluation.metrics.binary_metrics`' dict, with
        :func:`~bedside.training.evaluation.metrics.survival_metrics`' under
        ``"survival"`` when there are survival curves (see the module's docstring).
    predictions
        One row per test stay: ``stay_id``, ``risk`` (calibrated in-hospital
        mortality), ``label`` (0/1), and optionally ``surv_<h>h`` columns (probability
        of being alive ``h`` hours after the prediction).
    stays
        The canonical stays table (:data:`bedside.schemas.tables.STAYS`); only the
        stays in ``predictions`` are described.
    importance
        Permutation importance: ``variable``, ``importance``, optional ``std``.
    model_info
        Shown as is in "About the model" (architecture, training data, calibration...);
        ``name`` or ``arch`` titles the page.
    """
    missing = {"stay_id", "risk", "label"} - set(predictions.columns)
    if missing:
        raise PredictionError(f"predictions lack columns {sorted(missing)}")
    y, risk = check_predictions(predictions["label"].to_numpy(), predictions["risk"].to_numpy())
    binary = metrics.get("binary", metrics)
    survival = metrics.get("survival", metrics if "c_index" in metrics else None)
    matrix = binary["confusion_matrix"]
    if sum(int(matrix[k]) for k in ("tp", "fp", "fn", "tn")) != y.size:
        raise PredictionError(
            f"the metrics count {binary.get('n')} stays but the predictions have {y.size}: "
            "they must describe the same stays"
        )
    ev = _Evaluation(
        binary=binary,
        survival=survival,
        y=y,
        risk=risk,
        counts={k: int(matrix[k]) for k in ("tp", "fp", "fn", "tn")},
        threshold=float(matrix["threshold"]),
        rule=str(matrix.get("rule", "")),
    )
    info = model_info or {}
    name = str(info.get("name") or info.get("arch") or "Mortality model")
    header = (
        f"<h1>{_esc(name)}: evaluation report</h1>"
        f'<p class="sub">In-hospital mortality risk, tested on {ev.n} ICU stays '
        f"({ev.deaths} deaths). Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by bedside.</p>"
        "<nav>"
        + "".join(
            f'<a href="#{anchor}">{label}</a>'
            for anchor, label in (
                ("alarms", "Alarms"),
                ("cohort", "Patients"),
                ("discrimination", "Ranking"),
                ("calibration", "Calibration"),
                ("importance", "Variables"),
                ("survival", "Survival"),
                ("model", "Model"),
                ("glossary", "Glossary"),
            )
        )
        + "</nav>"
    )
    sections = [
        header,
        _summary_section(ev),
        _alarm_section(ev),
        _cohort_section(stays, predictions),
        _discrimination_section(ev),
        _calibration_section(ev),
        _importance_section(
            importance, (metrics.get("permutation_importance") or {}).get("metric")
        ),
        _survival_section(ev, predictions),
        _model_section(ev, info),
        _glossary_section(),
    ]
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(name)}: evaluation report</title><style>{STYLE}</style></head>"
        "<body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
