"""The race's tuning protocol and statistics, as plain functions over numbers.

After AlgoPerf's external tuning: each study draws `trials` settings from a declared search space
by a quasirandom (Halton) sequence; a study's score is its fastest trial's time to the target,
a trial that misses counting as infinite; the workload's score is the median over studies.
After DeepOBS: the best setting is re-run over many seeds and reported with a 95 % confidence
interval (Student's t). Across workloads, performance profiles (Dolan and More 2002): for each
optimizer the share of workloads on which its score is within a factor tau of the best one.
"""

import math
import statistics

import numpy as np

PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def radical_inverse(index: int, base: int) -> float:
    """The `index`-th element of the van der Corput sequence in `base`: the digits of `index`
    mirrored around the point (base 2: 1 -> 0.5, 2 -> 0.25, 3 -> 0.75, 4 -> 0.125)."""
    result, scale = 0.0, 1.0 / base
    while index:
        index, digit = divmod(index, base)
        result += digit * scale
        scale /= base
    return result


def halton(index: int, dims: int) -> list[float]:
    """Point `index` (1, 2, ...) of the Halton sequence in [0, 1)^dims (one prime base a dimension)."""
    if dims > len(PRIMES):
        raise ValueError(f"at most {len(PRIMES)} dimensions")
    return [radical_inverse(index, base) for base in PRIMES[:dims]]


def scale_point(u: float, spec: dict) -> float:
    """u in [0, 1) onto a range {"min", "max", "scale": "log" | "linear"}."""
    lo, hi = float(spec["min"]), float(spec["max"])
    if spec.get("scale", "log") == "log":
        return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + u * (hi - lo)


def trials(space: dict, num_trials: int, study: int) -> list[dict]:
    """Study `study`'s trials: Halton points study * num_trials + 1 ... + num_trials over the
    ranged names of `space` (sorted), fixed values ({"value": v}) as given. Studies never share
    a point, and the first point is 1, not the corner 0."""
    ranged = sorted(k for k, v in space.items() if "value" not in v)
    fixed = {k: v["value"] for k, v in space.items() if "value" in v}
    out = []
    for i in range(num_trials):
        u = halton(study * num_trials + i + 1, len(ranged))
        out.append({**fixed, **{k: scale_point(x, space[k]) for k, x in zip(ranged, u)}})
    return out


def study_score(times) -> float:
    """A study's score: its fastest trial's time to the target (None or inf for a miss)."""
    return min((math.inf if t is None else float(t) for t in times), default=math.inf)


def median_score(study_scores) -> float:
    """The workload's score: the median of the studies' scores (a miss is infinite, so a
    median of misses is infinite)."""
    return float(statistics.median(study_scores))


def mean_ci(values, confidence: float = 0.95) -> dict:
    """Mean and the half-width of its two-sided `confidence` interval from Student's t with
    n - 1 degrees of freedom (half-width None for fewer than two values)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if x.size == 0:
        return {"n": 0, "mean": None, "ci": None}
    if x.size == 1:
        return {"n": 1, "mean": float(x[0]), "ci": None}
    half = stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return {"n": int(x.size), "mean": float(x.mean()), "ci": float(half)}


def performance_ratios(scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """{optimizer: {workload: score / best score on that workload}}; inf where it missed or
    where every optimizer missed."""
    workloads = {w for per in scores.values() for w in per}
    best = {w: min(per.get(w, math.inf) for per in scores.values()) for w in workloads}
    return {o: {w: (per.get(w, math.inf) / best[w] if math.isfinite(best[w]) else math.inf)
                for w in workloads} for o, per in scores.items()}


def profile(ratios: dict[str, float], taus) -> list[float]:
    """rho(tau): the share of workloads whose ratio is at most tau, for each tau."""
    values = list(ratios.values())
    return [sum(r <= tau for r in values) / len(values) for tau in taus]


def first_hit(curve, target: float):
    """The first step of a validation curve [[step, accuracy], ...] at or above `target`, or None."""
    return next((step for step, accuracy in curve if accuracy >= target), None)


def time_trials(trials: list[dict], target: float, step_seconds: float, max_seconds: float) -> dict:
    """Sets each trial's hit, steps_to_target and seconds_to_target (steps x `step_seconds`, a
    hit only within `max_seconds`) from its curve; returns the study scores and their median."""
    for t in trials:
        steps = first_hit(t["curve"], target)
        seconds = None if steps is None else steps * step_seconds
        t["hit"] = seconds is not None and seconds <= max_seconds
        t["steps_to_target"], t["seconds_to_target"] = (steps, seconds) if t["hit"] else (None, None)
    studies = sorted({t["study"] for t in trials})
    study_scores = [study_score(t["seconds_to_target"] for t in trials if t["study"] == j)
                    for j in studies]
    return {"study_scores": study_scores, "score": median_score(study_scores)}


def summarise_seeds(members: list[dict], step_seconds: float, max_seconds: float) -> dict:
    """Hit share, steps and seconds to the target (over the seeds that hit), final validation and
    test accuracy, each as mean and 95 % interval, of the seeds' `members`."""
    steps = [m["hit_step"] for m in members
             if m["hit_step"] is not None and m["hit_step"] * step_seconds <= max_seconds]
    return {"hit_share": len(steps) / len(members),
            "steps_to_target": mean_ci(steps),
            "seconds_to_target": mean_ci([s * step_seconds for s in steps]),
            "final_val_accuracy": mean_ci([m["final_val_accuracy"] for m in members]),
            "test_accuracy": mean_ci([m["test_accuracy"] for m in members])}
