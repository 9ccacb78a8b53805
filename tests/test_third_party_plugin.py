"""A plugin shipped as its own package works without any change to the core.

The example package in ``examples/plugin_example`` is installed with pip into
a temporary folder, which subprocesses put on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from diffuspeech import registry
from diffuspeech.errors import RecipeError
from diffuspeech.recipe import load_recipe
from diffuspeech.registry import check_plugin_class
from diffuspeech.system import compose

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin_example"

COMPOSE_SCRIPT = textwrap.dedent(
    """\
    import json

    import torch

    from diffuspeech.recipe import load_recipe
    from diffuspeech.registry import get_registry
    from diffuspeech.system import compose
    from diffuspeech.vocabulary import SPEECH, TEXT

    overrides = ["noise_schedule.speech.name=sigmoid", "noise_schedule.speech.args={steepness: 4}"]
    system = compose(load_recipe("tiny", overrides))
    speech, text = system.schedules[SPEECH], system.schedules[TEXT]
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    print(json.dumps({
        "speech": f"{type(speech).__module__}:{type(speech).__name__}",
        "text": type(text).__name__,
        "source": get_registry().get("noise_schedule", "sigmoid").source,
        "gamma": speech.mask_probability(t).tolist(),
        "weight": speech.loss_weight(t[1:]).tolist(),
    }))
    """
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install a copy of the example package with pip into a fresh folder and return that folder."""
    # A copy keeps pip's build folder out of the source tree.
    source = tmp_path_factory.mktemp("source") / "plugin_example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return target


def run_python(site: Path, cwd: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the current interpreter with ``site`` first on PYTHONPATH."""
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pip_installs_entry_point(site: Path) -> None:
    """The installed distribution declares noise_schedule.sigmoid in diffuspeech's group."""
    entry_points = (site / "diffuspeech_example_schedule-0.1.0.dist-info" / "entry_points.txt").read_text()

    assert "[diffuspeech.plugins]" in entry_points
    assert "noise_schedule.sigmoid = diffuspeech_example_schedule.sigmoid:SigmoidSchedule" in entry_points


def test_plugins_command_lists_it(site: Path, tmp_path: Path) -> None:
    """`diffuspeech plugins` lists the example under noise_schedule with its description."""
    result = run_python(site, tmp_path, "-m", "diffuspeech.cli", "plugins")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    section = lines[lines.index("noise_schedule:") + 1 : lines.index("sampler:")]
    assert any(line.split()[0] == "sigmoid" and "logistic curve" in line for line in section)


def test_recipe_composes_with_it(site: Path, tmp_path: Path) -> None:
    """A recipe that names the example composes, and the built schedule has the example's values."""
    result = run_python(site, tmp_path, "-c", COMPOSE_SCRIPT)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["speech"] == "diffuspeech_example_schedule.sigmoid:SigmoidSchedule"
    assert report["text"] == "LinearSchedule"
    assert report["source"].startswith("entry point noise_schedule.sigmoid = ")
    # With k = 4: s(-2) = 0.11920, so gamma(1/2) = 1/2 and the weight is 4 * 0.25 / (0.5 - 0.11920) at t = 1/2,
    # and 4 * s(2) * s(-2) / (s(2) - s(-2)) at t = 1.
    assert report["gamma"] == pytest.approx([0.0, 0.5, 1.0], abs=1e-12)
    assert report["weight"] == pytest.approx([2.626071, 0.551441], rel=1e-5)


def test_invalid_argument_named(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's own argument check surfaces as a RecipeError naming the recipe key."""
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_registry", registry.Registry())
    recipe = load_recipe("tiny", ["noise_schedule.text.name=sigmoid", "noise_schedule.text.args={steepness: -1}"])

    with pytest.raises(
        RecipeError, match=r"noise_schedule\.text: invalid arguments for SigmoidSchedule: steepness must be a positive"
    ):
        compose(recipe)


def test_schedule_contract(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example passes the registry's class check and meets the noise schedule contract."""
    monkeypatch.syspath_prepend(str(site))
    from diffuspeech_example_schedule import SigmoidSchedule

    cls = check_plugin_class("noise_schedule", "sigmoid", SigmoidSchedule, "test")
    schedule = cls(steepness=7.5)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    step = 1e-6
    derivative = (schedule.mask_probability(t + step) - schedule.mask_probability(t - step)) / (2 * step)

    endpoints = schedule.mask_probability(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert endpoints.tolist() == [0.0, 1.0]
    assert bool((schedule.mask_probability(t).diff() > 0).all())
    torch.testing.assert_close(schedule.loss_weight(t), derivative / schedule.mask_probability(t), rtol=1e-6, atol=0.0)
