from benchmarks import gpu_check


def test_gpu_check_cpu_path_reports_a_rate_per_mode():
    figures = gpu_check.main(["--device", "cpu", "--steps", "1", "--warmup", "1", "--batch-size", "2",
                              "--img-size", "32", "--backbone", "mobilenetv4_conv_small",
                              "--modes", "fp32_eager", "amp_channels_last"])  # fmt: skip
    assert set(figures["img_per_s"]) == {"fp32_eager", "amp_channels_last"}
    assert all(rate > 0 for rate in figures["img_per_s"].values())
    assert figures["speedup_vs_fp32_eager"]["fp32_eager"] == 1.0
