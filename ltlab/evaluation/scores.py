"""Confidence scores for failure prediction, all oriented higher = more likely correct.

Every score is ``f(logits, T=1.0) -> (N,)`` float64 on (N, C) logits. Useful identities
(energy_calibration.md §1.3, with E(x) = -logsumexp f, E(x, y) = -f_y and
BE(x, y) = -log sum_{j != y} e^{f_j}):

* E(x, ŷ) - E(x) = -log MSP and BE(x, ŷ) - E(x) = -log(1 - MSP): scores built only from
  such differences rank exactly like MSP;
* absolute levels (-E(x), max logit, BE alone) keep the logit magnitude MSP discards and
  can rank differently.
"""
from __future__ import annotations

import numpy as np

from .metrics import _exp_parts, log_softmax


def _scaled(logits, T: float) -> np.ndarray:
    if not T > 0:
        raise ValueError(f"temperature must be > 0, got {T}")
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"expected (N, C) logits, got shape {z.shape}")
    return z if T == 1 else z / T  # x / 1.0 == x exactly: skip an (N, C) copy


def _max_lse(z: np.ndarray):
    m, _, s = _exp_parts(z)
    return m, m + np.log(s)


def msp(logits, T: float = 1.0) -> np.ndarray:
    """Maximum softmax probability of logits / T (Hendrycks & Gimpel 2017).

    Computed as exp(max z - logsumexp z), which never normalises an (N, C) matrix.
    """
    m, lse = _max_lse(_scaled(logits, T))
    return np.exp(m - lse)


def neg_energy(logits, T: float = 1.0) -> np.ndarray:
    """-E(x; T) = T * logsumexp(f / T), the free-energy score of Liu et al. 2020.

    Energy is low in-distribution, so its negation is the "higher = correct" confidence.
    """
    return T * _max_lse(_scaled(logits, T))[1]


def residual_energy(logits, T: float = 1.0) -> np.ndarray:
    """Residual ("boundary") energy at the predicted class, as used by ReDebias.

    Returns BE(x, ŷ) = -T * log sum_{j != ŷ} exp(f_j / T), ŷ = argmax f (the paper's
    E_res(x, y) = -log sum_{j != y} e^{f_j} with the label replaced by the prediction so
    no label is needed; T = 1 is the paper's definition).

    Orientation: a confident prediction puts little mass on the other classes, so
    sum_{j != ŷ} e^{f_j} is small and BE is large; the paper likewise reads lower E_res
    as larger error. BE itself is therefore already "higher = more likely correct" and is
    returned without a sign flip.

    This is *not* a function of MSP: BE = E(x) - log(1 - MSP) adds the free energy
    E(x) = -logsumexp f to the MSP term -log(1 - MSP) (which alone would rank exactly
    like MSP). Adding a constant to all logits of a sample lowers its BE by that
    constant, so at equal MSP larger logits give a *lower* BE: the opposite of the
    energy score -E(x).

    Numerics: the predicted column is masked to -inf and the rest reduced with a
    max-shifted logsumexp, so large logits do not overflow and, for C = 2, the result
    is exactly -f_other. With C = 1 there is no other class and +inf is returned.
    """
    z = _scaled(logits, T)
    n, c = z.shape
    if c == 1:
        return np.full(n, np.inf)
    rest = z.copy()  # z may be the caller's array
    rest[np.arange(n), z.argmax(axis=1)] = -np.inf
    m2 = rest.max(axis=1)  # runner-up logit: the shift that keeps exp in range
    with np.errstate(invalid="ignore"):
        rest -= m2[:, None]
    np.exp(rest, out=rest)
    be = -T * (m2 + np.log(rest.sum(axis=1)))
    # every other logit -inf: no mass outside ŷ, the prediction is certain
    return np.where(np.isneginf(m2), np.inf, be)


def max_logit(logits, T: float = 1.0) -> np.ndarray:
    """Maximum logit (Hendrycks et al. 2022, MaxLogit).

    Returned in logit units; a positive T would only rescale it without changing the
    ranking, so T is accepted for the common signature and otherwise ignored.
    """
    _scaled(logits, T)  # validates shape and T
    return np.asarray(logits, dtype=np.float64).max(axis=1)


def neg_entropy(logits, T: float = 1.0) -> np.ndarray:
    """Negative Shannon entropy sum_k p_k log p_k of softmax(logits / T).

    Uses log_softmax so that p_k = 0 (underflow) contributes 0 instead of 0 * -inf.
    """
    ls = log_softmax(_scaled(logits, T))
    return np.sum(np.exp(ls) * ls, axis=1)


SCORES = {
    "msp": msp,
    "energy": neg_energy,
    "residual_energy": residual_energy,
    "max_logit": max_logit,
    "neg_entropy": neg_entropy,
}
