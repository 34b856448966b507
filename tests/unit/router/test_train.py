"""The training command's defaults agree with what the control plane accepts."""

from services.control import policies
from services.router import train


def test_the_default_canary_share_is_one_the_control_plane_accepts() -> None:
    low, high = policies.CANARY_PERCENT_MIN, policies.CANARY_PERCENT_MAX
    assert (low, high) == (5, 10)
    assert low <= train.DEFAULT_CANARY_PERCENT <= high
