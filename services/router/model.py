"""The calibrated success classifier: P(success | tier, features), one model per tier.

Training uses scikit-learn: a logistic regression per tier wrapped in
``CalibratedClassifierCV(ensemble=False)`` (isotonic, sigmoid/Platt or temperature), so there
is exactly one linear model and one calibration map per tier. Serving does not call
scikit-learn: a single-row ``predict_proba`` on the calibrated wrapper costs ~5 ms, while the
same numbers from the plain coefficients and the precomputed calibration map cost a few µs.

An artifact is a directory with ``model.joblib`` (the numpy arrays the server uses, so serving
never unpickles scikit-learn objects), ``calibrated.joblib`` (the fitted scikit-learn
wrappers, for audits and batch predictions) and ``metadata.json`` (version, feature names,
metrics).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import joblib
import numpy as np
import numpy.typing as npt
import sklearn

from services.router.features import DENSE_NAMES, FEATURE_NAMES

Array = npt.NDArray[np.float64]
METHODS = ("isotonic", "sigmoid", "temperature")
MODEL_FILE = "model.joblib"
FITTED_FILE = "calibrated.joblib"
METADATA_FILE = "metadata.json"


class ModelError(Exception):
    """The artifact cannot be loaded or used."""


@dataclass(frozen=True)
class Calibration:
    """A monotone map from a linear score to a calibrated probability."""

    method: str
    xs: Array = field(default_factory=lambda: np.zeros(0))
    ys: Array = field(default_factory=lambda: np.zeros(0))
    a: float = 0.0
    b: float = 0.0

    def __call__(self, score: float) -> float:
        """The calibrated probability of one score."""
        if self.method == "isotonic":
            # IsotonicRegression(out_of_bounds="clip") is exactly this interpolation.
            return float(np.interp(score, self.xs, self.ys))
        if self.method == "sigmoid":
            return _expit(-(self.a * score + self.b))
        if self.method == "temperature":
            # Binary temperature scaling: softmax(beta · (-s, s)) = expit(2 · beta · s).
            return _expit(2.0 * self.a * score)
        if self.method == "constant":
            return self.a
        raise ModelError(f"unknown calibration method {self.method!r}")


def _expit(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


@dataclass(frozen=True)
class TierModel:
    """Per-tier coefficients and calibration maps, evaluated with numpy only."""

    version: str
    weights: Array  # (3, n_features): SLM_A, SLM_B, LLM
    bias: Array  # (3,)
    calibrations: tuple[Calibration, ...]
    low: Array  # per-feature training minimum
    high: Array  # per-feature training maximum
    metadata: Mapping[str, Any]

    def predict(self, row: Array) -> tuple[float, float, float]:
        """Calibrated P(success) of SLM_A, SLM_B and LLM for one feature row."""
        # Clip to the training range so an unseen magnitude cannot extrapolate the score.
        scores = self.weights @ np.clip(row, self.low, self.high) + self.bias
        a, b, c = (float(cal(float(s))) for cal, s in zip(self.calibrations, scores, strict=True))
        return a, b, c

    def drivers(self, row: Array, tier_index: int, *, lowering: bool, k: int = 3) -> list[str]:
        """Names of the features that most lower (or raise) one tier's score for ``row``."""
        # Hashed word features mean nothing one by one: they count as one, "wording".
        dense = len(DENSE_NAMES)
        contributions = self.weights[tier_index] * np.clip(row, self.low, self.high)
        named = [*zip(DENSE_NAMES, contributions[:dense].tolist(), strict=True)]
        named.append(("wording", float(contributions[dense:].sum())))
        sign = 1.0 if lowering else -1.0
        ranked = sorted(named, key=lambda item: sign * item[1])[:k]
        return [name for name, value in ranked if sign * value < 0]


def calibration_of(calibrated: Any) -> Calibration:
    """The calibration map of a fitted ``CalibratedClassifierCV(ensemble=False)``."""
    calibrator = calibrated.calibrated_classifiers_[0].calibrators[0]
    method = calibrated.method
    if method == "isotonic":
        return Calibration(
            "isotonic", xs=np.asarray(calibrator.X_thresholds_), ys=calibrator.y_thresholds_
        )
    if method == "sigmoid":
        return Calibration("sigmoid", a=float(calibrator.a_), b=float(calibrator.b_))
    if method == "temperature":
        return Calibration("temperature", a=float(calibrator.beta_))
    raise ModelError(f"unknown calibration method {method!r}")


def linear_of(calibrated: Any) -> tuple[Array, float]:
    """The plain logistic regression's coefficients and intercept."""
    estimator = calibrated.calibrated_classifiers_[0].estimator
    return np.asarray(estimator.coef_[0], dtype=np.float64), float(estimator.intercept_[0])


def fit_tier(x: Array, y: npt.NDArray[np.int_], method: str, seed: int) -> tuple[Any, Any]:
    """Fit one tier: (calibrated wrapper or None, (weights, bias, calibration))."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    positives = int(y.sum())
    minority = min(positives, len(y) - positives)
    if minority < 10:
        # Too few examples of one outcome to cross-validate a calibration: a constant at the
        # smoothed base rate is the honest model until outcomes bring the missing class.
        rate = (positives + 1) / (len(y) + 2)
        constant = (np.zeros(x.shape[1]), 0.0, Calibration("constant", a=rate))
        return None, constant
    base = LogisticRegression(C=1.0, max_iter=5000, random_state=seed)
    calibrated = CalibratedClassifierCV(base, method=method, cv=5, ensemble=False)
    calibrated.fit(x, y)
    weights, bias = linear_of(calibrated)
    return calibrated, (weights, bias, calibration_of(calibrated))


def assemble(
    version: str, parts: Sequence[tuple[Array, float, Calibration]], x: Array, meta: dict[str, Any]
) -> TierModel:
    """A :class:`TierModel` from per-tier parts and the training matrix's range."""
    return TierModel(
        version=version,
        weights=np.vstack([weights for weights, _, _ in parts]),
        bias=np.asarray([bias for _, bias, _ in parts]),
        calibrations=tuple(cal for _, _, cal in parts),
        low=x.min(axis=0),
        high=x.max(axis=0),
        metadata=meta,
    )


def save(model: TierModel, fitted: Sequence[Any], out: Path) -> None:
    """Write the artifact (see the module docstring) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(list(fitted), out / FITTED_FILE, compress=3)
    payload = {
        "weights": model.weights,
        "bias": model.bias,
        "calibrations": [vars(cal) for cal in model.calibrations],
        "low": model.low,
        "high": model.high,
        "feature_names": list(FEATURE_NAMES),
    }
    joblib.dump(payload, out / MODEL_FILE, compress=3)
    meta = {**model.metadata, "version": model.version, "feature_names": list(FEATURE_NAMES)}
    meta["sklearn_version"] = sklearn.__version__
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def artifact_path(uri: str) -> Path:
    """The local directory of an artifact URI (``file:///…`` or a plain path)."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return Path(parts.path if parts.scheme else uri)
    raise ModelError(f"unsupported artifact URI scheme {parts.scheme!r}")


def load(uri: str) -> TierModel:
    """Load an artifact; :class:`ModelError` says why when it cannot be used."""
    path = artifact_path(uri)
    try:
        meta = json.loads((path / METADATA_FILE).read_text())
        payload = joblib.load(path / MODEL_FILE)
    except (OSError, ValueError, EOFError, ImportError, AttributeError) as error:
        raise ModelError(f"cannot read artifact {uri}: {error}") from error
    if tuple(payload.get("feature_names", ())) != FEATURE_NAMES:
        raise ModelError(f"artifact {uri} was trained on other features than this router's")
    calibrations = tuple(
        Calibration(c["method"], np.asarray(c["xs"]), np.asarray(c["ys"]), c["a"], c["b"])
        for c in payload["calibrations"]
    )
    weights = np.asarray(payload["weights"], dtype=np.float64)
    if weights.shape != (3, len(FEATURE_NAMES)) or len(calibrations) != 3:
        raise ModelError(f"artifact {uri} does not hold three tier models")
    return TierModel(
        version=str(meta["version"]),
        weights=weights,
        bias=np.asarray(payload["bias"], dtype=np.float64),
        calibrations=calibrations,
        low=np.asarray(payload["low"], dtype=np.float64),
        high=np.asarray(payload["high"], dtype=np.float64),
        metadata=meta,
    )
