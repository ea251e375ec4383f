"""Synthetic stays: encodings, both generators, the two output formats, the evaluation.

Generators are tiny and train for a few steps on a simulated cohort
(:func:`bedside.replay.simulator.simulate_cohort`): what is tested is that they train,
sample valid stays, save and load without pickle and repeat themselves with a seed,
not how good they are (BENCHMARKS.md measures that on PhysioNet 2012).
"""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from bedside.cli import main
from bedside.replay.simulator import simulate_cohort
from bedside.training.data import physionet2012
from bedside.training.survival.fit import observed_grid
from bedside.training.synthetic.data import (
    StaySet,
    read_stay_set,
    stay_set,
    write_canonical,
    write_physionet2012,
)
from bedside.training.synthetic.encoding import Encoding, Marginal
from bedside.training.synthetic.evaluate import EvaluationOptions, Sets, evaluate, public
from bedside.training.synthetic.gan.model import ConditionalGan
from bedside.training.synthetic.generator import WEIGHTS_FILE, GeneratorError, load_generator
from bedside.training.synthetic.lm.model import TokenLanguageModel
from bedside.training.synthetic.lm.tokens import (
    PositionChain,
    StateTracker,
    decode,
    encode,
    hours,
    state_features,
)
from bedside.training.synthetic.refine import select
from bedside.training.synthetic.report import (
    add_evaluation,
    data_card,
    sampled_candidates,
    sampled_guidance,
    write_card,
    write_html,
)
from bedside.training.windows import PHYSIONET_2012

torch.set_num_threads(1)

TINY_GAN: dict[str, Any] = {
    "noise": 8,
    "hidden": 16,
    "critic_channels": 8,
    "batch_size": 16,
    "log_every": 1,
}
TINY_LM: dict[str, Any] = {
    "width": 16,
    "layers": 1,
    "heads": 2,
    "feedforward": 32,
    "evaluate_every": 2,
}


@pytest.fixture(scope="module")
def cohort() -> dict[str, Any]:
    train_events, train_stays, _ = simulate_cohort(60, 48.0, seed=11)
    test_events, test_stays, _ = simulate_cohort(40, 48.0, seed=12)
    test_stays = test_stays.with_columns(pl.col("stay_id") + 1000, pl.col("subject_id") + 1000)
    test_events = test_events.with_columns(pl.col("stay_id") + 1000, pl.col("subject_id") + 1000)
    train = stay_set(train_events, train_stays, PHYSIONET_2012)
    train = train.on_grid(observed_grid(train.values, PHYSIONET_2012))
    return {
        "train": train,
        "train_tables": (train_events, train_stays),
        "test_tables": (test_events, test_stays),
    }


@pytest.fixture(scope="module")
def gan(cohort: dict[str, Any]) -> ConditionalGan:
    return ConditionalGan(**TINY_GAN).fit(cohort["train"], max_seconds=60, max_steps=3, seed=5)


@pytest.fixture(scope="module")
def lm(cohort: dict[str, Any]) -> TokenLanguageModel:
    return TokenLanguageModel(**TINY_LM).fit(cohort["train"], max_seconds=60, max_steps=3, seed=5)


def assert_same_stays(a: StaySet, b: StaySet) -> None:
    assert a.grid == b.grid
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.values[a.mask], b.values[b.mask], rtol=1e-6)
    assert a.statics.equals(b.statics)
    np.testing.assert_array_equal(a.death, b.death)


# --- encodings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "bedside.training.synthetic.encoding",
        "bedside.training.synthetic.generator",
        "bedside.training.synthetic.lm.tokens",
    ],
)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_marginal_gives_back_the_nearest_training_quantile() -> None:
    rng = np.random.default_rng(0)
    training = np.round(rng.lognormal(3, 1, 2000), 1)
    marginal = Marginal.fit(training, levels=64)
    assert set(marginal.quantiles) <= set(training)  # every quantile is an observed value
    u = marginal.to_uniform(training, rng)
    assert np.all((u > 0) & (u < 1))
    back = marginal.from_uniform(u)
    gap = np.abs(training[:, None] - marginal.quantiles[None, :]).min(axis=1)
    np.testing.assert_allclose(np.abs(back - training), gap, atol=1e-9)  # a nearest quantile
    assert np.isnan(marginal.to_uniform(np.array([np.nan]), rng)[0])
    # Ties are spread over their ranks, so the ranks of a lattice are near uniform.
    assert abs(np.mean(u) - 0.5) < 0.03


def test_marginal_never_reaches_the_most_extreme_training_values() -> None:
    training = np.arange(5000.0)
    quantiles = Marginal.fit(training).quantiles
    assert quantiles.min() == 10.0 and quantiles.max() == 4989.0  # 10 from either end
    np.testing.assert_array_equal(
        Marginal.fit(np.array([1.0, 5.0]), levels=4).quantiles, [1, 1, 5, 5]
    )


def test_a_value_held_through_a_stay_keeps_one_rank(cohort: dict[str, Any]) -> None:
    stays: StaySet = cohort["train"]
    held = stays.values.copy()
    j = int(np.argmax(np.isfinite(held).sum(axis=(0, 1))))
    lattice = Marginal.fit(held[:, :, j]).quantiles
    held[:, :, j] = np.where(np.isfinite(held[:, :, j]), np.median(lattice), np.nan)
    stays = StaySet(stays.grid, held, stays.statics, stays.death)
    ranks = Encoding.fit(stays).ranks(stays, np.random.default_rng(0))[:, :, j]
    spread = np.nanmax(ranks, axis=1) - np.nanmin(ranks, axis=1)
    assert np.nanmax(spread) < 1e-9  # one rank per stay ...
    assert np.nanstd(np.nanmean(ranks, axis=1)) > 0.1  # ... spread over the tie across stays


def test_encoding_round_trips_through_json(cohort: dict[str, Any]) -> None:
    encoding = Encoding.fit(cohort["train"])
    again = Encoding.from_dict(json.loads(json.dumps(encoding.to_dict())))
    assert again.grid == encoding.grid and again.icu_types == encoding.icu_types
    for a, b in zip(again.variables, encoding.variables, strict=True):
        np.testing.assert_array_equal(a.quantiles, b.quantiles)
    death, icu = encoding.conditions(1000, np.random.default_rng(1))
    assert abs(death.mean() - encoding.death_share) < 0.01
    assert set(icu) <= set(range(len(encoding.icu_types)))


def test_tokens_round_trip_and_state_matches_the_incremental_one(
    lm: TokenLanguageModel, cohort: dict[str, Any]
) -> None:
    stays: StaySet = cohort["train"]
    encoding, vocab = lm.encoding, lm.vocabulary
    assert encoding is not None
    rng = np.random.default_rng(3)
    ranks = encoding.ranks(stays, rng)
    statics = encoding.static_ranks(stays, rng)
    sequences = encode(
        vocab, stays.death, encoding.icu_index(stays), encoding.sex_index(stays), statics, ranks
    )
    decoded, decoded_statics, sex = decode(vocab, [s[:-1] for s in sequences], rng)
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(ranks))
    seen = ~np.isnan(ranks)
    same_bin = np.floor(decoded[seen] * vocab.bins) == np.floor(ranks[seen] * vocab.bins)
    assert same_bin.all()
    np.testing.assert_array_equal(np.isnan(decoded_statics), np.isnan(statics))
    np.testing.assert_array_equal(sex, encoding.sex_index(stays))
    tokens = torch.as_tensor(sequences[0])[None]
    tracker = StateTracker(vocab, 1)
    step = hours(vocab, tokens)
    one_by_one = torch.stack(
        [tracker.update(tokens[:, i], step[:, i]) for i in range(tokens.shape[1])], dim=1
    )
    torch.testing.assert_close(one_by_one, state_features(vocab, tokens))


def test_round_trip_keeps_the_stays_up_to_each_generators_resolution(
    lm: TokenLanguageModel, gan: ConditionalGan, cohort: dict[str, Any]
) -> None:
    """Through a generator's representation and back (its encoding floor's input), a
    stay keeps its outcome, ICU type, sex and missingness; its values keep their rank up
    to the lm's bins, and almost exactly through the GAN's unbinned ranks."""
    stays: StaySet = cohort["train"]
    encoding = lm.encoding
    assert encoding is not None
    rng = np.random.default_rng(0)
    ranks = encoding.ranks(stays, rng)
    for generator, tolerance in ((lm, 1.0 / lm.vocabulary.bins), (gan, 0.01)):
        back = generator.round_trip(stays, seed=3)
        assert back.grid == stays.grid
        np.testing.assert_array_equal(back.mask, stays.mask)
        np.testing.assert_array_equal(back.death, stays.death)
        for column in ("icu_type", "sex"):
            assert back.statics[column].to_list() == stays.statics[column].to_list()
        moved = np.abs(encoding.ranks(back, rng) - ranks)[stays.mask]
        assert np.median(moved) < tolerance, generator.kind
        assert not np.allclose(back.values[back.mask], stays.values[stays.mask])


@pytest.mark.parametrize(
    ("setting", "message"),
    [("bins=many", "expected int, got 'many'"), ("depth=3", "KEY one of"), ("bins=-2", "negative")],
)
def test_synth_train_rejects_a_bad_setting_before_reading_the_data(
    setting: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["synth", "train", "--data", str(tmp_path / "none"), "--set", setting]
    assert main([*args, "--out", str(tmp_path / "lm")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "lm").exists()


def test_position_chain_keeps_a_slowly_moving_value_near_its_place() -> None:
    """Decoded with the chain, a value that stays in its bin moves inside it about as
    little as in the stays the chain was counted on; drawn uniformly, it jumps about."""
    rng = np.random.default_rng(4)
    walk = 0.5 + np.cumsum(rng.normal(0, 0.004, (300, 48, 2)), axis=1)
    ranks = np.clip(walk, 0.001, 0.999)
    ranks[rng.random(ranks.shape) < 0.3] = np.nan  # missing hours
    bins = 8
    chain = PositionChain.fit(ranks, bins)
    binned = np.where(np.isnan(ranks), -1, np.floor(ranks * bins)).astype(np.int64)
    decoded = chain.ranks(binned, rng)
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(ranks))
    seen = ~np.isnan(ranks)
    np.testing.assert_array_equal(np.floor(decoded[seen] * bins), binned[seen])

    def move_in_bin(r: np.ndarray) -> float:
        moves = []
        for stay, v in np.ndindex(r.shape[0], r.shape[2]):
            series = r[stay, :, v][~np.isnan(r[stay, :, v])]
            same = np.floor(series[1:] * bins) == np.floor(series[:-1] * bins)
            moves += list(np.abs(np.diff(series))[same])
        return float(np.mean(moves))

    uniform = np.where(binned >= 0, (binned + rng.random(binned.shape)) / bins, np.nan)
    assert move_in_bin(decoded) < 2 * move_in_bin(ranks)
    assert move_in_bin(uniform) > 3 * move_in_bin(decoded)
    again = PositionChain.from_dict(json.loads(json.dumps(chain.to_dict())))
    np.testing.assert_array_equal(again.counts, chain.counts)


# --- generators -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gan", "lm"])
def test_generator_samples_valid_stays_and_reloads_without_pickle(
    kind: str, gan: ConditionalGan, lm: TokenLanguageModel, tmp_path: Path
) -> None:
    generator: Any = gan if kind == "gan" else lm
    death = np.array([1, 1, 0, 0, 0])
    icu = np.array([0, 1, 0, 1, 0])
    stays = generator.sample(5, seed=9, conditions=(death, icu))
    encoding = generator.encoding
    assert len(stays) == 5 and stays.grid == encoding.grid
    np.testing.assert_array_equal(stays.death, death)
    assert stays.statics["icu_type"].to_list() == [encoding.icu_types[i] for i in icu]
    for j, marginal in enumerate(encoding.variables):  # every value is a training quantile
        assert set(stays.values[:, :, j][stays.mask[:, :, j]]) <= set(marginal.quantiles)
    assert stays.statics.filter(pl.col("survival_days").is_null())["age"].len() <= 3

    generator.save(tmp_path)
    saved = ["generator.json", WEIGHTS_FILE, "training_curves.json", "training_curves.png"]
    for name in saved + (["positions.json"] if kind == "lm" else []):
        assert (tmp_path / name).exists(), name
    torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    curves = json.loads((tmp_path / "training_curves.json").read_text())
    assert curves and all("step" in record for record in curves)
    again = load_generator(tmp_path)
    assert again.kind == kind
    assert_same_stays(again.sample(5, seed=9, conditions=(death, icu)), stays)
    assert_same_stays(generator.sample(5, seed=9, conditions=(death, icu)), stays)

    # Weights of other shapes (an earlier version's layers) are refused with a clear error.
    weights = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    first = next(iter(weights))
    weights[first] = weights[first][..., :1]
    torch.save(weights, tmp_path / WEIGHTS_FILE)
    with pytest.raises(GeneratorError, match="train it again"):
        load_generator(tmp_path)


def test_outcome_guidance_samples_valid_stays_of_the_given_outcomes(
    lm: TokenLanguageModel,
) -> None:
    guided = lm.with_guidance(1.5)
    assert guided.network is lm.network and lm.config.guidance == 0.0
    with pytest.raises(GeneratorError, match="expected 0 or more"):
        lm.with_guidance(-1.0)
    death = np.array([1, 0, 1, 0, 0, 1])
    icu = np.array([0, 1, 2, 3, 0, 1])
    stays = guided.sample(6, seed=4, conditions=(death, icu))
    np.testing.assert_array_equal(stays.death, death)
    assert stays.statics["icu_type"].to_list() == [lm.encoding.icu_types[i] for i in icu]
    for j, marginal in enumerate(lm.encoding.variables):
        assert set(stays.values[:, :, j][stays.mask[:, :, j]]) <= set(marginal.quantiles)
    assert_same_stays(guided.sample(6, seed=4, conditions=(death, icu)), stays)
    plain = lm.sample(6, seed=4, conditions=(death, icu))
    assert not np.array_equal(plain.mask, stays.mask) or not np.allclose(
        plain.values[plain.mask], stays.values[stays.mask]
    )


@pytest.mark.parametrize("kind", ["gan", "lm"])
def test_same_seed_same_generator(kind: str, cohort: dict[str, Any]) -> None:
    def trained(seed: int) -> Any:
        generator = ConditionalGan(**TINY_GAN) if kind == "gan" else TokenLanguageModel(**TINY_LM)
        return generator.fit(cohort["train"], max_seconds=60, max_steps=2, seed=seed)

    a, b, c = trained(1), trained(1), trained(2)
    net = "generator" if kind == "gan" else "network"
    state_a, state_b = getattr(a, net).state_dict(), getattr(b, net).state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert_same_stays(a.sample(6, seed=3), b.sample(6, seed=3))
    state_c = getattr(c, net).state_dict()
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)


class _HalfOffGenerator:
    """Draws training stays of the asked outcome and ICU type; every second stay drawn
    has its heart rate 40 bpm too high (a generator that is right half of the time)."""

    def __init__(self, train: StaySet) -> None:
        self.train, self.encoding = train, Encoding.fit(train)

    def sample(self, n: int, *, seed: int, conditions: Any = None, **_: Any) -> StaySet:
        rng = np.random.default_rng(seed)
        death, icu = conditions
        icu_of_train = self.encoding.icu_index(self.train)
        rows = []
        for d, t in zip(death, icu, strict=True):
            same = np.flatnonzero((self.train.death == d) & (icu_of_train == t))
            rows.append(rng.choice(same))
        stays = self.train.take(np.array(rows))
        values = stays.values.copy()
        values[1::2, :, stays.grid.concepts.index("heart_rate")] += 40.0
        return StaySet(stays.grid, values, stays.statics, stays.death)


def test_selection_keeps_the_realistic_candidates_with_the_asked_conditions(
    cohort: dict[str, Any],
) -> None:
    train = cohort["train"]
    generator = _HalfOffGenerator(train)
    asked = generator.encoding.conditions(80, np.random.default_rng(3))
    plain = generator.sample(80, seed=3, conditions=asked)

    kept, summary = select(generator, train, 80, candidates=2, seed=3, progress=lambda _: None)

    heart_rate = train.grid.concepts.index("heart_rate")
    real_mean = np.nanmean(train.values[:, :, heart_rate])
    off = np.nanmean(kept.values[:, :, heart_rate], axis=1) > real_mean + 20
    assert len(kept) == 80 and off.mean() < 0.2  # half of the candidates were off
    # Outcomes and ICU types are those the generator would have been asked for.
    np.testing.assert_array_equal(kept.death, plain.death)
    assert kept.statics["icu_type"].equals(plain.statics["icu_type"])
    assert 0.5 <= summary["classifier_auroc_candidates_vs_training"] <= 1.0
    assert (
        summary["mean_probability_synthetic"]["kept"]
        < summary["mean_probability_synthetic"]["candidates"]
    )
    # One candidate a stay is the generator as it is.
    same, _ = select(generator, train, 80, candidates=1, seed=3, progress=lambda _: None)
    assert_same_stays(same, plain)


# --- output formats ------------------------------------------------------------------------


def test_canonical_and_physionet_files_read_back_as_the_same_stays(
    gan: ConditionalGan, tmp_path: Path
) -> None:
    stays = gan.sample(8, seed=4, death_share=0.5)
    write_canonical(stays, tmp_path / "canonical", "bedside-synth gan", seed=4)
    assert_same_stays(read_stay_set([tmp_path / "canonical"], stays.grid), stays)
    table = pl.read_parquet(tmp_path / "canonical" / "stays.parquet")
    died = table.filter(pl.col("in_hospital_death") == 1)
    assert died["death_time"].null_count() == 0

    set_dir, outcomes = write_physionet2012(stays, tmp_path / "physionet2012", seed=4)
    assert len(list(set_dir.glob("*.txt"))) == 8
    physionet2012.convert(set_dir, tmp_path / "converted", outcomes)
    back = read_stay_set([tmp_path / "converted"], stays.grid)
    np.testing.assert_array_equal(back.mask, stays.mask)
    np.testing.assert_allclose(back.values[back.mask], stays.values[stays.mask], rtol=1e-5)
    np.testing.assert_array_equal(back.death, stays.death)
    for column in ("sex", "icu_type"):
        expected = stays.statics[column]
        if column == "icu_type":  # the challenge knows four ICU types
            expected = expected.replace_strict(
                {t: t for t in physionet2012.ICU_TYPES.values()}, default=None
            )
        assert back.statics[column].to_list() == expected.to_list()
    np.testing.assert_allclose(
        back.statics["age"].to_numpy(), stays.statics["age"].to_numpy(), rtol=1e-5
    )
    los = stays.statics["hospital_los_days"].to_numpy()
    np.testing.assert_array_equal(
        back.statics["hospital_los_days"].fill_null(np.nan).to_numpy(),
        np.where(np.isfinite(los), np.maximum(np.round(los), 0), np.nan),
    )


# --- evaluation and the command line ----------------------------------------------------------


def test_evaluation_report_has_every_part_in_range(
    gan: ConditionalGan, cohort: dict[str, Any], tmp_path: Path
) -> None:
    synthetic = gan.sample(60, seed=2)
    folder = tmp_path / "synthetic"
    write_canonical(synthetic, folder, "bedside-synth gan", seed=2)
    card = data_card(gan, tmp_path / "model", synthetic, {"canonical": str(folder)}, 2, None)
    write_card(folder, card)
    from bedside.training.survival.data import read_folders

    sets = Sets.build(
        cohort["train_tables"], cohort["test_tables"], read_folders([folder]), PHYSIONET_2012
    )
    options = EvaluationOptions(
        folds=2,
        rebalance_shares=(0.4,),
        privacy_stays=30,
        gru_seconds=1,
        bootstrap=0,
        classifier_folds=3,
        max_minutes=1,
    )
    report = evaluate(
        sets,
        options,
        lambda k: gan.sample(k, seed=7, death_share=1.0),
        progress=lambda _: None,
        round_trip=lambda stays: gan.round_trip(stays, seed=7),
    )
    summary = report["fidelity"]["summary"]
    assert 0 <= summary["ks_mean"] <= summary["ks_max"] <= 1
    assert len(report["fidelity"]["variables"]) == len(sets.train_set.grid.concepts)
    for value in (
        report["discriminative"]["auroc"],
        report["discriminative"]["gradient_boosting"]["auroc"],
        report["discriminative"]["gru"]["auroc"],
        report["discriminative"]["encoding_floor"]["auroc"],
        report["utility"]["trtr"]["auroc"],
        report["utility"]["tstr"]["auroc"],
        report["privacy"]["membership_inference"]["auroc"],
    ):
        assert 0 <= value <= 1
    assert report["privacy"]["dcr"]["synthetic_to_train"]["median"] > 0
    (run,) = report["rebalancing"]["runs"]
    assert run["death_share"] >= 0.4 and run["synthetic_deaths_added"] > 0
    assert set(run["change_vs_real_only"]) >= {"auroc", "auprc", "ece", "brier"}
    assert set(report["goals"]) == {
        "discriminative_auroc",
        "tstr_vs_trtr_auroc_gap",
        "membership_inference_auroc",
    }
    text = json.dumps(public(report))  # JSON-able, without the plot arrays
    assert "_roc" not in text and "NaN" not in text
    write_html(tmp_path / "report.html", report, sets.test_set, sets.synthetic_set)
    page = (tmp_path / "report.html").read_text()
    assert "Encoding floor" in page
    assert page.count("data:image/png;base64,") >= 8 and "http" not in page.replace(
        "https://", ""
    ).replace("http://", "")
    card = add_evaluation(folder, report, "simulated cohorts")
    assert card is not None and card["privacy"]["evaluated"]
    assert "membership-inference AUROC" in (folder / "data_card.md").read_text()


def test_synth_commands_write_model_samples_and_card(
    cohort: dict[str, Any], lm: TokenLanguageModel, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write_canonical(cohort["train"], data, "simulator", seed=1)
    assert (
        main(
            [
                "synth",
                "train",
                "--data",
                str(data),
                "--generator",
                "gan",
                "--steps",
                "1",
                "--set",
                "hidden=24",
                "--out",
                str(tmp_path / "gan"),
            ]
        )
        == 0
    )
    assert (tmp_path / "gan" / "training_curves.png").exists()
    assert load_generator(tmp_path / "gan").config.hidden == 24  # type: ignore[attr-defined]
    lm.save(tmp_path / "lm")
    out = tmp_path / "samples"
    args = ["synth", "sample", "--model", str(tmp_path / "lm"), "--stays", "4", "--seed", "1"]
    assert main([*args, "--out", str(out)]) == 0
    assert (out / "events.parquet").exists() and (out / "stays.parquet").exists()
    assert len(list((out / "physionet2012" / "set-synthetic").glob("*.txt"))) == 4
    card = json.loads((out / "data_card.json").read_text())
    assert card["size"]["stays"] == 4 and card["generator"]["kind"] == "lm"
    assert card["source"]["stays"] == len(cohort["train"])
    assert card["sampling"]["outcome_guidance"] == 0.0

    # Outcome guidance is a sampling setting of the lm, kept in the data card.
    guided = tmp_path / "guided"
    assert main([*args, "--guidance", "1.5", "--out", str(guided)]) == 0
    card = json.loads((guided / "data_card.json").read_text())
    assert card["sampling"]["outcome_guidance"] == card["generator"]["config"]["guidance"] == 1.5
    assert "- outcome_guidance: 1.5" in (guided / "data_card.md").read_text()
    # synth evaluate draws its extra deaths as the stays were drawn.
    assert (sampled_guidance(guided), sampled_guidance(out), sampled_guidance(tmp_path)) == (
        1.5,
        0.0,
        0.0,
    )

    # Selection among candidates is recorded in the card; it needs the training stays.
    tiny = [f"--set={k}={v}" for k, v in TINY_LM.items()]
    lm_args = ["synth", "train", "--data", str(data), "--generator", "lm", "--steps", "1", *tiny]
    assert main([*lm_args, "--out", str(tmp_path / "lm")]) == 0
    chosen = tmp_path / "chosen"
    assert main([*args, "--candidates", "2", "--data", str(data), "--out", str(chosen)]) == 0
    card = json.loads((chosen / "data_card.json").read_text())
    assert card["size"]["stays"] == 4 and card["sampling"]["selection"]["candidates"] == 2
    assert sampled_candidates(chosen) == 2 and sampled_candidates(out) == 1
    assert "selection, candidates: 2" in (chosen / "data_card.md").read_text()
    assert main([*args, "--candidates", "2", "--out", str(tmp_path / "no")]) == 2
    assert (
        main([*args, "--candidates", "0", "--data", str(data), "--out", str(tmp_path / "no")]) == 2
    )
    other = tmp_path / "other"
    write_canonical(cohort["train"].take(np.arange(10)), other, "simulator", seed=1)
    assert main([*args, "--candidates", "2", "--data", str(other), "--out", str(other)]) == 2
    gan = ["synth", "sample", "--model", str(tmp_path / "gan"), "--guidance", "1"]
    assert main([*gan, "--out", str(tmp_path / "no")]) == 2
