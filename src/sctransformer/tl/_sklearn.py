"""scikit-learn helpers shared by the annotator and the benchmark."""

from __future__ import annotations

import numpy as np

from .. import logging as logg


def cv_splitter(y: np.ndarray, folds: int, seed: int):
    """Stratified folds when every class has enough cells, else plain shuffled folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    _, counts = np.unique(y, return_counts=True)
    folds = int(max(2, min(folds, len(y) // 2)))
    if counts.min() >= folds:
        return StratifiedKFold(folds, shuffle=True, random_state=seed)
    return KFold(folds, shuffle=True, random_state=seed)


def fit_quietly(estimator, x, y):
    """Fit, turning sklearn's convergence warnings into one log line (they are not errors)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        estimator.fit(x, y)
    n = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning) and "least populated" not in str(
            w.message
        ):
            warnings.warn(w.message, w.category, stacklevel=2)
    if n:
        logg.hint(f"{type(estimator).__name__}: {n} fit(s) stopped at max_iter")
    return estimator
