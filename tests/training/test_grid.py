"""The paper's grid: 8 backbones x 2 resolutions x clinical on/off x 5 folds = 160 commands."""

import shlex

from dermnet.training.cli import main
from dermnet.training.grid import make_grid


def test_paper_grid_has_160_distinct_runs(tmp_path):
    entries = make_grid("paper", tmp_path)
    assert len(entries) == 8 * 2 * 2 * 5 == 160
    assert len({entry.out for entry in entries}) == 160
    combos = {(entry.backbone, entry.resolution, entry.clinical, entry.fold) for entry in entries}
    assert len(combos) == 160
    # The study's eight networks only, not every registered backbone (ResNet18 is not one).
    assert {entry.backbone for entry in entries} == {
        "resnet34", "resnet50", "resnet101", "seresnet50", "vgg16", "vgg19", "efficientnetb5",
        "mobilenet"}


def test_print_commands_lists_every_entry(tmp_path, capsys):
    assert main(["--grid", "paper", "--out", str(tmp_path), "--print-commands"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 160
    first = shlex.split(lines[0])
    assert first[0] == "dermnet-train"
    assert first[first.index("--preset") + 1] == "paper"
    assert {"--clinical", "--no-clinical"} & set(first)
    assert sum("--backbone efficientnetb5" in line for line in lines) == 20
    assert sum("--resolution high" in line for line in lines) == 80


def test_grid_requires_out(capsys):
    assert main(["--grid", "paper", "--print-commands"]) == 1
    assert "--grid needs --out" in capsys.readouterr().err
