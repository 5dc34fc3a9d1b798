"""`python -m playground generate ... --branch-step`: the branch's run folder beside the run's,
the same flags give the same pictures, and bad branch flags get one line and exit status 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from playground import cli

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a large red circle on the left on a yellow background"
BRANCH = ("--seed", "3", "--branch-step", "5", "--branch-seed", "7")


def test_branch_step_writes_the_branch_pictures(tiny_assets, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "playground", "generate", PROMPT, *BRANCH, "--assets", str(tiny_assets),
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "branched at step 5 of 12 / token 107 of 256" in proc.stdout
    for name in ("diffusion.png", "autoregressive.png", "diffusion.gif", "comparison.png", "report.json"):
        assert (tmp_path / "branch" / name).is_file(), name
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["branch"] | {"folder": ""} == {"folder": "", "note": "branched at step 5 of 12 / token 107 of 256",
                                                "step": 5, "token": 107, "seed": 7, "prompt": PROMPT}
    branch = json.loads((tmp_path / "branch" / "report.json").read_text())
    assert branch["diffusion"]["steps"] == 7 and branch["autoregressive"]["steps"] == 256 - 107


def test_the_same_branch_flags_give_the_same_pictures(tiny_assets, tmp_path):
    for name, extra in (("a", ()), ("b", ()), ("c", ("--branch-token", "40", "--branch-temperature", "1.5"))):
        assert cli.main(["generate", PROMPT, *BRANCH, *extra, "--assets", str(tiny_assets), "--out", str(tmp_path / name)]) == 0
    for picture in ("diffusion.png", "autoregressive.png"):
        a, b, c = ((tmp_path / n / "branch" / picture).read_bytes() for n in "abc")
        assert a == b
    assert a != c  # the autoregressive branch from token 40, hotter


@pytest.mark.parametrize("flags, message", [
    (("--branch-step", "0"), "between 1 and 11"),
    (("--branch-step", "12"), "between 1 and 11"),
    (("--branch-step", "five"), "must be a number"),
    (("--branch-step", "3", "--branch-token", "256"), "token to branch at must be between 1 and 255"),
    (("--branch-step", "3", "--branch-seed", "-4"), "seed must be between"),
    (("--branch-step", "3", "--branch-temperature", "99"), "temperature must be between"),
    (("--branch-seed", "4",), "need --branch-step"),
])
def test_bad_branch_flags_get_one_line(tiny_assets, tmp_path, capsys, flags, message):
    assert cli.main(["generate", PROMPT, *flags, "--assets", str(tiny_assets), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err
