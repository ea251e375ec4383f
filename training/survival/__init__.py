"""Mortality and survival models: TSFEL + scikit-learn baselines, LSTM, CNN, CNN-LSTM, the
LSTM-TSFEL hybrid, and a deep ensemble of two of these nets.

Every model predicts, from one window (48 hourly steps of the PhysioNet 2012 variables,
:data:`bedside.training.windows.PHYSIONET_2012`) and the patient's static covariates,

* the probability of in-hospital death (calibrated; an alert when it reaches the
  model's threshold), and
* a discrete-time survival curve: the hazard of death in each interval up to 30 days
  after the prediction time (:mod:`~bedside.training.survival.likelihood`), hence the
  risk at every horizon of :data:`bedside.training.cohorts.DEFAULT_HORIZONS_H`.

Where things are:

* :mod:`~bedside.training.survival.data`: stays, windows and targets from canonical folders;
* :mod:`~bedside.training.survival.inputs`: raw windows -> model inputs (plausibility,
  standardisation, mask, time since observation, imputation, static covariates);
* :mod:`~bedside.training.survival.features`: TSFEL features (vectorised);
* :mod:`~bedside.training.survival.tabular`: ``tsfel-lr`` and ``tsfel-gbm``;
* :mod:`~bedside.training.survival.nets`: the torch nets and the survival likelihood loss;
* :mod:`~bedside.training.survival.train`: the nets' training loop;
* :mod:`~bedside.training.survival.fit`: K-fold members, calibration, threshold;
* :mod:`~bedside.training.survival.search`: the optuna search;
* :mod:`~bedside.training.survival.model`: the exported model the engine loads;
* :mod:`~bedside.training.survival.importance`: permutation importance, integrated gradients;
* :mod:`~bedside.training.survival.cli`: ``bedside train survival``, ``evaluate``, ``predict``.

The engine's side, in full::

    model = SurvivalModel.load(model_dir)                       # no pickle involved
    raw = window(model.grid, offsets_min, concepts, values)     # bedside.training.windows
    scores = model.predict_window(raw, {"age": 71, "sex": "F", "icu_type": "medical"})
    scores["mortality"], scores["risks"][24.0], scores["survival"]
"""

#: Every architecture ``bedside train survival --arch`` knows (a plain tuple here, so the
#: command line lists them without importing torch).
ARCHS = ("tsfel-lr", "tsfel-gbm", "lstm", "cnn", "cnn-lstm", "lstm-tsfel", "deep-ensemble")
