"""The evaluation report as one self-contained HTML page, and the data card.

Figures are PNGs inlined as ``data:`` URIs and the style is inline, so the page opens
without network access. The data card (``data_card.json`` and ``data_card.md``, next to
the synthetic stays) says what the data set is, where it comes from, how it was made,
how large it is and what its privacy evaluation found; ``bedside synth sample`` writes
it and ``bedside synth evaluate`` adds the evaluation.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bedside.training.evaluation.report import html_table, inline_png

CARD_JSON = "data_card.json"
CARD_MD = "data_card.md"
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
    "font-size:13px}td.num{text-align:right}img{max-width:100%}.ok{color:#1a7f37}.no{color:#b42318}"
)
REAL, SYNTH = "#0072B2", "#D55E00"


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _png(figure: Figure, alt: str) -> str:
    return inline_png(figure, alt, dpi=90)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    return html_table(header, rows, number=lambda c: _num(c) if isinstance(c, float) else c)


# --- figures ----------------------------------------------------------------------------


def marginals_figure(real: Any, synthetic: Any) -> Figure:
    concepts = real.grid.concepts
    columns = 6
    rows = -(-len(concepts) // columns)
    figure = Figure(figsize=(2.2 * columns, 1.7 * rows))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for j, concept in enumerate(concepts):
        a = real.values[:, :, j][np.isfinite(real.values[:, :, j])]
        b = synthetic.values[:, :, j][np.isfinite(synthetic.values[:, :, j])]
        ax = axes[j]
        if a.size:
            low, high = np.quantile(a, [0.005, 0.995])
            bins = np.linspace(low, high if high > low else low + 1, 40)
            ax.hist(a, bins=bins, density=True, color=REAL, alpha=0.5, label="real")
            if b.size:
                ax.hist(b, bins=bins, density=True, color=SYNTH, alpha=0.5, label="synthetic")
        ax.set_title(concept, fontsize=7)
        ax.tick_params(labelsize=5)
        ax.set_yticks([])
    for ax in axes[len(concepts) :]:
        ax.axis("off")
    axes[0].legend(fontsize=6)
    figure.tight_layout()
    return figure


def missingness_figure(fid: dict[str, Any]) -> Figure:
    figure = Figure(figsize=(9, 3.2))
    left, right = figure.subplots(1, 2)
    real = [v["observed_share_real"] for v in fid["variables"]]
    synth = [v["observed_share_synthetic"] for v in fid["variables"]]
    top = max([*real, *synth, 0.01]) * 1.05
    left.plot([0, top], [0, top], color="#999", lw=0.8)
    left.scatter(real, synth, s=12, color=SYNTH)
    left.set_xlabel("observed share, real", fontsize=8)
    left.set_ylabel("observed share, synthetic", fontsize=8)
    left.set_title("each variable", fontsize=9)
    steps = fid["missingness_by_step"]
    right.plot(steps["real"], color=REAL, label="real")
    right.plot(steps["synthetic"], color=SYNTH, label="synthetic")
    right.set_xlabel("step (hour)", fontsize=8)
    right.set_ylabel("observed share", fontsize=8)
    right.set_title("all variables, by step", fontsize=9)
    right.legend(fontsize=7)
    figure.tight_layout()
    return figure


def correlation_figure(fid: dict[str, Any]) -> Figure:
    real = np.array(fid["correlation"]["real"], dtype=float)
    synth = np.array(fid["correlation"]["synthetic"], dtype=float)
    figure = Figure(figsize=(12, 4))
    axes = figure.subplots(1, 3)
    for ax, matrix, title, cmap, limits in (
        (axes[0], real, "real", "RdBu_r", (-1, 1)),
        (axes[1], synth, "synthetic", "RdBu_r", (-1, 1)),
        (axes[2], np.abs(real - synth), "|difference|", "viridis", (0, 1)),
    ):
        image = ax.imshow(matrix, cmap=cmap, vmin=limits[0], vmax=limits[1])
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        figure.colorbar(image, ax=ax, fraction=0.046)
    return figure


def autocorrelation_figure(fid: dict[str, Any]) -> Figure:
    concepts = fid["correlation"]["concepts"]
    lags = fid["autocorrelation"]["lags_steps"]
    real = np.array(fid["autocorrelation"]["real"], dtype=float)
    synth = np.array(fid["autocorrelation"]["synthetic"], dtype=float)
    columns = 6
    rows = -(-len(concepts) // columns)
    figure = Figure(figsize=(2.2 * columns, 1.5 * rows))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for j, concept in enumerate(concepts):
        axes[j].plot(lags, real[j], "o-", color=REAL, ms=2, lw=1)
        axes[j].plot(lags, synth[j], "o-", color=SYNTH, ms=2, lw=1)
        axes[j].set_ylim(-0.2, 1.05)
        axes[j].set_title(concept, fontsize=7)
        axes[j].tick_params(labelsize=5)
    for ax in axes[len(concepts) :]:
        ax.axis("off")
    figure.tight_layout()
    return figure


def roc_figure(curves: list[tuple[str, np.ndarray, np.ndarray]], title: str) -> Figure:
    from sklearn.metrics import roc_curve

    figure = Figure(figsize=(3.6, 3.4))
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], color="#999", lw=0.8)
    for label, y, score in curves:
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, label=label, lw=1.2)
    ax.set_xlabel("false positive rate", fontsize=8)
    ax.set_ylabel("true positive rate", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def dcr_figure(privacy: dict[str, Any]) -> Figure:
    synth = np.array(privacy["_dcr"]["synthetic"])
    holdout = np.array(privacy["_dcr"]["holdout"])
    figure = Figure(figsize=(5, 3.2))
    ax = figure.subplots()
    bins = np.linspace(0, np.quantile(np.r_[synth, holdout], 0.99), 40)
    ax.hist(holdout, bins=bins, alpha=0.5, color=REAL, label="real test stay -> training")
    ax.hist(synth, bins=bins, alpha=0.5, color=SYNTH, label="synthetic stay -> training")
    ax.set_xlabel("distance to closest training record", fontsize=8)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def utility_figure(report: dict[str, Any]) -> Figure:
    util, rebalance = report["utility"], report["rebalancing"]
    labels = ["train real", "train synthetic"] + [
        f"real + synthetic deaths ({run['death_share']:.0%})" for run in rebalance["runs"]
    ]
    runs = [util["trtr"], util["tstr"], *rebalance["runs"]]
    figure = Figure(figsize=(9, 3.2))
    axes = figure.subplots(1, 3)
    for ax, key in zip(axes, ("auroc", "auprc", "ece"), strict=True):
        values = [r[key] if r[key] is not None else np.nan for r in runs]
        ax.barh(range(len(runs)), values, color=[REAL, SYNTH] + ["#009E73"] * (len(runs) - 2))
        ax.set_yticks(range(len(runs)))
        ax.set_yticklabels(labels if key == "auroc" else [], fontsize=7)
        ax.set_title(f"{key.upper()} on real test stays", fontsize=9)
        ax.invert_yaxis()
    figure.tight_layout()
    return figure


def curves_figure(history: list[dict[str, Any]]) -> Figure | None:
    keys = sorted(
        {k for r in history for k, v in r.items() if isinstance(v, int | float)}
        - {"step", "seconds", "epoch", "learning_rate"}
    )
    if not keys:
        return None
    figure = Figure(figsize=(3 * len(keys), 2.6))
    for ax, key in zip(figure.subplots(1, len(keys), squeeze=False)[0], keys, strict=True):
        points = [(r["step"], r[key]) for r in history if key in r]
        ax.plot(*zip(*points, strict=True), lw=1)
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=6)
    figure.tight_layout()
    return figure


# --- the page ----------------------------------------------------------------------------


def _goal_rows(goals: dict[str, Any]) -> str:
    rows = []
    for name, goal in goals.items():
        mark = '<b class="ok">met</b>' if goal["met"] else '<b class="no">not met</b>'
        rows.append(
            f"<tr><td>{_esc(name)}</td><td class='num'>{_num(goal['value'])}</td>"
            f"<td>{_esc(goal['goal'])}</td><td>{mark}</td></tr>"
        )
    return (
        "<table><tr><th>measure</th><th>value</th><th>goal</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _floor(floor: dict[str, Any] | None) -> str:
    if floor is None:
        return ""
    return (
        f"<p>Encoding floor: the same gradient boosting tells half of the real test stays "
        f"from the other half passed through the generator's encoding and decoding, with no "
        f"model, with AUROC {_num(floor['auroc'])}. A generator with a perfect model would "
        f"still score this; what its samples score above it comes from the model.</p>"
    )


def write_html(
    path: Path,
    report: dict[str, Any],
    real: Any,
    synthetic: Any,
    generator: dict[str, Any] | None = None,
) -> None:
    fid, disc, priv = report["fidelity"], report["discriminative"], report["privacy"]
    util, rebalance = report["utility"], report["rebalancing"]
    summary = fid["summary"]
    data = report["data"]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Synthetic data evaluation"
        f"</title><style>{STYLE}</style></head><body>",
        "<h1>Synthetic ICU stays: evaluation</h1>",
        f"<p>Synthetic: {data['synthetic']['stays']} stays ({data['synthetic']['deaths']} deaths). "
        f"Real training stays (the generator's): {data['train']['stays']} "
        f"({data['train']['deaths']} deaths). Real test stays (never seen by the generator): "
        f"{data['test']['stays']} ({data['test']['deaths']} deaths). Written "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}.</p>",
        "<h2>Goals</h2>",
        _goal_rows(report["goals"]),
        "<h2>Fidelity</h2>",
        _table(
            [
                "mean KS",
                "max KS",
                "mean Wasserstein / SD",
                "observed share real",
                "observed share synthetic",
                "mean |missingness diff|",
                "mean |correlation diff|",
                "mean |autocorrelation diff|",
            ],
            [
                [
                    summary["ks_mean"],
                    summary["ks_max"],
                    summary["wasserstein_std_mean"],
                    summary["observed_share_real"],
                    summary["observed_share_synthetic"],
                    summary["missingness_abs_diff_mean"],
                    summary["correlation_abs_diff_mean"],
                    summary["autocorrelation_abs_diff_mean"],
                ]
            ],
        ),
        "<h3>Values of each variable (observed steps)</h3>",
        _png(marginals_figure(real, synthetic), "histograms of real and synthetic values"),
        _table(
            [
                "variable",
                "KS",
                "Wasserstein",
                "Wasserstein / SD",
                "observed real",
                "observed synthetic",
            ],
            [
                [
                    v["concept"],
                    v["ks"],
                    v["wasserstein"],
                    v["wasserstein_std"],
                    v["observed_share_real"],
                    v["observed_share_synthetic"],
                ]
                for v in fid["variables"]
            ],
        ),
        "<h3>Missingness</h3>",
        _png(missingness_figure(fid), "observed shares"),
        "<h3>Correlation of the stays' mean values</h3>",
        _png(correlation_figure(fid), "correlation matrices"),
        "<h3>Autocorrelation (lags in steps; blue real, orange synthetic)</h3>",
        _png(autocorrelation_figure(fid), "autocorrelation by lag"),
        "<h3>Static covariates</h3>",
        _table(
            ["covariate", "KS or total variation", "known/real", "synthetic"],
            [
                [
                    k,
                    v.get("ks", v.get("total_variation")),
                    v.get("known_share_real", json.dumps(v.get("real"), default=str)[:80]),
                    v.get(
                        "known_share_synthetic", json.dumps(v.get("synthetic"), default=str)[:80]
                    ),
                ]
                for k, v in fid["statics"].items()
                if k != "death_share"
            ],
        ),
        "<h3>Discriminative score</h3>",
        f"<p>AUROC of a classifier telling real test stays from synthetic ones "
        f"({disc['n_each']} of each; 0.5 = indistinguishable): gradient boosting "
        f"{_num(disc['gradient_boosting']['auroc'])}, GRU {_num(disc['gru']['auroc'])}.</p>",
        _floor(disc.get("encoding_floor")),
        _png(
            roc_figure(
                [
                    (
                        "gradient boosting (out-of-fold)",
                        np.array(disc["_roc"]["y"]),
                        np.array(disc["_roc"]["gradient_boosting"]),
                    )
                ],
                "real vs synthetic",
            ),
            "ROC of the discriminator",
        ),
        "<h2>Utility and rebalancing</h2>",
        f"<p>Mortality model <code>{_esc(util['model'])}</code>, tested on the real test stays. "
        f"Train on real: AUROC {_num(util['trtr']['auroc'])}; train on synthetic: "
        f"{_num(util['tstr']['auroc'])} (gap {_num(util['auroc_gap'])}).</p>",
        _png(utility_figure(report), "utility and rebalancing"),
        _table(
            [
                "training stays",
                "deaths share",
                "AUROC",
                "AUPRC",
                "Brier",
                "ECE",
                "slope",
                "intercept",
                "ECE prior-corrected",
                "slope prior-corrected",
            ],
            [
                [
                    "real",
                    rebalance["real_death_share"],
                    util["trtr"]["auroc"],
                    util["trtr"]["auprc"],
                    util["trtr"]["brier"],
                    util["trtr"]["ece"],
                    util["trtr"]["calibration_slope"],
                    util["trtr"]["calibration_intercept"],
                    "",
                    "",
                ],
                [
                    "synthetic",
                    rebalance["real_death_share"],
                    util["tstr"]["auroc"],
                    util["tstr"]["auprc"],
                    util["tstr"]["brier"],
                    util["tstr"]["ece"],
                    util["tstr"]["calibration_slope"],
                    util["tstr"]["calibration_intercept"],
                    "",
                    "",
                ],
            ]
            + [
                [
                    f"real + {r['synthetic_deaths_added']} synthetic deaths",
                    r["death_share"],
                    r["auroc"],
                    r["auprc"],
                    r["brier"],
                    r["ece"],
                    r["calibration_slope"],
                    r["calibration_intercept"],
                    r["prior_corrected"]["ece"],
                    r["prior_corrected"]["calibration_slope"],
                ]
                for r in rebalance["runs"]
            ],
        ),
        "<h2>Privacy</h2>",
        f"<p>Distance to closest training record: synthetic median "
        f"{_num(priv['dcr']['synthetic_to_train']['median'])} against "
        f"{_num(priv['dcr']['holdout_to_train']['median'])} for real test stays (ratio "
        f"{_num(priv['dcr']['ratio_of_medians'])}); "
        f"{priv['dcr']['share_closer_than_holdout_5th_percentile']:.1%} of synthetic stays are "
        f"closer than the 5th percentile of real test stays (5 % expected without copying); "
        f"{priv['dcr']['copies']} exact copies. Membership inference AUROC "
        f"{_num(priv['membership_inference']['auroc'])} (advantage "
        f"{_num(priv['membership_inference']['advantage'])}).</p>",
        _png(dcr_figure(priv), "distance to closest record"),
        _png(
            roc_figure(
                [("distance attack", np.array(priv["_mia"]["y"]), np.array(priv["_mia"]["score"]))],
                "membership inference",
            ),
            "ROC of the membership inference attack",
        ),
    ]
    if generator is not None:
        parts.append("<h2>Generator</h2>")
        parts.append(f"<pre>{_esc(json.dumps(generator.get('training', {}), indent=1))}</pre>")
        figure = curves_figure(generator.get("history", []))
        if figure is not None:
            parts.append(_png(figure, "training curves"))
    parts.append("</body></html>")
    path.write_text("\n".join(parts))


# --- the data card -------------------------------------------------------------------------


def data_card(
    generator: Any,
    model_dir: Path,
    stays: Any,
    formats: dict[str, str],
    seed: int,
    death_share: float | None,
    selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from bedside import __version__

    training = dict(generator.training)
    levels = generator.encoding.variables[0].quantiles.size
    return {
        "name": f"bedside synthetic ICU stays ({generator.kind})",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "bedside_version": __version__,
        "source": {
            "description": "real ICU stays the generator was trained on",
            "training_data": training.pop("data", {}),
            "stays": training.get("n_stays"),
            "deaths": training.get("n_deaths"),
        },
        "generator": {
            "kind": generator.kind,
            "description": {
                "gan": "conditional WGAN-GP: GRU generator, convolutional critic (RCGAN-style)",
                "lm": "autoregressive transformer over tokenised stays, trained from scratch",
            }[generator.kind],
            "model_folder": str(model_dir.resolve()),
            "config": generator.config.__dict__,
            "training": training,
        },
        "sampling": {
            "seed": seed,
            "death_share": death_share if death_share is not None else "as in training",
            "conditions": "outcome (in-hospital death) and ICU type, drawn as in training",
            "outcome_guidance": getattr(generator.config, "guidance", None),
            "selection": selection or {"candidates": 1, "method": "none: every stay drawn kept"},
        },
        "size": {
            "stays": len(stays),
            "deaths": int(stays.death.sum()),
            "values": int(stays.mask.sum()),
            "variables": list(stays.grid.concepts),
            "steps": stays.grid.steps,
            "step_minutes": stays.grid.step_minutes,
        },
        "formats": formats,
        "privacy": {"evaluated": False, "how": "run bedside synth evaluate on this folder"},
        "limitations": [
            "values are generated on the hourly grid (one value per variable and hour); "
            "times within the hour are random",
            f"every value is one of the {levels:,} training quantiles of its variable; nothing "
            "more extreme than the quantiles at either end is written",
            "outcome times (hospital stay, survival) come from the generator; deaths after "
            "discharge are as frequent as the generator learnt",
            "no formal privacy guarantee (no differential privacy): the privacy section is an "
            "empirical evaluation against one attack",
        ],
    }


def card_markdown(card: dict[str, Any]) -> str:
    size, generator = card["size"], card["generator"]
    selection = card["sampling"].get("selection") or {}
    lines = [
        f"# {card['name']}",
        "",
        f"Created {card['created']} by bedside {card['bedside_version']}.",
        "",
        "## Source",
        f"- {card['source']['description']}: {card['source']['stays']} stays, "
        f"{card['source']['deaths']} in-hospital deaths",
        *[f"- {key}: {value}" for key, value in card["source"]["training_data"].items()],
        "",
        "## Generator",
        f"- {generator['kind']}: {generator['description']}",
        f"- trained {generator['training'].get('steps')} steps in "
        f"{generator['training'].get('seconds')} s (stopped by "
        f"{generator['training'].get('stopped_by')}), seed {generator['training'].get('seed')}",
        f"- model folder: `{generator['model_folder']}`",
        "",
        "## Sampling",
        *[
            f"- {key}: {value}"
            for key, value in card["sampling"].items()
            if value is not None and not isinstance(value, dict)
        ],
        *[f"- selection, {key}: {value}" for key, value in selection.items()],
        "",
        "## Size",
        f"- {size['stays']} stays, {size['deaths']} deaths, {size['values']} values",
        f"- {len(size['variables'])} variables on {size['steps']} steps of "
        f"{size['step_minutes']:g} minutes",
        "",
        "## Formats",
        *[f"- {name}: `{where}`" for name, where in card["formats"].items()],
        "",
        "## Privacy",
    ]
    privacy = card["privacy"]
    if not privacy.get("evaluated"):
        lines.append(f"- not evaluated yet: {privacy['how']}")
    else:
        lines += [
            f"- evaluated {privacy['when']} against {privacy['against']}",
            f"- distance to closest training record, median: synthetic "
            f"{privacy['dcr_median_synthetic']:.3f}, real held-out stays "
            f"{privacy['dcr_median_holdout']:.3f}; exact copies: {privacy['copies']}",
            f"- synthetic stays closer than the held-out 5th percentile: "
            f"{privacy['share_closer_than_holdout_5th_percentile']:.1%} (5 % expected)",
            f"- membership-inference AUROC: {privacy['membership_inference_auroc']:.3f} "
            "(0.5 = chance)",
        ]
        if "fidelity_utility" in card:
            fu = card["fidelity_utility"]
            lines += [
                "",
                "## Fidelity and utility",
                f"- discriminative AUROC {fu['discriminative_auroc']:.3f}; "
                f"mean KS {fu['ks_mean']:.3f}",
                f"- mortality AUROC trained on synthetic {fu['tstr_auroc']:.3f} vs on real "
                f"{fu['trtr_auroc']:.3f}",
            ]
    lines += ["", "## Limitations", *[f"- {item}" for item in card["limitations"]], ""]
    return "\n".join(lines)


def _sampling(folder: Path) -> dict[str, Any]:
    card = folder / CARD_JSON
    if not card.exists():
        return {}
    sampling: dict[str, Any] = json.loads(card.read_text()).get("sampling", {})
    return sampling


def sampled_guidance(folder: Path) -> float:
    """The outcome guidance the stays of ``folder`` were sampled with, from their data
    card (0 without one, or for a card written before the option existed)."""
    return float(_sampling(folder).get("outcome_guidance") or 0.0)


def sampled_candidates(folder: Path) -> int:
    """The candidates drawn for each stay of ``folder`` (:mod:`~bedside.training.synthetic.refine`),
    from its data card (1 without one, or for a card written before the option existed)."""
    return int((_sampling(folder).get("selection") or {}).get("candidates") or 1)


def write_card(folder: Path, card: dict[str, Any]) -> None:
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2, default=str) + "\n")
    (folder / CARD_MD).write_text(card_markdown(card))


def add_evaluation(folder: Path, report: dict[str, Any], against: str) -> dict[str, Any] | None:
    """Record the privacy (and headline) results in the folder's data card, if it has one."""
    path = folder / CARD_JSON
    if not path.exists():
        return None
    card: dict[str, Any] = json.loads(path.read_text())
    dcr, mia = report["privacy"]["dcr"], report["privacy"]["membership_inference"]
    card["privacy"] = {
        "evaluated": True,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "against": against,
        "dcr_median_synthetic": dcr["synthetic_to_train"]["median"],
        "dcr_median_holdout": dcr["holdout_to_train"]["median"],
        "share_closer_than_holdout_5th_percentile": dcr["share_closer_than_holdout_5th_percentile"],
        "copies": dcr["copies"],
        "membership_inference_auroc": mia["auroc"],
        "membership_inference_advantage": mia["advantage"],
    }
    card["fidelity_utility"] = {
        "discriminative_auroc": report["discriminative"]["auroc"],
        "ks_mean": report["fidelity"]["summary"]["ks_mean"],
        "tstr_auroc": report["utility"]["tstr"]["auroc"],
        "trtr_auroc": report["utility"]["trtr"]["auroc"],
    }
    write_card(folder, card)
    return card
