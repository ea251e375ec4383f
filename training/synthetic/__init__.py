"""Synthetic ICU stays: two generators, the formats they are written in, their evaluation.

Both generators learn windows (48 hourly steps of the PhysioNet 2012 variables, with
their missingness), static covariates and outcome times from canonical data, and sample
stays conditioned on in-hospital death and ICU type, for rebalancing a training set
and for sharing data without sharing patients:

* ``gan``: a conditional time-series GAN (RCGAN-style GRU generator, convolutional
  critic) trained as a WGAN-GP;
* ``lm``: an autoregressive transformer language model over tokenised stays (values
  binned per variable, hour and missingness as tokens), trained from scratch.

Where things are:

* :mod:`~bedside.training.synthetic.data`: :class:`StaySet`, reading canonical folders,
  writing the canonical and PhysioNet 2012 formats;
* :mod:`~bedside.training.synthetic.encoding`: each variable's training quantiles
  (values <-> ranks), categories, how often each condition occurs;
* :mod:`~bedside.training.synthetic.generator`: the API both follow, saving and loading;
* :mod:`~bedside.training.synthetic.gan`: ``core`` (networks), ``model`` (fit / sample);
* :mod:`~bedside.training.synthetic.lm`: ``tokens`` (vocabulary, grammar, state),
  ``core`` (the transformer), ``model`` (fit / sample);
* :mod:`~bedside.training.synthetic.evaluate`: fidelity, discriminative score, utility
  (TSTR vs TRTR), privacy (distance to closest record, membership inference),
  rebalancing;
* :mod:`~bedside.training.synthetic.report`: the HTML report and the data card;
* :mod:`~bedside.training.synthetic.cli`: ``bedside synth train | sample | evaluate``.

In code::

    stays = read_stay_set([Path("data/physionet-a")], PHYSIONET_2012)
    generator = TokenLanguageModel().fit(stays, max_seconds=900, max_steps=10**6, seed=1)
    synthetic = generator.sample(4000, seed=2, death_share=0.5)
    write_canonical(synthetic, Path("data/synthetic"), "bedside-synth lm", seed=2)
"""
