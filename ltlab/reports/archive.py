"""A results archive: compact, complete copies of finished runs, checked against their summaries.

Layout: ``<root>/<benchmark>/<method>/seed<k>/`` holding

- ``config.yaml``, ``metrics.csv``, ``summary.json``, ``provenance.json``: copied verbatim;
- ``predictions/{test,val}.npz`` (compressed): ``logits`` as float16, ``labels``,
  ``train_counts``, ``source_index`` and every method array post-hoc tools read (classifier
  weights and bias, TDE arrays, expert taus, NCM centroids...) at their own dtype, except
  floating arrays over 1 MiB, stored as float16. ``features`` are kept, as float16, only when
  all splits' features together fit in ``features_kib`` (default 256 KiB: the demo's are kept,
  CIFAR's 10,200 x 64 are not); no checkpoint, ever;
- ``archive.json``: where the copy came from, the stage-one link (archive-relative), what was
  kept, and the recomputation check below.

The check: every number of summary.json is recomputed from the archived (float16)
predictions with :func:`ltlab.evaluation.run_dir.compute_summary` and compared key by key
(:func:`check`). Tolerances (why): rounding to float16 is monotone, so an argmax can change
only on rows whose float16 maximum is tied; accuracies may move by the share of such rows
(per class, then averaged as the metric averages), nothing more. The continuous keys may
move by ``TOLERANCE`` (absolute; temperature relative), a bound with a wide margin over what
float16 rounding (relative error <= 2^-11 of each logit) did to the runs we measured
(see tests/test_archive.py). Before that, ``ltlab archive`` recomputes the summary from the
source's own float32 predictions, which must give every number to 1e-9: a wrong summary fails
there, whatever float16 would allow. The binned keys (ECE, MCE) have one more, exact, term: a
confidence that float16 moves across a bin edge changes an ECE by up to 2/n and a bin's MCE gap
by up to 2/(its size); ``ltlab archive`` counts those moves against the source's float32
logits (:func:`bin_moves`) and keeps the extra tolerance in archive.json, where
:func:`verify` reads it. Anything else fails loudly: ArchiveError, exit 2.
"""
from __future__ import annotations

import datetime as dt
import shutil
import sys
from pathlib import Path

import numpy as np

from ltlab.config import ConfigError
from ltlab.evaluation import metrics as M
from ltlab.evaluation.run_dir import RunNotFinished, check_complete, compute_summary, is_finished, read_json, read_yaml
from ltlab.io import atomic_write_json

FILE = "archive.json"
COPIED = ("config.yaml", "metrics.csv", "summary.json", "provenance.json")
# a post-hoc run (tau_norm, ncm, la_posthoc...: summary epochs 0) trains no epoch, so it has no metrics.csv
SPLITS = ("test", "val")
BIG_ARRAY = 1 << 20           # bytes: method arrays above this are stored as float16
FEATURES_KIB = 256
ACCURACY_KEYS = ("top1", "balanced_acc", "many", "medium", "few")
# absolute tolerances of the continuous summary keys (temperature: relative)
TOLERANCE = {"ece": 2e-3, "mce": 2e-2, "nll": 2e-3, "brier": 1e-3, "ece_many": 2e-3, "ece_medium": 2e-3,
             "ece_few": 2e-3, "auroc_msp": 2e-3, "auroc_energy": 2e-3, "auroc_residual_energy": 2e-3,
             "aurc_msp": 1e-3, "eaurc_msp": 1e-3, "fpr95_msp": 5e-3, "auroc_msp_many": 2e-3,
             "auroc_msp_medium": 2e-3, "auroc_msp_few": 2e-3, "temperature": 2e-3, "ece_ts": 2e-3}
EXACT = ("num_classes", "train_size", "epochs")


class ArchiveError(ConfigError):
    """A run that cannot be archived, or an archive whose numbers do not recompute."""


# ------------------------------------------------------------------------- naming

def benchmark_name(config: dict) -> str:
    """cifar10_lt_if100, cifar100_lt_if50, demo_if100, imagenet_lt...; folder/list name none."""
    ds = config.get("dataset")
    if ds in ("cifar10_lt", "cifar100_lt", "demo"):
        imb = float(config.get("imb_factor", 100.0))
        return f"{ds}_if{imb:g}" + ("" if config.get("imb_profile", "exp") == "exp" else f"_{config['imb_profile']}")
    if ds in ("imagenet_lt", "places_lt", "inat18"):
        return ds
    raise ArchiveError(f"dataset '{ds}' names no benchmark: pass --benchmark NAME (e.g. cifar10_lt_if100)")


def destination(root, config: dict, benchmark: str | None = None, method: str | None = None) -> Path:
    return Path(root) / (benchmark or benchmark_name(config)) / (method or config["method"]) / f"seed{config['seed']}"


# ------------------------------------------------------------------------- predictions

def _compact(arrays: dict, keep_features: bool, logits_dtype=np.float16) -> dict:
    out = {}
    for k, a in arrays.items():
        a = np.asarray(a)
        if k == "features":
            if keep_features:
                out[k] = a.astype(np.float16)
        elif k == "logits":
            if not np.isfinite(a).all() or np.abs(a).max() > np.finfo(logits_dtype).max:
                raise ArchiveError(f"logits are not finite or exceed the {np.dtype(logits_dtype).name} range: "
                                   "they cannot be archived")
            out[k] = a.astype(logits_dtype)
        elif a.dtype.kind == "f" and a.nbytes > BIG_ARRAY:
            out[k] = a.astype(np.float16)
        else:
            out[k] = a
    return out


def _features_bytes(pred_dir: Path) -> int:
    n = 0
    for split in SPLITS:
        f = pred_dir / f"{split}.npz"
        if f.exists():
            with np.load(f) as z:
                if "features" in z.files:
                    n += z["features"].size * 2
    return n


def _write_predictions(src: Path, dst: Path, features_kib: int, logits_dtype=np.float16) -> dict:
    fbytes = _features_bytes(src)
    keep = 0 < fbytes <= features_kib * 1024
    dst.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        f = src / f"{split}.npz"
        if f.exists():
            with np.load(f) as z:
                np.savez_compressed(dst / f"{split}.npz", **_compact({k: z[k] for k in z.files}, keep, logits_dtype))
    return {"features": "kept (float16)" if keep else ("none saved" if fbytes == 0 else "dropped"),
            "features_float16_bytes": fbytes, "features_kib_limit": features_kib}


# ------------------------------------------------------------------------- the check

def _tie_bound(logits16, labels, counts, key: str) -> float:
    """Largest change of an accuracy key that float16 ties at the row maximum can cause."""
    f = np.asarray(logits16)
    tied = (f == f.max(axis=1, keepdims=True)).sum(axis=1) > 1
    y = np.asarray(labels, dtype=np.int64)
    if key == "top1":
        return float(tied.mean())
    c = f.shape[1]
    per_class = np.bincount(y, weights=tied, minlength=c) / np.maximum(np.bincount(y, minlength=c), 1)
    present = np.bincount(y, minlength=c) > 0
    if key == "balanced_acc":
        return float(per_class[present].mean())
    g = M.shot_groups(counts)
    members = present & (g == M.GROUPS.index(key))
    return float(per_class[members].mean()) if members.any() else 0.0


def _binning_extra(conf32, conf16, members) -> tuple[float, float]:
    """(ECE, MCE) tolerance for the samples that float16 moved to another bin."""
    b32, b16 = M._bin_index(conf32[members], 15), M._bin_index(conf16[members], 15)
    moved = b32 != b16
    if not moved.any():
        return 0.0, 0.0
    k = np.bincount(b32[moved], minlength=15) + np.bincount(b16[moved], minlength=15)   # moves in or out
    size = np.minimum(np.bincount(b32, minlength=15), np.bincount(b16, minlength=15))
    touched = k > 0
    return 2.0 * moved.sum() / members.sum(), float(np.max(2.0 * k[touched] / np.maximum(size[touched], 1)))


def bin_moves(src_pred, f16_pred, temperature=None) -> dict:
    """Extra tolerance of the binned summary keys: {key: bound} from the test samples whose
    top-label confidence falls in another of the 15 bins once the logits are float16."""
    with np.load(Path(src_pred) / "test.npz") as z:
        l32, labels, counts = z["logits"].astype(np.float64), z["labels"], z["train_counts"]
    with np.load(Path(f16_pred) / "test.npz") as z:
        l16 = z["logits"].astype(np.float64)
    g = M.shot_groups(counts)[np.asarray(labels, dtype=np.int64)]

    def conf(logits, t):
        return M.softmax(logits / t).max(axis=1)

    c32, c16 = conf(l32, 1.0), conf(l16, 1.0)
    out = dict(zip(("ece", "mce"), _binning_extra(c32, c16, np.ones(len(c32), dtype=bool))))
    for i, name in enumerate(M.GROUPS):
        if (g == i).any():
            out[f"ece_{name}"] = _binning_extra(c32, c16, g == i)[0]
    if temperature:
        t = float(temperature)
        out["ece_ts"] = _binning_extra(conf(l32, t), conf(l16, t), np.ones(len(c32), dtype=bool))[0]
    return {k: v for k, v in out.items() if v > 0}


def check(summary: dict, pred_dir, epochs=None, binning=None, exact=False) -> dict:
    """Recompute summary numbers from pred_dir and compare; raises ArchiveError listing every
    key out of tolerance. binning: {key: extra tolerance} from :func:`bin_moves`; exact: the
    source's own predictions, which must give every number to 1e-9 (relative).
    Returns {key: {archived, recomputed, diff, tol}}."""

    pred_dir = Path(pred_dir)
    recomputed = compute_summary(pred_dir, epochs=epochs)
    with np.load(pred_dir / "test.npz") as z:
        logits, labels, counts = z["logits"], z["labels"], z["train_counts"]
    report, bad = {}, []
    for key, new in recomputed.items():
        old = summary.get(key)
        if key == "epochs" and epochs is None:
            continue
        if old is None or new is None:
            ok = old is None and new is None
            report[key] = {"archived": old, "recomputed": new, "diff": None, "tol": 0.0}
        else:
            diff = abs(float(new) - float(old))
            if key in EXACT:
                tol = 0.0
            elif exact:
                tol = 1e-9 * max(1.0, abs(float(old)))
            elif key in ACCURACY_KEYS:
                tol = _tie_bound(logits, labels, counts, key) + 1e-9
            elif key == "temperature":
                tol = TOLERANCE[key] * abs(float(old))
            else:
                tol = TOLERANCE.get(key, 1e-9) + (binning or {}).get(key, 0.0)
            ok = diff <= tol
            report[key] = {"archived": old, "recomputed": new, "diff": diff, "tol": tol}
        if not ok:
            bad.append(f"{key}: summary {old}, recomputed {new}")
    if bad:
        where = "its own predictions (to 1e-9)" if exact else "the archived predictions within float16 rounding"
        raise ArchiveError(f"'{pred_dir.parent}': summary numbers do not recompute from {where}: {'; '.join(bad)}")
    return report


def verify(archived_run) -> dict:
    """Check an archived run directory again (what an independent reader would do)."""
    d = Path(archived_run)
    if not is_finished(d):
        what = "does not exist" if not d.exists() else "has no summary.json" if d.is_dir() else "is a file"
        raise RunNotFinished(f"archived run '{d}' {what}: expected an archived copy <root>/<benchmark>/<method>/seed<k>")
    check_complete(d)
    summary = read_json(d / "summary.json")
    cfg = read_yaml(d / "config.yaml")
    binning = read_json(d / FILE).get("binning_tolerance") if (d / FILE).is_file() else None
    return check(summary, d / "predictions", epochs=summary.get("epochs", cfg.get("epochs")), binning=binning)


# ------------------------------------------------------------------------- archiving

def _stage1_link(cfg: dict, dst: Path, archived: dict) -> str | None:
    """Archive-relative path of the stage one's archived copy (it must be archived first)."""
    s1 = cfg.get("stage1_run") or ""
    if not s1:
        return None
    src = str(Path(s1).resolve())
    target = archived.get(src)
    if target is None:
        raise ArchiveError(f"run '{cfg.get('run_dir')}' is a stage two of '{s1}', which is not in this archive: "
                           "archive the stage one first (or name it earlier in the same command)")
    return str(Path(*[".."] * 3, target.relative_to(dst.parents[2])))


def archived_sources(root) -> dict:
    """{source run directory (resolved): archived copy} of every run under root."""
    out = {}
    for f in Path(root).glob(f"*/*/*/{FILE}"):
        out[read_json(f).get("source_run")] = f.parent
    return out


def archive_run(run_dir, root, *, benchmark=None, method=None, features_kib=FEATURES_KIB,
                force=False, known=None) -> Path:
    """Copy one finished run into root/<benchmark>/<method>/seed<k>/ and check it."""

    src = Path(run_dir).resolve()
    if not is_finished(src):
        what = "does not exist" if not src.exists() else "has no summary.json" if src.is_dir() else "is a file"
        raise RunNotFinished(f"run directory '{run_dir}' {what}: only finished runs are archived")
    root_path = Path(root)
    if any(p.exists() and not p.is_dir() for p in (root_path, *root_path.parents)):
        raise ArchiveError(f"archive root --out '{root}' is (inside) a file: expected a folder (created if absent)")
    trained = read_json(src / "summary.json").get("epochs") != 0
    copied = [f for f in COPIED if trained or f != "metrics.csv"]
    missing = [f for f in copied if not (src / f).is_file()] + \
              ([] if (src / "predictions" / "test.npz").is_file() else ["predictions/test.npz"])
    if missing:
        raise ArchiveError(f"run '{run_dir}' lacks {', '.join(missing)}: it cannot be archived complete")
    cfg = read_yaml(src / "config.yaml")
    dst = destination(root, cfg, benchmark, method)
    known = archived_sources(root) if known is None else known
    if dst.exists():
        prev = read_json(dst / FILE).get("source_run") if (dst / FILE).exists() else None
        if not force:
            raise ArchiveError(f"'{dst}' already exists (archived from {prev}): pass --force to replace it")
    link = _stage1_link(cfg, dst, known)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    new_parents = [p for p in tmp.parents if not p.exists()]   # removed again if the check fails
    tmp.mkdir(parents=True)
    try:
        for f in copied:
            shutil.copy2(src / f, tmp / f)
        summary = read_json(src / "summary.json")
        # first the source itself: a summary that its own float32 predictions do not give is wrong
        check(summary, src / "predictions", epochs=summary.get("epochs"), exact=True)
        kept = _write_predictions(src / "predictions", tmp / "predictions", features_kib)
        binning = bin_moves(src / "predictions", tmp / "predictions", summary.get("temperature"))
        try:
            report, logits = check(summary, tmp / "predictions", epochs=summary.get("epochs"), binning=binning), "float16"
        except ArchiveError as e:
            # Logits with a narrow range (NCM's negative distances: near-uniform confidences whose
            # order float16 scrambles) keep float32, said in archive.json and on stderr.
            logits = f"float32 (float16 failed the check: {str(e).split(': ', 2)[-1]})"
            print(f"ltlab: {run_dir}: float16 logits do not keep its summary numbers; archived as float32",
                  file=sys.stderr)
            kept = _write_predictions(src / "predictions", tmp / "predictions", features_kib, np.float32)
            binning = {}
            report = check(summary, tmp / "predictions", epochs=summary.get("epochs"))
        worst = max(report, key=lambda k: (report[k]["diff"] or 0) / (report[k]["tol"] or 1))
        atomic_write_json(tmp / FILE, {
            "source_run": str(src), "stage1": link, "archived": dt.datetime.now(dt.timezone.utc).isoformat(
                timespec="seconds"), **kept, "logits": logits,
            "bytes": sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()), "binning_tolerance": binning,
            "check": {"keys": len(report), "worst_key": worst, **{k: report[worst][k] for k in ("diff", "tol")}}})
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in new_parents:          # innermost first: nothing half-written stays behind
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise
    known[str(src)] = dst
    return dst


def archive_runs(run_dirs, root, **kw) -> list[Path]:
    """Archive several runs in order (stage ones before the stage twos that name them)."""
    known = archived_sources(root)
    return [archive_run(d, root, known=known, **kw) for d in run_dirs]


def total_bytes(root) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
