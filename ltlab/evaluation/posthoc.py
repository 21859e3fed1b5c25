"""Post-hoc corrections: pure numpy functions of saved logits, no retraining.

Temperature scaling (Guo et al. 2017), logit adjustment (Menon et al. 2021), known-prior
correction and EM prior estimation under label shift (Saerens et al. 2002).
"""
from __future__ import annotations

import time

import numpy as np

from . import metrics

# Floor for log(0) priors: finite, so softmax/NLL never see -inf - -inf = NaN, yet so
# low (log ~ -708) that a zero-prior class can no longer win the argmax. Using the same
# floor for q and pi keeps a class with q = pi = 0 unchanged.
PRIOR_FLOOR = np.finfo(np.float64).tiny

# fit_temperature searches log T in this range (T from 0.05 to 20).
LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))


def class_prior(counts) -> np.ndarray:
    """Normalised class frequencies n_y / sum n (float64)."""
    n = np.asarray(counts, dtype=np.float64).ravel()
    if (n < 0).any() or not n.sum() > 0:
        raise ValueError("class counts must be >= 0 with a positive total")
    return n / n.sum()


def _log_prior(p) -> np.ndarray:
    return np.log(np.maximum(np.asarray(p, dtype=np.float64), PRIOR_FLOOR))


# --------------------------------------------------------------- temperature scaling

def apply_temperature(logits, T: float) -> np.ndarray:
    if not T > 0:
        raise ValueError(f"temperature must be > 0, got {T}")
    return np.asarray(logits, dtype=np.float64) / T


def _nll_beta(f: np.ndarray, fy: np.ndarray, beta: float) -> float:
    z = beta * f
    m = z.max(axis=1)
    return float(np.mean(m + np.log(np.exp(z - m[:, None]).sum(axis=1)) - beta * fy))


def fit_temperature(logits, labels) -> float:
    """Scalar T > 0 minimising the NLL of softmax(logits / T) (Guo et al. 2017).

    Deterministic, derivative-free search followed by Newton polishing:

    1. NLL on a 41-point grid of log T over [log 0.05, log 20];
    2. golden-section search on log T inside the two grid cells around the best point;
    3. up to 5 safeguarded Newton steps on beta = 1/T, accepted only while they stay in
       the bracket and lower the NLL.

    As a function of beta the NLL, mean(logsumexp(beta f) - beta f_y), is convex (its
    second derivative is the mean softmax variance of the logits), so it is unimodal in
    log T and the bracket from step 1 contains the minimum; Newton is well-posed there.
    A minimum at a bound returns that bound (the grid ends are included).
    """
    f = np.asarray(logits, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"expected (N, C) logits, got shape {f.shape}")
    y = np.asarray(labels).astype(np.int64).ravel()
    if y.shape[0] != f.shape[0] or y.size == 0:
        raise ValueError("labels must be non-empty with one entry per logit row")
    fy = f[np.arange(f.shape[0]), y]

    def nll_u(u):
        return _nll_beta(f, fy, float(np.exp(-u)))

    lo_b, hi_b = LOG_T_BOUNDS
    grid = np.linspace(lo_b, hi_b, 41)
    vals = np.array([nll_u(u) for u in grid])
    i = int(np.argmin(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    best_u, best = grid[i], vals[i]

    g = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll_u(c), nll_u(d)
    while b - a > 1e-7:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll_u(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll_u(d)
    for u, v in ((c, fc), (d, fd)):
        if v < best:
            best_u, best = u, v

    beta = float(np.exp(-best_u))
    beta_lo, beta_hi = np.exp(-hi), np.exp(-lo)
    for _ in range(5):
        z = beta * f
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        mean_f = np.einsum("ij,ij->i", p, f)
        grad = float(np.mean(mean_f - fy))
        hess = float(np.mean(np.einsum("ij,ij->i", p, f * f) - mean_f ** 2))
        if not hess > 0:
            break
        nb = beta - grad / hess
        if not beta_lo <= nb <= beta_hi:
            break
        v = _nll_beta(f, fy, nb)
        if not v < best:
            break
        beta, best = nb, v
    return float(1.0 / beta)


# ------------------------------------------------------------------ prior corrections

def logit_adjust(logits, train_counts, tau: float = 1.0) -> np.ndarray:
    """Post-hoc logit adjustment f_y - tau * log pi_y (Menon et al. 2021, eq. 9).

    tau = 1 is Fisher-consistent for the balanced error; tau = 0 returns the logits.
    A class with zero training images gets log pi = log PRIOR_FLOOR (see there).
    """
    f = np.asarray(logits, dtype=np.float64)
    if tau == 0:
        return f.copy()
    return f - tau * _log_prior(class_prior(train_counts))


def prior_correct(logits, train_counts, target_prior) -> np.ndarray:
    """Correct for a known test label prior q: f_y + log q_y - log pi_y.

    Bayes' rule under label shift (p_t(x|y) = p_s(x|y); Saerens et al. 2002): the
    posterior is reweighted by q_y / pi_y. ``target_prior`` is normalised here; zero
    entries are floored at PRIOR_FLOOR so such classes are effectively never predicted
    but the logits stay finite. q = pi changes nothing.
    """
    f = np.asarray(logits, dtype=np.float64)
    q = np.asarray(target_prior, dtype=np.float64).ravel()
    if (q < 0).any() or not q.sum() > 0:
        raise ValueError("target_prior must be >= 0 with a positive total")
    # bias vector first: one (N, C) pass instead of two
    return f + (_log_prior(q / q.sum()) - _log_prior(class_prior(train_counts)))


def em_prior(probs, train_prior, max_iter: int = 100, tol: float = 1e-6):
    """Estimate an unknown test prior by EM (Saerens, Latinne & Decaestecker 2002).

    q^0 = train prior. E-step: p^t(y|x) ∝ p(y|x) q^t_y / pi_y; M-step: q^{t+1} = mean
    over samples of p^t(.|x). Stops when max_y |q^{t+1} - q^t| <= tol or after
    ``max_iter`` iterations. Assumes calibrated posteriors (e.g. after temperature
    scaling).

    Returns (q_hat, adjusted_probs, n_iter), where adjusted_probs are the posteriors
    reweighted with the returned q_hat and n_iter the number of EM updates performed.
    """
    p = np.asarray(probs, dtype=np.float64)
    pi = np.asarray(train_prior, dtype=np.float64).ravel()
    pi = pi / pi.sum()
    inv_pi = 1.0 / np.maximum(pi, PRIOR_FLOOR)

    def reweight(q):
        a = p * (q * inv_pi)
        s = a.sum(axis=1, keepdims=True)
        return a / np.where(s > 0, s, 1.0)

    q = pi.copy()
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (the count is read after the loop)
        q_new = reweight(q).mean(axis=0)
        delta = float(np.max(np.abs(q_new - q)))
        q = q_new
        if delta <= tol:
            break
    return q, reweight(q), n_iter


# ------------------------------------------------------------------------ benchmark

def benchmark_posthoc(n: int = 10000, c: int = 100, repeats: int = 5) -> float:
    """Milliseconds (median of ``repeats``) of one post-hoc re-evaluation on random
    (n, c) float32 logits: prior correction to a uniform target, top-1, 15-bin ECE and
    the AUROC of MSP. Used by ``ltlab bench``."""
    rng = np.random.default_rng(0)
    counts = np.maximum((500 * 0.01 ** (np.arange(c) / max(c - 1, 1))).astype(np.int64), 1)
    labels = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[np.arange(n), labels] += 2.0
    uniform = np.full(c, 1.0 / c)

    def once():
        adj = prior_correct(logits, counts, uniform)
        probs = metrics.softmax(adj)
        pred = probs.argmax(axis=1)
        conf = probs[np.arange(n), pred]
        correct = pred == labels
        metrics.top1(pred, labels)
        metrics._calibration_errors(conf, correct, 15)
        metrics.auroc(conf, correct)

    once()  # warm-up: first-touch allocations are not what we want to measure
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)
