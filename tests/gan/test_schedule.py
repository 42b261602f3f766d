"""Growth schedule: phase boundaries, linear fade-in, no fade at the first resolution, the
final resolution forever, batch sizes per resolution, learning-rate decay, JSON round trip
and named errors for invalid schedules."""

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import gan.schedule
from gan.schedule import (
    FADE,
    STABLE,
    GrowthSchedule,
    compute_learning_rate,
    karras_schedule,
    make_schedule,
    paper_schedule,
    schedule_at,
    smoke_schedule,
    stage_boundaries,
    total_images,
)

PHASE = 600_000


def test_paper_schedule_has_eight_blocks_and_fifteen_phases():
    schedule = paper_schedule()
    assert schedule.resolutions == (4, 8, 16, 32, 64, 128, 256, 512)
    boundaries = stage_boundaries(schedule)
    assert boundaries[:4] == [(0, 4, STABLE), (PHASE, 8, FADE), (2 * PHASE, 8, STABLE),
                              (3 * PHASE, 16, FADE)]
    assert boundaries[-1] == (14 * PHASE, 512, STABLE)
    assert len(boundaries) == 15 and total_images(schedule) == 15 * PHASE
    assert [b.phase for b in boundaries].count(FADE) == 7


def test_first_resolution_has_only_a_stable_phase():
    schedule = paper_schedule()
    for seen in (0, 1, PHASE // 2, PHASE - 1):
        stage = schedule_at(schedule, seen)
        assert (stage.resolution, stage.phase, stage.fade_in, stage.stage_index) == (
            4, STABLE, 1.0, 0)


def test_fade_in_rises_linearly_from_zero_to_one_then_holds():
    schedule = paper_schedule()
    fractions = np.linspace(0, 1, 11)[:-1]
    fades = [schedule_at(schedule, PHASE + int(f * PHASE)) for f in fractions]
    assert all(stage.resolution == 8 and stage.phase == FADE for stage in fades)
    np.testing.assert_allclose([stage.fade_in for stage in fades], fractions, atol=1e-12)
    assert schedule_at(schedule, 2 * PHASE - 1).fade_in == pytest.approx(1.0, abs=1e-5)
    stable = schedule_at(schedule, 2 * PHASE)
    assert (stable.resolution, stable.phase, stable.fade_in) == (8, STABLE, 1.0)
    assert schedule_at(schedule, 3 * PHASE).fade_in == 0.0  # next fade starts again at 0


def test_final_resolution_holds_forever_after_the_schedule_ends():
    schedule = paper_schedule()
    end = total_images(schedule)
    last = len(stage_boundaries(schedule)) - 1
    for seen in (end - 1, end, end + 1, 10 * end):
        stage = schedule_at(schedule, seen)
        assert (stage.resolution, stage.phase, stage.fade_in, stage.stage_index) == (
            512, STABLE, 1.0, last)
    assert schedule_at(schedule, -5) == schedule_at(schedule, 0)


@pytest.mark.parametrize("make, expected", [
    (paper_schedule, {4: 128, 8: 128, 16: 64, 32: 32, 64: 16, 128: 8, 256: 4, 512: 2}),
    (karras_schedule, {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4}),
])
def test_batch_size_follows_the_resolution_fading_in(make, expected):
    schedule = make()
    got = {b.resolution: schedule_at(schedule, b.start).batch_size
           for b in stage_boundaries(schedule)}
    assert got == expected
    assert schedule_at(schedule, PHASE + 1).batch_size == expected[8]  # fade to 8 uses 8's


def test_learning_rate_decays_exponentially_with_images_seen():
    schedule = paper_schedule()
    assert compute_learning_rate(schedule, 0) == 0.0075
    assert compute_learning_rate(schedule, 100_000) == pytest.approx(0.0075 * 0.99)
    assert compute_learning_rate(schedule, 250_000) == pytest.approx(0.0075 * 0.99**2.5)
    end = total_images(schedule)
    assert schedule_at(schedule, end).learning_rate == pytest.approx(0.0075 * 0.99**90)
    constant = karras_schedule()
    assert schedule_at(constant, 5_000_000).learning_rate == 0.001


def test_smoke_schedule_is_small_and_stops_at_its_final_resolution():
    schedule = smoke_schedule()
    assert schedule.resolutions == (4, 8, 16, 32)
    assert total_images(schedule) == 7 * schedule.images_per_phase
    assert schedule_at(schedule, 10**9).resolution == 32
    assert smoke_schedule(64).resolutions[-1] == 64
    assert make_schedule("karras") == karras_schedule()


def test_schedule_survives_a_json_round_trip_with_string_keys():
    schedule = paper_schedule()
    payload = json.loads(json.dumps(dataclasses.asdict(schedule)))
    assert "512" in payload["batch_sizes"]  # JSON turned the keys into strings
    assert GrowthSchedule(**payload) == schedule
    assert hash(GrowthSchedule(**payload)) == hash(schedule)


@pytest.mark.parametrize("overrides, message", [
    ({"final_resolution": 500}, "final_resolution must be a power of two"),
    ({"start_resolution": 6}, "start_resolution must be a power of two"),
    ({"start_resolution": 1}, "start_resolution must be a power of two >= 2"),
    ({"start_resolution": 16, "final_resolution": 8}, r"final_resolution \(8\) is smaller"),
    ({"batch_sizes": {4: 128, 8: 64}}, r"no batch size for resolution\(s\) \[16, 32"),
    ({"batch_sizes": {**{4: 0}, 8: 1, 16: 1, 32: 1, 64: 1, 128: 1, 256: 1, 512: 1}},
     "batch_sizes must be positive"),
    ({"images_per_phase": 0}, "images_per_phase and decay_every_images must be positive"),
    ({"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\]"),
])
def test_invalid_schedules_raise_named_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        GrowthSchedule(**overrides)


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown growth schedule 'huge'; choose from paper"):
        make_schedule("huge")


def test_schedule_module_needs_neither_tensorflow_nor_keras():
    tree = ast.parse(Path(gan.schedule.__file__).read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert not modules & {"tensorflow", "keras", "jax", "torch"}
    assert "dataclasses" in modules  # the scan saw the imports
