"""IB controller: ascent above tau, descent below, projection, EMA, state round trip."""

import json
import math

import pytest

from grace.distill import IBController


def test_beta_rises_while_ema_above_tau_and_is_clipped():
    c = IBController(tau=1.0, eta=0.1, beta_init=0.5, beta_min=0.1, beta_max=1.0, ema_decay=0.9)
    betas = [c.update(3.0) for _ in range(20)]
    assert all(b2 >= b1 for b1, b2 in zip(betas, betas[1:], strict=False))
    assert betas[0] == pytest.approx(0.5 + 0.1 * (3.0 - 1.0))  # EMA starts at the first value
    assert betas[-1] == 1.0 and max(betas) <= 1.0


def test_beta_falls_below_tau_and_respects_floor():
    c = IBController(tau=3.0, eta=0.5, beta_init=0.9, beta_min=0.1, beta_max=1.0, ema_decay=0.0)
    assert c.update(2.0) == pytest.approx(0.4)
    assert c.update(2.0) == pytest.approx(0.1)  # clipped at beta_min
    assert c.update(0.0) == 0.1


def test_ema_recursion_matches_hand_values():
    c = IBController(tau=0.0, eta=1.0, beta_init=0.0, beta_min=-100, beta_max=100, ema_decay=0.5)
    c.update(4.0)  # ema 4, beta 4
    c.update(2.0)  # ema 3, beta 7
    c.update(0.0)  # ema 1.5, beta 8.5
    assert c.ema == pytest.approx(1.5) and c.beta == pytest.approx(8.5)


def test_non_finite_values_are_ignored():
    c = IBController()
    c.update(5.0)
    before = c.state_dict()
    assert c.update(math.nan) == before["beta"]
    assert c.update(math.inf) == before["beta"]
    assert c.ema == before["ema"] and c.skipped == 2


def test_state_round_trip_is_json_and_continues_identically():
    a = IBController(tau=3.0, eta=0.003)
    for v in (4.0, 3.5, 2.0):
        a.update(v)
    b = IBController(tau=3.0, eta=0.003)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert [a.update(x) for x in (5.0, 1.0)] == [b.update(x) for x in (5.0, 1.0)]


def test_defaults_are_table_six_and_bad_bounds_refused():
    c = IBController()
    assert (c.tau, c.eta, c.beta, c.beta_min, c.beta_max, c.ema_decay) == (3.0, 0.003, 0.5, 0.1, 1.0, 0.99)
    with pytest.raises(ValueError):
        IBController(beta_min=2.0, beta_max=1.0)
