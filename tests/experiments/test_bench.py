"""`sotakit bench` (issue 14): the table's ratios and the limiting-stage sentence follow from the measured
numbers (fake timings injected), the stages are interleaved, and bad arguments end in a clear error."""

from __future__ import annotations

import pytest
import torch

from conftest import make_image_folder
from sotakit.cli import main
from sotakit.data import TensorSource, load_image_folder
from sotakit.experiments.bench import (
    BenchResult,
    bench_table,
    limiting_stage,
    run_blocks,
    steps_for_budget,
    uint8_pool,
)


def result(ceiling, data, full) -> BenchResult:
    return BenchResult(ceiling=ceiling, data=data, full=full, batch_size=128, steps_per_block=5)


def test_table_ratios_are_the_medians_over_the_ceiling_median():
    text = bench_table(result([1000, 1200, 800], [3000, 2000, 2500], [600, 700, 500]))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "img/s" not in line]
    assert rows == ["| compute ceiling (plain loop, in-memory uint8, no augmentation) | 1000 (800-1200) "
                    "| 1.00 |",
                    "| data pipeline alone (training loader, no model) | 2500 (2000-3000) | 2.50 |",
                    "| full step (train_one_epoch, whole recipe) | 600 (500-700) | 0.60 |"]
    assert "full step / data pipeline: 0.24; full step / ceiling: 0.60" in text
    assert "n = 3" in text.splitlines()[0]
    assert "batch 128, 5 steps per timed block\n" in text  # no setting given, none printed


def test_the_table_says_what_the_numbers_are_of_and_the_notes_first():
    r = BenchResult(ceiling=[1.0], data=[1.0], full=[1.0], batch_size=64, steps_per_block=3,
                    notes=["no CUDA device: running on cpu"], setting="model resnet18, float32")
    lines = bench_table(r).splitlines()
    assert lines[0] == "note: no CUDA device: running on cpu"
    assert "batch 64, 3 steps per timed block; model resnet18, float32" in lines


def test_a_slow_loader_the_full_step_keeps_up_with_is_the_limit():
    sentence = limiting_stage(result([1000], [400], [380]))
    assert sentence.startswith("The data pipeline limits: the full step (380 img/s) runs at the loader's "
                               "speed (400 img/s), below what the model allows (1000 img/s)")


def test_a_full_step_near_the_plain_loop_is_compute_bound():
    assert limiting_stage(result([1000], [5000], [900])).startswith(
        "The model's compute limits: the full step (900 img/s) is within 15% of the plain loop (1000 img/s)")


def test_a_full_step_far_below_both_blames_running_them_together():
    assert limiting_stage(result([1000], [2000], [600])).startswith(
        "The combination limits: the full step (600 img/s) is well below both the plain loop (1000 img/s) "
        "and the loader alone (2000 img/s)")


def test_stages_run_in_turn_block_by_block():
    calls = []

    def fake(stage, rate):
        def measure(steps):
            calls.append((stage, steps))
            return rate + len(calls)
        return measure

    out = run_blocks({"ceiling": fake("ceiling", 100), "data": fake("data", 200), "full": fake("full", 300)},
                     steps=4, blocks=2)
    assert calls == [("ceiling", 4), ("data", 4), ("full", 4)] * 2
    assert out == {"ceiling": [101, 104], "data": [202, 205], "full": [303, 306]}


def test_steps_per_block_fill_the_budget():
    # 0.6 s per round of one step of each stage; 2 rounds in 6 s -> 5 steps per block
    assert steps_for_budget(6.0, {"ceiling": 0.1, "data": 0.2, "full": 0.3}, blocks=2) == 5
    assert steps_for_budget(0.1, {"ceiling": 1.0, "data": 1.0, "full": 1.0}, blocks=3) == 2  # at least 2


def test_the_ceiling_pool_is_the_first_images_resized_as_rgb_uint8():
    images = torch.arange(2 * 8 * 8, dtype=torch.uint8).view(2, 1, 8, 8)
    pool, labels = uint8_pool(TensorSource(images, torch.tensor([3, 7])), size=8, images=5)
    assert pool.dtype == torch.uint8 and pool.shape == (2, 3, 8, 8)
    assert torch.equal(pool[1, 2], images[1, 0]) and labels.tolist() == [3, 7]


def test_the_ceiling_pool_decodes_a_folder_to_the_crop_size(tmp_path):
    bundle = load_image_folder(make_image_folder(tmp_path, per_class=(2, 1), size=20))
    pool, labels = uint8_pool(bundle.train, size=16, images=4)
    assert pool.dtype == torch.uint8 and pool.shape == (4, 3, 16, 16)
    # make_image_folder's class c is bright in channel c: the labels came with their own images
    assert [int(pool[k].float().mean((1, 2)).argmax()) for k in range(4)] == labels.tolist()


@pytest.mark.parametrize("flag, value, message", [
    ("--seconds", "0", "argument --seconds: 0 must be above 0"),
    ("--seconds", "soon", "argument --seconds: 'soon' is not a number"),
    ("--blocks", "2.5", "argument --blocks: '2.5' is not a whole number"),
])
def test_bad_budget_arguments_say_what_is_wrong(flag, value, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", flag, value])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_an_unknown_recipe_is_an_error_line(capsys):
    assert main(["bench", "--recipe", "no-such-preset"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no-such-preset" in err and "Traceback" not in err


def test_bench_reads_a_folder_through_the_data_cache_as_fit_does(tmp_path, monkeypatch, one_thread):
    """The full step is measured on the path fit() trains on: a folder's images from the data cache
    (in memory, batched augmentation), not decoded per image."""
    from sotakit.experiments.bench import bench_recipe
    from sotakit.recipes import make_recipe
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = make_image_folder(tmp_path / "imgs", per_class=(8, 2), size=20)
    recipe = make_recipe(data=str(folder), model="resnet9_w16", batch_size=4, device="cpu", workers=0)
    result = bench_recipe(recipe, seconds=0.5, blocks=1)
    assert any(n.startswith("data cache: built (30 images decoded") for n in result.notes), result.notes
    again = bench_recipe(recipe, seconds=0.5, blocks=1)
    assert any(n.startswith("data cache: hit") for n in again.notes), again.notes


def test_bench_measures_the_precision_and_format_the_machine_probe_gives_a_training_run(
        tmp_path, monkeypatch, one_thread):
    """`sotakit bench` asks the probe as `sotakit train` does, so its figures are of the run a user gets."""
    from sotakit.experiments.bench import bench_recipe
    from sotakit.recipes import make_recipe
    from sotakit.train import machine
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SOTAKIT_PROBE")
    fake = machine.MachineProbe(cpu="fake AMX", native_bf16=True, channels_last_fp32=0.9,
                                channels_last_bf16=1.3)
    monkeypatch.setattr(machine, "probe_machine", lambda **kw: (fake, True))
    gains = iter([1.4, 0.8])  # bf16 faster for the first bench's model, slower for the second's
    monkeypatch.setattr(machine, "model_bf16_gain", lambda probe, model, **kw: (next(gains), True))
    folder = make_image_folder(tmp_path / "imgs", per_class=(8, 2), size=20)
    recipe = make_recipe(data=str(folder), model="resnet9_w16", batch_size=4, device="cpu", workers=0)
    faster = bench_recipe(recipe, seconds=0.3, blocks=1)
    assert "model resnet9_w16, bfloat16, channels-last" in faster.setting, faster.setting
    assert any("machine probe (fake AMX)" in n and "--amp" in n for n in faster.notes), faster.notes
    slower = bench_recipe(recipe, seconds=0.3, blocks=1)
    assert "model resnet9_w16, float32, 0 loader workers" in slower.setting, slower.setting
