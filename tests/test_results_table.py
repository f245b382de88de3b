"""Seed tables against a float64 reference: the t quantile from integrating Student's density
with NumPy (no scipy), and the interval's mean and half-width written out."""

import json
import math
import pathlib

import numpy as np
import pytest

from mlvae_jax import results_table
from mlvae_jax.results_table import Interval, goal_met, seed_rows, t_interval


def reference_t_quantile(p: float, dof: int) -> float:
  """Quantile p (> 0.5) of Student's t by bisection on the integrated density (float64)."""
  log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)

  def cdf(q: float) -> float:
    t = np.linspace(0.0, q, 200_001)
    density = np.exp(log_norm - (dof + 1) / 2 * np.log1p(t * t / dof))
    return 0.5 + float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(t)))

  low, high = 0.0, 200.0
  for _ in range(60):
    mid = (low + high) / 2
    low, high = (mid, high) if cdf(mid) < p else (low, mid)
  return (low + high) / 2


def reference_interval(values: np.ndarray) -> tuple[float, float, float]:
  n = len(values)
  mean = values.sum() / n
  sd = math.sqrt(((values - mean) ** 2).sum() / (n - 1))
  half = reference_t_quantile(0.975, n - 1) * sd / math.sqrt(n)
  return mean, mean - half, mean + half


@pytest.mark.parametrize("n, seed", [(2, 0), (3, 1), (5, 2), (5, 3), (8, 4)])
def test_interval_matches_the_float64_reference(n: int, seed: int):
  values = np.random.default_rng(seed).normal(0.9, 0.02, n)
  got = t_interval(values)
  mean, low, high = reference_interval(values)
  assert got.n == n
  np.testing.assert_allclose([got.mean, got.low, got.high], [mean, low, high], rtol=1e-6)


def test_one_run_has_no_interval_and_missing_values_do_not_count():
  one = t_interval([0.97])
  assert one.n == 1 and one.mean == 0.97 and math.isnan(one.low) and math.isnan(one.high)
  assert t_interval([]).n == 0 and math.isnan(t_interval([]).mean)
  gappy = t_interval([0.9, math.nan, 0.92, 0.94])
  mean, low, high = reference_interval(np.array([0.9, 0.92, 0.94]))
  assert gappy.n == 3
  np.testing.assert_allclose([gappy.mean, gappy.low, gappy.high], [mean, low, high], rtol=1e-6)


def test_equal_seeds_give_a_zero_width_interval():
  got = t_interval([0.25] * 5)
  assert got.low == got.mean == got.high == 0.25


def test_bad_confidence_is_refused():
  with pytest.raises(ValueError, match="confidence=1.5 must be in"):
    t_interval([1.0, 2.0], confidence=1.5)


def test_a_goal_is_met_only_by_the_whole_interval():
  interval = Interval(n=5, mean=0.975, sd=0.004, low=0.970, high=0.980)
  assert goal_met(interval, ">= 0.97") and not goal_met(interval, ">= 0.975")
  assert goal_met(interval, "<= 0.98") and not goal_met(interval, "<= 0.975")
  assert not goal_met(t_interval([0.99]), ">= 0.5")  # one seed proves nothing
  with pytest.raises(ValueError, match="must read '>= X' or '<= X'"):
    goal_met(interval, "> 0.5")


def test_rows_group_seeds_by_setting_and_never_pool_splits():
  runs = [({"model.style_dim": 8, "seed": s}, {"step": 10, "a": v, "b": 1.0}, "validation")
          for s, v in zip(range(3), (0.1, 0.2, 0.3))]
  runs += [({"model.style_dim": 8, "seed": 0}, {"a": 0.5}, "test"),
           ({"seed": 0}, {"a": 0.7}, "validation")]
  rows = {(r["setting"], r["split"], r["metric"]): r for r in seed_rows(runs)}
  eight = rows[("model.style_dim=8", "validation", "a")]
  mean, low, high = reference_interval(np.array([0.1, 0.2, 0.3]))
  assert eight["seeds"] == [0, 1, 2] and eight["n"] == 3
  np.testing.assert_allclose([eight["mean"], eight["low"], eight["high"]], [mean, low, high], rtol=1e-6)
  assert rows[("model.style_dim=8", "test", "a")]["n"] == 1
  assert rows[("default", "validation", "a")]["mean"] == 0.7
  assert ("model.style_dim=8", "validation", "step") not in rows


def _run(directory: pathlib.Path, final: dict, evals_split: str | None) -> str:
  directory.mkdir()
  (directory / "final_metrics.json").write_text(json.dumps(final))
  config = {} if evals_split is None else {"evals_split": evals_split}
  (directory / "config.json").write_text(json.dumps(config))
  return str(directory)


def test_write_makes_the_three_files_for_a_seed_sweep(tmp_path: pathlib.Path):
  points = [({"seed": s}, _run(tmp_path / f"s{s}", {"test/bits_per_dim": 0.2 + s / 100},
                                "validation")) for s in range(3)]
  points.append(({"seed": 3}, str(tmp_path / "unfinished")))
  assert results_table.write(str(tmp_path), points)
  rows = json.loads((tmp_path / "results.json").read_text())
  assert [(r["metric"], r["n"], r["split"]) for r in rows] == [("test/bits_per_dim", 3, "validation")]
  assert "test/bits_per_dim" in (tmp_path / "results.csv").read_text()
  table = (tmp_path / "results.md").read_text()
  assert "| default | validation |" in table and "(n=3)" in table


def test_a_sweep_without_seeds_writes_nothing_and_old_configs_read_as_test(tmp_path: pathlib.Path):
  assert not results_table.write(str(tmp_path), [({"a": 1}, _run(tmp_path / "a", {"x": 1.0}, None))])
  assert not (tmp_path / "results.json").exists()
  assert results_table.write(str(tmp_path), [({"seed": 0}, str(tmp_path / "a"))])
  assert json.loads((tmp_path / "results.json").read_text())[0]["split"] == "test"


def test_the_sweep_summary_carries_the_seed_table(tmp_path: pathlib.Path):
  from mlvae_jax import sweep
  jobs = [sweep.Job(f"seed={s}", {"seed": s},
                    _run(tmp_path / f"seed={s}", {"test/bits_per_dim": 0.2 + s / 100}, "test"), ())
          for s in range(2)]
  summary = sweep.summarise(jobs, {job.name: "done" for job in jobs}, str(tmp_path))
  assert "| default | test |" in summary and "(n=2)" in summary
  assert (tmp_path / "results.json").exists()
