from pathlib import Path

import numpy as np
import pytest

from services.router import model
from services.router.features import FEATURE_NAMES

N_FEATURES = len(FEATURE_NAMES)


def data(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)) * 0.3
    logits = 2.5 * x[:, 0] - 2.0 * x[:, 1] + 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(int)
    return x, y


@pytest.mark.parametrize("method", model.METHODS)
def test_numpy_path_matches_sklearn_predict_proba(method: str) -> None:
    x, y = data(1)
    calibrated, (weights, bias, calibration) = model.fit_tier(x, y, method, seed=0)
    expected = calibrated.predict_proba(x[:50])[:, 1]
    tier = model.assemble("t", [(weights, bias, calibration)] * 3, x, {})
    got = [tier.predict(row)[0] for row in x[:50]]
    assert np.allclose(got, expected, atol=1e-9)


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_calibrated_probabilities_match_observed_rates(method: str) -> None:
    x, y = data(2, n=3000)
    _, part = model.fit_tier(x[:2000], y[:2000], method, seed=0)
    tier = model.assemble("t", [part] * 3, x[:2000], {})
    p = np.asarray([tier.predict(row)[0] for row in x[2000:]])
    held = y[2000:]
    bins = np.minimum((p * 5).astype(int), 4)
    for b in range(5):
        members = bins == b
        if members.sum() >= 50:
            assert abs(p[members].mean() - held[members].mean()) < 0.1


def test_a_tier_with_too_few_failures_gets_a_constant_base_rate() -> None:
    x, _ = data(3)
    y = np.ones(len(x), dtype=int)
    y[:3] = 0
    calibrated, (weights, _, calibration) = model.fit_tier(x, y, "sigmoid", seed=0)
    assert calibrated is None
    assert not weights.any()
    assert calibration.method == "constant"
    assert calibration(123.0) == pytest.approx((len(x) - 3 + 1) / (len(x) + 2))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    x, y = data(4)
    fitted, parts = zip(*(model.fit_tier(x, y, "isotonic", seed=0) for _ in range(3)), strict=True)
    tier = model.assemble("v-1", list(parts), x, {"metrics": {"auc": 0.9}})
    model.save(tier, list(fitted), tmp_path)
    loaded = model.load(tmp_path.as_uri())
    assert loaded.version == "v-1"
    assert loaded.metadata["metrics"] == {"auc": 0.9}
    assert np.allclose(loaded.predict(x[0]), tier.predict(x[0]))
    # Inputs are clipped to the training range: extreme values cannot extrapolate.
    assert loaded.predict(x[0] * 1e6) == loaded.predict(np.clip(x[0] * 1e6, tier.low, tier.high))


def test_loading_a_broken_artifact_says_why(tmp_path: Path) -> None:
    with pytest.raises(model.ModelError, match="cannot read"):
        model.load(str(tmp_path / "missing"))
    with pytest.raises(model.ModelError, match="scheme"):
        model.load("s3://bucket/model")
    x, y = data(5)
    _, part = model.fit_tier(x, y, "sigmoid", seed=0)
    tier = model.assemble("v-2", [part] * 3, x, {})
    model.save(tier, [], tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(model.ModelError):
        model.load(str(tmp_path))


def test_drivers_name_the_features_that_lower_a_score() -> None:
    weights = np.zeros((3, N_FEATURES))
    weights[0, FEATURE_NAMES.index("cue_reasoning")] = -3.0
    weights[0, FEATURE_NAMES.index("log_tokens")] = -1.0
    weights[0, FEATURE_NAMES.index("cue_identifier")] = 2.0
    calibration = model.Calibration("sigmoid", a=-1.0)
    ones = np.ones(N_FEATURES)
    tier = model.TierModel("v", weights, np.zeros(3), (calibration,) * 3, -ones, ones, {})
    row = np.zeros(N_FEATURES)
    for name in ("cue_reasoning", "log_tokens", "cue_identifier"):
        row[FEATURE_NAMES.index(name)] = 1.0
    assert tier.drivers(row, 0, lowering=True) == ["cue_reasoning", "log_tokens"]
    assert tier.drivers(row, 0, lowering=False) == ["cue_identifier"]
