"""The one linear probe of the workbench: multinomial logistic regression (scikit-learn) on frozen features, as in
CLIP's linear-probe evaluation. Callers keep their own regularisation (``C``), iteration budget and, where the
features are unnormalised, standardisation."""
from __future__ import annotations

import numpy as np


def fit_probe(features: np.ndarray, labels, C: float = 1.0, max_iter: int = 3000, standardize: bool = False,
              seed: int = 0):
    """A fitted probe (``.score(features, labels)`` gives its top-1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    if standardize:
        clf = make_pipeline(StandardScaler(), clf)
    return clf.fit(np.asarray(features), np.asarray(labels))


def probe_top1(f_train, y_train, f_test, y_test, **kw) -> float:
    """Top-1 on (f_test, y_test) of a probe fitted on (f_train, y_train); ``kw`` as ``fit_probe``."""
    return float(fit_probe(f_train, y_train, **kw).score(np.asarray(f_test), np.asarray(y_test)))
