import types

import torch

from benchmarks import gpu_check


def test_gpu_check_cpu_path_times_each_mode_and_runs_it_as_named(monkeypatch):
    """A fake clock fixes each mode's timed span, so the reported rates and speedup are known exactly; forward
    hooks check that the AMP mode really ran in bf16 on channels_last input and fp32 eager did not."""
    spans = iter([(100.0, 104.0), (200.0, 201.0)])  # fp32_eager: 4 s, amp_channels_last: 1 s
    ticks: list[float] = []

    def perf_counter():
        if not ticks:
            ticks.extend(next(spans))
        return ticks.pop(0)

    monkeypatch.setattr(gpu_check, "time", types.SimpleNamespace(perf_counter=perf_counter))
    seen: dict[int, list[tuple[torch.dtype, bool]]] = {}
    real_create_model = gpu_check.create_model

    def recording_create_model(*args, **kwargs):
        model = real_create_model(*args, **kwargs)
        calls = seen.setdefault(len(seen), [])
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda m, a, out: calls.append(
            (out.dtype, a[0].is_contiguous(memory_format=torch.channels_last) and not a[0].is_contiguous())))
        return model

    monkeypatch.setattr(gpu_check, "create_model", recording_create_model)
    figures = gpu_check.main(["--device", "cpu", "--steps", "3", "--warmup", "1", "--batch-size", "2",
                              "--img-size", "32", "--backbone", "mobilenetv4_conv_small",
                              "--modes", "fp32_eager", "amp_channels_last"])  # fmt: skip
    assert figures["img_per_s"] == {"fp32_eager": 3 * 2 / 4.0, "amp_channels_last": 3 * 2 / 1.0}
    assert figures["speedup_vs_fp32_eager"] == {"fp32_eager": 1.0, "amp_channels_last": 4.0}
    fp32, amp = seen[0], seen[1]
    assert len(fp32) == len(amp) == 1 + 3  # warm-up and timed steps
    assert set(fp32) == {(torch.float32, False)}
    assert set(amp) == {(torch.bfloat16, True)}


def test_gpu_fit_cpu_path_reports_model_only_and_fit_rates_by_workers(demo_root, tmp_path):
    """The CPU path of the GPU benchmark (issue 22): one recipe, model-only rate, fit per worker count with every
    epoch's rate; the first epoch is not the one reported, and no GPU means no utilisation figure."""
    import json

    from benchmarks import gpu_fit

    out = tmp_path / "gpu_fit.json"
    figures = gpu_fit.main(["--device", "cpu", "--recipes", "fh_colornet@32", "--workers", "0", "--data-root",
                            str(demo_root), "--limit", "48", "--steps", "1", "--warmup", "1", "--epochs", "2",
                            "--cache-workers", "1", "--json", str(out)])  # fmt: skip
    recipe = figures["recipes"]["fh_colornet@32"]
    assert recipe["task"] == "st2" and recipe["batch_size"] == 32 and recipe["img_size"] == 32
    assert recipe["model_only_img_per_s"]["amp_channels_last"] > 0
    run = recipe["fit"][0]
    assert [e["epoch"] for e in run["epochs"]] == [1, 2]
    assert run["train_img_per_s"] == run["epochs"][1]["train_img_per_s"]  # epoch 1 (start-up) is not reported
    epochs = [{"epoch": 1, "train_img_per_s": 90.0}, {"epoch": 2, "train_img_per_s": 50.0},
              {"epoch": 3, "train_img_per_s": 60.0}]  # fmt: skip
    assert gpu_fit.best_timed_epoch(epochs)["epoch"] == 3 and gpu_fit.best_timed_epoch(epochs[:1])["epoch"] == 1
    assert run["crops_per_epoch"] == 32 and run["gpu_util_mean"] is None
    assert json.loads(out.read_text())["recipes"]["fh_colornet@32"]["fit"]["0"]["train_rows"] == 48


def test_gpu_sampler_averages_the_samples_of_a_window():
    from benchmarks.gpu_fit import GpuSampler

    sampler = GpuSampler(torch.device("cpu"))
    with sampler:
        pass
    assert sampler.samples == [] and sampler.mean(0, 1e9) is None  # nothing to sample without a GPU
    sampler.samples = [(1.0, 10.0), (2.0, 50.0), (3.0, 90.0), (4.0, 0.0)]
    assert sampler.mean(1.5, 3.5) == 70.0 and sampler.mean(5.0, 6.0) is None


def test_loader_scaling_reports_rates_and_the_worker_rule(demo_root, tmp_path):
    from benchmarks import loader_throughput
    from fh_utils.data.workers import workers_to_keep_up

    figures = loader_throughput.main(["--scaling", "--data-root", str(demo_root), "--workers", "0", "1", "--sizes",
                                      "32", "--limit", "48", "--batch-size", "16", "--epochs", "1", "--cache-dir",
                                      str(tmp_path / "cache"), "--step-ms", "10", "--cache-workers", "1"])  # fmt: skip
    assert set(figures["runs"]) == {"32px_0w", "32px_1w"}
    assert all(r["crops"] == 48 and r["crops_per_s"] > 0 for r in figures["runs"].values())
    size = figures["per_size"][32]
    one = size["steady_crops_per_s_one_worker"]
    assert one == size["steady_crops_per_s_by_workers"][1]
    assert size["workers_by_step_ms"] == {10.0: workers_to_keep_up(16 / 0.01, one)}


def test_gpu_sweep_script_quick_mode_runs_each_step_once(tmp_path):
    """The shell script's smoke mode, with a stand-in interpreter that records each command: every step runs, in
    order, with the tiny sizes, and the script reports no failure."""
    import subprocess

    from benchmarks.common import ROOT

    calls = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    stub.chmod(0o755)
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_sweep.sh"), str(tmp_path / "out")], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "QUICK": "1", "DEVICES": "cpu"},
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    modules = [line.split()[1] for line in calls.read_text().splitlines() if line.startswith("-m ")]
    assert modules == ["benchmarks.gpu_fit", "benchmarks.sweep_overhead", "benchmarks.loader_throughput"]
    assert "--device cpu" in calls.read_text() and "0 step(s) failed" in (tmp_path / "out" / "log.txt").read_text()
