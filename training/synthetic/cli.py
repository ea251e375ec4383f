"""``bedside synth train``, ``bedside synth sample`` and ``bedside synth evaluate``.

* ``train --data DIR... --generator gan|lm --out MODEL_DIR``: fit a generator on the
  stays of canonical folders within ``--max-minutes`` (and ``--steps``); writes the
  generator folder (:mod:`~bedside.training.synthetic.generator`) with its training
  curves.
* ``sample --model MODEL_DIR --out DIR``: ``--stays`` synthetic stays (default: as many
  as the generator was trained on) with ``--deaths-share`` deaths (default: as in
  training), written in the canonical format (``DIR/events.parquet``,
  ``DIR/stays.parquet``: every other command reads them) and in the PhysioNet 2012
  format (``DIR/physionet2012/set-synthetic/*.txt`` and ``Outcomes-synthetic.txt``), with
  a data card (``DIR/data_card.json``, ``DIR/data_card.md``). With ``--candidates K
  --data DIR...`` (the generator's training folders), each stay is the one kept of K
  drawn (:mod:`~bedside.training.synthetic.refine`).
* ``evaluate --synthetic DIR --train DIR... --test DIR... --out REPORT_DIR``: the
  evaluation of :mod:`~bedside.training.synthetic.evaluate` as ``evaluation.json`` and a
  self-contained ``report.html``; the privacy results are added to the synthetic
  folder's data card. ``--model`` lets the rebalancing draw more synthetic deaths than
  the folder holds, drawn as the folder's were (guidance, candidates: its data card).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

#: Cores torch uses (the project's machines have two, shared).
THREADS = 2


def _set_threads() -> None:
    # Idle OpenMP threads spin by default and steal the core the working one needs on a
    # shared machine; passive waiting must be chosen before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(min(THREADS, os.cpu_count() or 1))


def train(args: argparse.Namespace) -> int:
    _set_threads()
    from bedside.training.survival.data import fingerprint, read_folders
    from bedside.training.survival.fit import observed_grid
    from bedside.training.synthetic.data import stay_set
    from bedside.training.synthetic.generator import generator_class, settings
    from bedside.training.windows import PHYSIONET_2012

    overrides = settings(args.generator, args.set)
    events, stays = read_folders(args.data)
    data = stay_set(events, stays, PHYSIONET_2012)
    data = data.on_grid(observed_grid(data.values, PHYSIONET_2012))
    generator = generator_class(args.generator)(**overrides)
    print(
        f"training the {args.generator} generator"
        + "".join(f" {k}={v}" for k, v in overrides.items())
        + f" on {len(data)} stays "
        f"({int(data.death.sum())} deaths, {len(data.grid.concepts)} variables) for at most "
        f"{args.max_minutes:g} minutes and {args.steps} steps",
        flush=True,
    )
    generator.fit(
        data,
        max_seconds=60.0 * args.max_minutes,
        max_steps=args.steps,
        seed=args.seed,
        progress=lambda line: print(line, flush=True),
    )
    generator.training["data"] = fingerprint(args.data, stays)
    generator.save(args.out)
    t = generator.training
    print(
        f"{args.generator}: {t['steps']} steps in {t['seconds']:.0f} s (stopped by "
        f"{t['stopped_by']}); wrote {args.out} (generator.json, weights.pt, training curves)"
    )
    return 0


def sample(args: argparse.Namespace) -> int:
    _set_threads()
    from bedside.training.synthetic.data import write_canonical, write_physionet2012
    from bedside.training.synthetic.generator import GeneratorError, load_generator
    from bedside.training.synthetic.refine import select
    from bedside.training.synthetic.report import data_card, write_card

    generator = load_generator(args.model)
    if args.guidance is not None:
        if generator.kind != "lm":
            raise GeneratorError(
                f"--guidance: a setting of the lm generator, not the {generator.kind}"
            )
        generator = generator.with_guidance(args.guidance)
    n = args.stays if args.stays is not None else int(generator.training["n_stays"])
    selection = None
    if args.candidates < 1:
        raise GeneratorError(f"--candidates {args.candidates}: expected 1 or more")
    if args.candidates > 1:
        real = _training_stays(generator, args.data)
        stays, selection = select(
            generator,
            real,
            n,
            candidates=args.candidates,
            seed=args.seed,
            death_share=args.deaths_share,
            progress=lambda line: print(line, flush=True),
        )
    else:
        stays = generator.sample(n, seed=args.seed, death_share=args.deaths_share)
    args.out.mkdir(parents=True, exist_ok=True)
    source = f"bedside-synth {generator.kind}"
    formats = {}
    write_canonical(stays, args.out, source, args.seed)
    formats["canonical"] = f"{args.out}/events.parquet, {args.out}/stays.parquet"
    if not args.canonical_only:
        set_dir, outcomes = write_physionet2012(stays, args.out / "physionet2012", args.seed)
        formats["physionet2012"] = f"{set_dir}/<RecordID>.txt, {outcomes}"
    write_card(
        args.out,
        data_card(generator, args.model, stays, formats, args.seed, args.deaths_share, selection),
    )
    print(
        f"sampled {len(stays)} stays ({int(stays.death.sum())} deaths, {int(stays.mask.sum()):,} "
        f"values) from the {generator.kind} generator (seed {args.seed}); wrote "
        + ", ".join(formats)
        + f" and data_card.json/.md to {args.out}"
    )
    return 0


def _training_stays(generator: Any, folders: list[Path] | None) -> Any:
    """The stays of ``folders``, refused unless they are the ones the generator was trained
    on: the selection's classifier must never see stays the samples are evaluated
    against."""
    from bedside.training.survival.data import fingerprint, read_folders
    from bedside.training.synthetic.data import stay_set
    from bedside.training.synthetic.generator import GeneratorError

    if not folders:
        raise GeneratorError(
            "--candidates needs --data: the canonical folders the generator was trained on"
        )
    events, stays = read_folders(folders)
    trained_on = generator.training.get("data")
    if not trained_on:
        raise GeneratorError(
            "--candidates: the generator does not record the stays it was trained on "
            "(train it with `bedside synth train`)"
        )
    if fingerprint(folders, stays)["stay_ids_sha256"] != trained_on.get("stay_ids_sha256"):
        raise GeneratorError(
            f"--data {' '.join(map(str, folders))}: not the stays the generator was trained "
            f"on ({', '.join(trained_on['folders'])}, {trained_on['n_stays']} stays); the "
            "selection compares candidates "
            "with the training stays only"
        )
    return stay_set(events, stays, generator.encoding.grid)


def evaluate(args: argparse.Namespace) -> int:
    _set_threads()
    from bedside.training.survival.data import read_folders
    from bedside.training.synthetic.data import StaySet
    from bedside.training.synthetic.evaluate import EvaluationOptions, Sets, evaluate, public
    from bedside.training.synthetic.generator import CURVES_PLOT, load_generator
    from bedside.training.synthetic.refine import select
    from bedside.training.synthetic.report import (
        CARD_JSON,
        add_evaluation,
        sampled_candidates,
        sampled_guidance,
        write_html,
    )
    from bedside.training.windows import PHYSIONET_2012

    shares = tuple(float(s) for s in args.rebalance.split(",") if s.strip())
    options = EvaluationOptions(
        utility_arch=args.utility_arch,
        max_minutes=args.max_minutes,
        rebalance_shares=shares,
        seed=args.seed,
    )
    sets = Sets.build(
        read_folders(args.train),
        read_folders(args.test),
        read_folders([args.synthetic]),
        PHYSIONET_2012,
    )
    generator = load_generator(args.model) if args.model else None
    if generator is not None and generator.kind == "lm":
        # More deaths for the rebalancing, drawn as the synthetic stays were (data card).
        generator = generator.with_guidance(sampled_guidance(args.synthetic))

    candidates = sampled_candidates(args.synthetic)

    def more_deaths(k: int) -> StaySet:
        assert generator is not None
        if candidates == 1:
            return generator.sample(k, seed=args.seed + 1, death_share=1.0)
        deaths, _ = select(
            generator, sets.train_set, k, candidates=candidates, seed=args.seed + 1, death_share=1.0
        )
        return deaths

    report = evaluate(
        sets,
        options,
        more_deaths if generator else None,
        round_trip=(lambda s: generator.round_trip(s, seed=args.seed)) if generator else None,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluation.json").write_text(json.dumps(public(report), indent=2) + "\n")
    info = None
    if generator is not None:
        info = {"training": generator.training, "history": generator.history}
        if (args.model / CURVES_PLOT).exists():
            shutil.copy(args.model / CURVES_PLOT, args.out / CURVES_PLOT)
    write_html(args.out / "report.html", report, sets.test_set, sets.synthetic_set, info)
    against = (
        f"training {', '.join(map(str, args.train))}; held out {', '.join(map(str, args.test))}"
    )
    if add_evaluation(args.synthetic, report, against) is not None:
        shutil.copy(args.synthetic / CARD_JSON, args.out / CARD_JSON)
    goals = report["goals"]
    util = report["utility"]
    floor = report["discriminative"].get("encoding_floor")
    print(
        f"discriminative AUROC {goals['discriminative_auroc']['value']:.3f}"
        + (f" (encoding floor {floor['auroc']:.3f}), " if floor else ", ")
        + f"TSTR {util['tstr']['auroc']:.3f} vs TRTR {util['trtr']['auroc']:.3f}, "
        f"membership inference AUROC {goals['membership_inference_auroc']['value']:.3f}; "
        + ", ".join(f"{k} {'met' if g['met'] else 'NOT met'}" for k, g in goals.items())
        + f"; report in {args.out}"
    )
    return 0
