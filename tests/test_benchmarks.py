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
