"""A stand-in for neuralbench 0.4's test-prediction path, with the same names.

neuralbench needs Python >= 3.12 and a heavy stack; the adapter only touches
``neuralbench.main.WindowPredictionCollector`` and ``neuralbench.main.Experiment
.test_predictions``, so this package reproduces exactly those: a ``callbacks`` module with
the default collector, and a ``main`` module whose ``Experiment`` adds it in
``setup_trainer(is_test=True)`` and reads its exca ``CacheDict`` in ``test_predictions()``.
"""
