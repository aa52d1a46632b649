"""The benchmarks run end to end on small synthetic data and write what their README rows quote."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_mnist, run_benchmark

from callbacks import default_callbacks

REPO = Path(__file__).resolve().parents[1]


def test_loop_overhead_writes_rates_ratios_and_per_step_overhead(tmp_path):
    make_mnist(tmp_path / "mnist", n_train=3000, n_test=64)  # 21 training steps per epoch at batch 128
    out = tmp_path / "loop_overhead.json"
    command = [sys.executable, str(REPO / "benchmarks" / "loop_overhead.py"), "--epochs=1", "--rounds=1"]
    command += [f"--data_dir={tmp_path / 'mnist'}", f"--out={out}", "--"]
    command += [f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "zoo recipe" in result.stdout and "a ratio of 0.90 allows" in result.stdout
    report = json.loads(out.read_text())
    assert report["data"] == str(tmp_path / "mnist") and report["recipe_overrides"][0].startswith("--trainer")
    rates = {path: report[f"{path}_steps_per_s"][0] for path in ("raw", "lightning", "zoo")}
    assert all(rate > 0 for rate in rates.values())
    assert report["ratio_median"] == rates["zoo"] / rates["raw"]
    step_ms = report["step_ms_median"]
    assert abs(step_ms["zoo"] - step_ms["raw"] - report["overhead_ms"]["zoo"]) < 1e-9
    assert abs(report["overhead_ms_at_0.90"] - step_ms["raw"] / 9) < 1e-9
    # the recipe's cost over the bare Trainer splits into dispatch to as many idle callbacks, and their work
    n_callbacks = len(default_callbacks()) + 1  # and the CLI's config saver (the model summary is turned off)
    assert report["recipe_callbacks"] == n_callbacks and f"bare + {n_callbacks} idle" in result.stdout
    idle, bare = report["idle_callbacks_steps_per_s"][0], rates["lightning"]
    assert report["idle_callbacks_to_lightning_median"] == idle / bare
    assert abs(report["zoo_to_idle_callbacks_median"] * idle / bare - rates["zoo"] / bare) < 1e-9


def test_precision_matrix_reports_every_cell_against_fp32(tmp_path):
    out = tmp_path / "matrix.json"
    args = ["--models=cnn_digits,lstm_lm_test", "--configs=fp32,fp32+cl,bf16", "--batch_size=4", "--warmup=1"]
    finished = run_benchmark("precision_matrix", *args, "--steps=2", f"--out={out}")
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(out.read_text())
    cnn, lstm = result["cells"]["cnn_digits"], result["cells"]["lstm_lm_test"]
    assert cnn["fp32"]["unit"] == "images" and lstm["fp32"]["unit"] == "tokens"
    assert lstm["fp32+cl"] == {"skipped": "no 4-D weights"}  # nothing to convert
    assert cnn["fp32"]["train_speedup"] == 1.0
    for row, config in ((cnn, "fp32+cl"), (cnn, "bf16"), (lstm, "bf16")):
        cell = row[config]
        assert cell["train_per_s"] > 0 and cell["eval_per_s"] > 0 and cell["train_warmup_s"] is not None
        assert abs(cell["train_speedup"] - cell["train_per_s"] / row["fp32"]["train_per_s"]) < 1e-9
        assert abs(cell["eval_speedup"] - cell["eval_per_s"] / row["fp32"]["eval_per_s"]) < 1e-9


@pytest.mark.slow
def test_time_to_accuracy_times_both_processes_and_reads_the_recipe_test_accuracy(tmp_path):
    make_mnist(tmp_path / "data" / "mnist", n_train=1024, n_test=128)
    out = tmp_path / "tta.json"
    command = [sys.executable, str(REPO / "benchmarks" / "time_to_accuracy.py"), f"--data_dir={tmp_path / 'data'}"]
    command += ["--rounds=1", "--raw_epochs=2", "--target=0.0", f"--out={out}", "--", "--trainer.max_epochs=1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    (round_,) = report["rounds"]
    raw, recipe = round_["raw"], round_["recipe"]
    assert [epoch["epoch"] for epoch in raw["epochs"]] == [1, 2]
    assert raw["time_to_target_s"] == raw["epochs"][0]["elapsed_s"] < raw["wall_s"]  # the first epoch reached it
    assert recipe["epochs"] == 1 and 0 <= recipe["final_test_acc"] <= 1
    assert round_["ratio"] == recipe["wall_s"] / raw["time_to_target_s"] == report["ratio_median"]
    assert report["all_reached"] and "recipe / raw time" in result.stdout


def test_time_to_accuracy_names_the_missing_files(tmp_path):
    command = [sys.executable, str(REPO / "benchmarks" / "time_to_accuracy.py"), f"--data_dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "train-images-idx3-ubyte.gz" in result.stderr


def test_vs_timm_compares_models_of_equal_size(tmp_path):
    out = tmp_path / "vs.json"
    args = ["--models=efficientnet_b0", "--settings=fp32", "--batch_size=1", "--steps=1", "--rounds=2"]
    finished = run_benchmark("vs_timm", *args, f"--out={out}")
    assert finished.returncode == 0, finished.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    references = ("timm/efficientnet_b0", "torchvision/efficientnet_b0")
    expected = {(ref, mode) for ref in references for mode in ("train", "inference")}
    assert {(row["reference"], row["mode"]) for row in rows} == expected
    for row in rows:
        assert row["params"] == 5288548
        assert row["ratio_per_round"] == [z / r for z, r in zip(row["zoo_per_s"], row["ref_per_s"], strict=True)]


def test_grad_checkpointing_lowers_the_memory_of_every_family(tmp_path):
    out = tmp_path / "grad_checkpointing.json"
    finished = run_benchmark("grad_checkpointing", "--quick", "--threads=1", f"--out={out}")
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "saved MB" in finished.stdout and "gpt_test" in finished.stdout
    report = json.loads(out.read_text())
    assert report["settings"]["threads"] == report["machine"]["threads"] == 1
    rows = {(row["model"], row["mode"]): row for row in report["rows"]}
    models = ("resnet20_cifar", "vit_tiny_patch4_32", "gpt_test")
    assert set(rows) == {(model, mode) for model in models for mode in ("off", "on")}
    for model in models:
        off, on = rows[model, "off"], rows[model, "on"]
        assert on["grad_checkpointing"] and not off["grad_checkpointing"] and on["params"] == off["params"]
        # what the forward keeps for the backward shrinks to the blocks' inputs; the peak never grows
        assert 0 < on["saved_mb"] < 0.5 * off["saved_mb"]
        assert 0 < on["peak_mb"] <= off["peak_mb"]
        assert on["saved_ratio"] == on["saved_mb"] / off["saved_mb"] and off["time_ratio"] == 1.0
        assert on["time_ratio"] == pytest.approx(on["step_ms"] / off["step_ms"]) and on["time_ratio"] > 0
        assert on["command"] == f"python benchmarks/grad_checkpointing.py --quick --threads=1 --out={out}"
        assert on["versions"]["torch"] and on["date"] and "CPU" in on["machine"]
    assert rows["resnet20_cifar", "on"]["peak_mb"] < rows["resnet20_cifar", "off"]["peak_mb"]  # activations dominate


def test_degradation_measures_plain_and_residual_nets_at_each_depth(tmp_path):
    out = tmp_path / "degradation.json"
    finished = run_benchmark("degradation", "--quick", f"--out={out}")
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(out.read_text())
    results = {(result["depth"], result["net"]): result for result in report["results"]}
    assert set(results) == {(depth, net) for depth in (8, 14) for net in ("plain", "residual")}
    for (depth, _), result in results.items():
        norms = list(result["grad_norms"].values())
        assert len(norms) == depth - 1  # every conv but the shortcuts; the last layer is the linear head
        assert all(math.isfinite(norm) and norm > 0 for norm in norms)
        assert result["grad_first_to_last"] == norms[0] / norms[-1]
        assert 0 <= result["test_acc"] <= 1 and math.isfinite(result["train_loss"])
    # the residual net is the plain one plus the 1x1 projection shortcuts (conv and norm) of the two widening stages
    for depth in (8, 14):
        assert results[depth, "residual"]["params"] - results[depth, "plain"]["params"] == 16 * 32 + 64 + 32 * 64 + 128
    rows = report["rows"]
    assert [row["what"].split(" layers")[0] for row in rows] == [f"plain vs residual net of {d}" for d in (8, 14)]
    for row, depth in zip(rows, (8, 14), strict=True):
        plain, residual = results[depth, "plain"], results[depth, "residual"]
        assert row["value"].startswith(f"plain {100 * plain['test_acc']:.2f}%")
        assert f"residual {100 * residual['test_acc']:.2f}%" in row["value"]
        assert {"command", "machine", "versions", "date"} <= set(row) and "--quick" in row["command"]


def test_denoising_study_scores_filters_and_networks_on_the_same_noisy_images(tmp_path):
    out = tmp_path / "denoising.json"
    finished = run_benchmark("denoising_study", "--quick", "--noises=salt_pepper", f"--out={out}")
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["results"]["salt_pepper"]
    assert [row["method"] for row in rows] == ["noisy input", "gaussian filter", "median filter", "ircnn", "unet_small"]
    first = rows[1]
    for row in rows[1:]:  # the same noisy test images for every method: one input score
        assert {metric: row[f"{metric}_input"] for metric in ("psnr", "psnr_mean", "ssim")} == {
            metric: first[f"{metric}_input"] for metric in ("psnr", "psnr_mean", "ssim")
        }
    assert rows[0]["psnr"] == first["psnr_input"] and 12 < rows[0]["psnr"] < 18  # 10% of pixels flipped to 0 or 1
    by_method = {row["method"]: row for row in rows}
    assert by_method["median filter"]["psnr"] > rows[0]["psnr"] + 5  # the textbook answer to impulse noise
    assert by_method["median filter"]["strength"] in (1.0, 2.0) and by_method["ircnn"]["params"] == 186_177
    assert "median filter" in report["table"] and "--quick" in report["rows"][0]["command"]
    assert report["rows"][0]["value"].startswith(f"noisy input {rows[0]['psnr']:.2f} dB")


def test_transformer_study_writes_its_tables_and_analysis(tmp_path):
    text = tmp_path / "play.txt"
    text.write_text("FIRST CITIZEN:\nWe are accounted poor citizens, the patricians good.\n\n" * 40)
    out, analysis = tmp_path / "study.json", tmp_path / "analysis"
    finished = run_benchmark(
        "transformer_study", "--quick", f"--lm_text={text}", f"--out={out}", f"--analysis_dir={analysis}"
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(out.read_text())
    assert list(report["baselines"]) == ["transformer", "lstm", "bag of embeddings"]
    assert report["baselines"]["transformer"] == report["ablations_speakers"]["base"]  # the same runs
    assert list(report["ablations_speakers"]) == list(report["ablations_lm"]) == ["base", "heads=1", "post-norm"]
    for rows, metric in ((report["ablations_speakers"], "acc"), (report["ablations_lm"], "bpc")):
        for row in rows.values():
            assert row[metric]["n"] == 1 and row[metric]["mean"] == row["runs"][0][metric]
    # an ensemble of the one seed's checkpoint is that model
    base = report["ablations_speakers"]["base"]["acc"]["mean"]
    assert report["ensemble"]["members"] == 1 and report["ensemble"]["acc"] == pytest.approx(base, abs=1e-6)
    assert set(report["distillation"]) == {"student, labels only", "student, distilled"}
    found = report["analysis"]
    test_size = sum(map(sum, found["confusion_matrix"]))
    assert test_size == sum(bucket["n"] for bucket in found["accuracy_by_length"]) > 100
    assert [row["p_true"] for row in found["hardest"]] == sorted(row["p_true"] for row in found["hardest"])
    assert {path.name for path in analysis.iterdir()} == {"analysis.md", "attention_heads.png", "confusion_matrix.png"}
    assert "| tokens | speeches | accuracy |" in (analysis / "analysis.md").read_text()
    described = [row["what"] for row in report["rows"]]
    assert any(what.startswith("Transformer ablations, lm") for what in described)
    assert any(what.startswith("checkpoint ensemble of 1") for what in described)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the paired mode pins each side to a core of its own")
def test_lm_vs_loop_paired_runs_both_sides_at_once_on_a_core_each(tmp_path):
    words = ["the king", "my lord", "good night", "to be", "or not", "sweet prince"]
    text = tmp_path / "input.txt"
    text.write_text("\n".join(f"{words[i % 6]} {words[(i * 7) % 6]}, {i % 97}." for i in range(3000)))
    out = tmp_path / "lm.json"
    command = [sys.executable, str(REPO / "benchmarks" / "lm_vs_loop.py"), "--steps=3", "--rounds=1", "--paired"]
    result = subprocess.run([*command, f"--text={text}", f"--out={out}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    (row,) = report["rounds"]
    assert row["ratio"] == pytest.approx(row["recipe_s"] / row["loop_s"], abs=0.02)  # from unrounded seconds
    for side in ("loop", "recipe"):
        # Each side's own usage (one thread on one core): positive and within its wall time.
        assert 0 < row[f"{side}_cpu_s"] <= row[f"{side}_s"] * 1.05 + 0.5
        assert math.isfinite(row[f"{side}_val_loss"])
    wall, cpu = report["rows"]
    assert "both at once" in wall["what"] and wall["command"].endswith("--rounds 1 --paired")
    assert cpu["value"] == f"{row['cpu_ratio']:.2f}x"
