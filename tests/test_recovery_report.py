"""Jobs, trajectory files, tables and figures on a tiny end-to-end run (no Snakemake)."""

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from iobs.errors import ConfigError, DataError
from iobs.paper import SYNTHETIC, paper_setting
from iobs.pipeline.layout import Layout
from iobs.pipeline.runner import JobContext, run_job
from iobs.recovery import figures
from iobs.recovery.experiments import experiment_params, resolve_image_sources
from iobs.recovery.report import by_experiment, final_table, load_records, rates_table, write_csv
from iobs.recovery.trajectories import RunRecord, load_trajectory, save_trajectory

GAUSSIAN = {"prior": "gaussian", "n": 40, "d": 16, "k_true": 3, "k": 6, "iterations": 30, "runs": 3, "step": "paper"}
DIGITS = {"prior": "image", "image_source": "digits", "mnist_dir": None, "k_factor": 1.5, "n_factor": 2,
          "iterations": 20, "runs": 3, "step": "exact"}
RATES = {"n": 32, "d": 8, "k_true": 2, "k": 2, "iterations": 6, "runs": 3, "init_scale": 0.3, "loss": "exponential"}


def _job(tmp_path, job, name, params, wildcards):
    out = tmp_path / name
    ctx = JobContext(name=name, input={}, output={"trajectories": str(out / "trajectories.npz"),
                                                  "provenance": str(out / "provenance.json")},
                     params={"seed": 7, "max_supports": 1000, **params}, wildcards=wildcards)
    run_job(ctx, f"iobs.pipeline.synthetic:{job}")
    return out


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("synthetic")
    experiments = (("gauss", GAUSSIAN, ("kiht", "topk_iobs", "iobs")),
                   ("img", DIGITS, ("kiht", "topk_iobs")))
    runs = [_job(tmp, "run_synthetic", f"{exp}-{alg}", {"experiment": cfg, "algorithm": alg},
                 {"experiment": exp, "algorithm": alg})
            for exp, cfg, algs in experiments for alg in algs]
    rates = [_job(tmp, "run_rates", f"rates-{alg}", {"rates": RATES, "algorithm": alg}, {"algorithm": alg})
             for alg in ("kiht", "topk_iobs", "iobs")]
    return runs, rates


def test_jobs_write_trajectories_and_provenance(run_dirs):
    runs, rates = run_dirs
    record = load_trajectory(runs[0] / "trajectories.npz")
    assert record.loss.shape == (3, 31) and record.w_star.shape == (3, 16)
    assert record.meta["experiment"] == "gauss" and record.meta["algorithm"] == "kiht"
    prov = json.loads((runs[3] / "provenance.json").read_text())
    assert prov["image_source"] == "digits" and prov["d"] == 64 and prov["wall_seconds"] >= 0
    assert prov["final_dist_mean"] == pytest.approx(load_trajectory(runs[3] / "trajectories.npz").dist[:, -1].mean())
    iobs = json.loads((rates[2] / "provenance.json").read_text())
    assert iobs["support_search"] == "exact"
    assert not list(runs[0].glob(".*tmp"))  # no temporary files left behind
    # every algorithm of an experiment saw the same instances
    same = [load_trajectory(d / "trajectories.npz") for d in runs[:3]]
    assert all(np.array_equal(same[0].w_star, r.w_star) and np.array_equal(same[0].loss[:, 0], r.loss[:, 0])
               for r in same)


def test_final_table_rows_and_statistics(run_dirs, tmp_path):
    records = load_records(d / "trajectories.npz" for d in run_dirs[0])
    table = final_table(records)
    assert list(table.columns[:9]) == ["experiment", "prior", "algorithm", "iteration", "runs", "loss_mean",
                                       "loss_std", "dist_mean", "dist_std"]
    assert {"paper_loss", "paper_dist"} <= set(table.columns)
    assert table[["experiment", "algorithm"]].values.tolist() == [
        ["gauss", "kiht"], ["gauss", "topk_iobs"], ["gauss", "iobs"], ["img", "kiht"], ["img", "topk_iobs"]]
    assert set(table.prior) == {"Gaussian", "sklearn digits"}
    kiht = load_trajectory(run_dirs[0][0] / "trajectories.npz")
    row = table.iloc[0]
    assert row.iteration == 30 and row.loss_mean == pytest.approx(kiht.loss[:, -1].mean())
    assert row.dist_std == pytest.approx(kiht.dist[:, -1].std(ddof=1))
    assert table.paper_loss.isna().all()  # tiny sizes do not match the paper's settings
    write_csv(table, tmp_path / "final.csv")
    assert (tmp_path / "final.csv").read_text().splitlines()[0].startswith("experiment,prior,algorithm")


def _fake(setting_config, algorithm, iterations, image_source=None):
    rng = np.random.default_rng(0)
    loss = rng.random((2, iterations + 1)) + 0.1
    meta = {"experiment": "e", "algorithm": algorithm, "config": setting_config, "image_source": image_source}
    return RunRecord(loss=loss, dist=loss.copy(), w_final=np.ones((2, 4)), w_star=np.ones((2, 4)),
                     k=np.array([2, 2]), meta=meta)


def test_paper_columns_at_paper_iterations_when_settings_match():
    paper_gaussian = {"prior": "gaussian", "n": 256, "d": 128, "k_true": 16, "k": 64, "step": "paper"}
    table = final_table([_fake(paper_gaussian, "topk_iobs", 750), _fake(paper_gaussian, "kiht", 300)])
    assert table.algorithm.tolist() == ["kiht"] * 2 + ["topk_iobs"] * 3
    assert table.iteration.tolist() == [100, 300, 100, 400, 750]
    expected = {(n.algorithm, n.iteration): n.value
                for n in SYNTHETIC if n.setting == "gaussian" and n.metric == "dist"}
    assert table.paper_dist.tolist()[2:] == [expected["topk_iobs", 100], expected["topk_iobs", 400],
                                            expected["topk_iobs", 750]]
    assert table.paper_dist.iloc[0] == expected["kiht", 100] and math.isnan(table.paper_dist.iloc[1])
    assert math.isnan(table.paper_loss.iloc[2]) and table.paper_loss.iloc[4] > 0
    assert paper_setting({**paper_gaussian, "step": "exact"}, None) is None
    mnist = {"prior": "image", "k_factor": 2, "n_factor": 2, "step": "paper"}
    assert paper_setting(mnist, "mnist").name == "mnist" and paper_setting(mnist, "digits") is None


def test_rates_table(run_dirs):
    table = rates_table(load_records(d / "trajectories.npz" for d in run_dirs[1]))
    assert {"algorithm", "iteration", "dist_median", "dist_mean", "dist_std", "order_median",
            "order_ratio_median"} <= set(table.columns)
    assert set(table.algorithm) == {"kiht", "topk_iobs", "iobs"}
    kiht = table[table.algorithm == "kiht"]
    assert kiht.iteration.tolist() == list(range(7))  # IHT stays above float64 noise for all 6 steps
    assert not np.isinf(table.select_dtypes("number").to_numpy()).any()
    newton = table[table.algorithm == "topk_iobs"]
    assert newton.dist_median.iloc[-1] < kiht.dist_median.iloc[-1]


def test_figures(run_dirs, tmp_path):
    records = load_records(d / "trajectories.npz" for d in run_dirs[0])
    groups = by_experiment(records)
    fig = figures.plot_experiment(groups["img"])
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "log"]
    assert "sklearn digits" in fig._suptitle.get_text()
    assert len(fig.axes[0].get_lines()) == 2
    path = figures.save_figure(fig, tmp_path / "img.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*"))
    algorithms = {r.algorithm: r for r in groups["img"]}
    recon = figures.plot_reconstructions(algorithms["topk_iobs"], algorithms["kiht"], 2)
    assert len(recon.axes) == 6 and recon.axes[0].get_images()[0].get_array().shape == (8, 8)
    rates = figures.plot_rates(load_records(d / "trajectories.npz" for d in run_dirs[1]))
    assert len(rates.axes) == 2
    plt.close("all")


def test_bad_trajectory_file_is_a_data_error(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a trajectory file"):
        load_trajectory(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="does not exist"):
        load_trajectory(tmp_path / "none.npz")
    record = _fake({}, "kiht", 3)
    save_trajectory(tmp_path / "ok.npz", record)
    loaded = load_trajectory(tmp_path / "ok.npz")
    assert np.array_equal(loaded.loss, record.loss) and loaded.meta == record.meta


def test_workflow_helpers_resolve_sources_and_list_targets(tmp_path):
    synthetic = {"experiments": {
        "g": {"prior": "gaussian", "algorithms": ["kiht"]},
        "im": {"prior": "image", "image_source": "auto", "mnist_dir": str(tmp_path), "algorithms": ["kiht", "iobs"]}},
        "rates": {"algorithms": ["topk_iobs"]}}
    sources = resolve_image_sources(synthetic)
    assert sources == {"im": "digits"}
    assert experiment_params(synthetic, sources, "im")["image_source"] == "digits"
    assert synthetic["experiments"]["im"]["image_source"] == "auto"  # the config itself is untouched
    assert Layout("r").synthetic_runs(synthetic) == ["r/synthetic/g/kiht/trajectories.npz",
                                                      "r/synthetic/im/kiht/trajectories.npz",
                                                      "r/synthetic/im/iobs/trajectories.npz"]
    assert Layout("r").synthetic_rate_runs(synthetic) == ["r/synthetic-rates/topk_iobs/trajectories.npz"]
    synthetic["experiments"]["im"]["image_source"] = "mnist"
    with pytest.raises(DataError, match="synthetic.experiments.im.mnist_dir"):
        resolve_image_sources(synthetic)


def test_job_rejects_a_params_value_that_is_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="synthetic.experiments.x must be a mapping"):
        _job(tmp_path, "run_synthetic", "x", {"experiment": "not a mapping", "algorithm": "kiht"}, {"experiment": "x"})
