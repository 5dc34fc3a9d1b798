"""`python -m playground generate`: the files of a run, determinism, batches and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from playground import cli
from playground.settings import GenerationSettings

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a large red zorb circle on the left"
FILES = ("diffusion.png", "autoregressive.png", "diffusion.gif", "autoregressive.gif", "comparison.png", "report.json")


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "playground", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def subprocess_run(tiny_assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = run_cli("generate", PROMPT, "--assets", str(tiny_assets), "--out", str(out), "--seed", "7", "--steps", "3")
    return proc, out


def test_generate_writes_every_file(subprocess_run):
    proc, out = subprocess_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "zorb" in proc.stderr  # the note about the unknown word
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("diffusion.png", "autoregressive.png"):
        with Image.open(out / name) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    for name in ("diffusion.gif", "autoregressive.gif"):
        with Image.open(out / name) as im:
            assert im.is_animated and im.n_frames > 1
    with Image.open(out / "comparison.png") as im:
        assert im.width > im.height > 64


def test_report(subprocess_run):
    _, out = subprocess_run
    report = json.loads((out / "report.json").read_text())
    assert report["prompt"] == PROMPT
    assert report["settings"] == GenerationSettings(seed=7, num_inference_steps=3).as_dict()
    assert report["unknown_words"] == ["zorb"] and report["unconditional"] is False
    assert "zorb" in report["message"]
    assert report["diffusion"]["steps"] == 3
    assert report["diffusion"]["network_evaluations"] == 3 + 1
    assert report["autoregressive"]["steps"] == 256
    assert report["autoregressive"]["network_evaluations"] == 256
    for name in ("diffusion", "autoregressive"):
        assert report[name]["seconds"] > 0


def test_same_seed_same_bytes(subprocess_run, tiny_assets, tmp_path):
    """A second run, in this process, gives byte-identical pictures; another seed does not."""
    _, first = subprocess_run
    args = ["generate", PROMPT, "--assets", str(tiny_assets), "--steps", "3"]
    assert cli.main(args + ["--out", str(tmp_path / "again"), "--seed", "7"]) == 0
    assert cli.main(args + ["--out", str(tmp_path / "other"), "--seed", "8"]) == 0
    for name in ("diffusion.png", "autoregressive.png"):
        assert (tmp_path / "again" / name).read_bytes() == (first / name).read_bytes(), name
        assert (tmp_path / "other" / name).read_bytes() != (first / name).read_bytes(), name


def test_prompts_file_loads_models_once(tiny_assets, tmp_path, monkeypatch):
    import playground.engine as engine

    loads = []
    real_load = engine.load_engine
    monkeypatch.setattr(engine, "load_engine", lambda folder=None, **kw: loads.append(folder) or real_load(folder, **kw))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a small blue star at the top\n\n   \nan orange heart\n", encoding="utf-8")
    out = tmp_path / "batch"
    rc = cli.main(["generate", "--prompts-file", str(prompts), "--assets", str(tiny_assets), "--out", str(out),
                   "--steps", "2"])
    assert rc == 0
    assert len(loads) == 1
    assert sorted(p.name for p in out.iterdir()) == ["0000", "0001"]
    for sub, prompt in (("0000", "a small blue star at the top"), ("0001", "an orange heart")):
        for name in FILES:
            assert (out / sub / name).is_file()
        assert json.loads((out / sub / "report.json").read_text())["prompt"] == prompt


def test_empty_prompt_is_unconditional(tiny_assets, tmp_path, capsys):
    assert cli.main(["generate", "", "--assets", str(tiny_assets), "--out", str(tmp_path), "--steps", "2"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["unconditional"] is True and report["unknown_words"] == []
    assert "unconditional" in capsys.readouterr().err


BAD_INPUTS = {
    "steps": ["--steps", "1000"],
    "steps-not-a-number": ["--steps", "many"],
    "top-p": ["--top-p", "5"],
    "regional": ["--regional", "2"],
    "scheduler": ["--scheduler", "nope"],
    "seed": ["--seed", "-1"],
    "temperature-nan": ["--temperature", "nan"],
    "long-prompt": ["x" * 10_000],
    "missing-prompts-file": ["--prompts-file", "/nonexistent/prompts.txt"],
    "prompt-and-file": ["a red circle", "--prompts-file", "/nonexistent/prompts.txt"],
    "missing-model-folder": ["--assets", "/nonexistent/assets"],
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(name, tiny_assets, tmp_path, capsys):
    args = BAD_INPUTS[name]
    if "--assets" not in args:
        args = args + ["--assets", str(tiny_assets)]
    rc = cli.main(["generate", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_empty_prompts_file(tmp_path, tiny_assets, capsys):
    prompts = tmp_path / "empty.txt"
    prompts.write_text("\n  \n", encoding="utf-8")
    assert cli.main(["generate", "--prompts-file", str(prompts), "--assets", str(tiny_assets)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_bad_input_in_a_real_process(tmp_path):
    proc = run_cli("generate", "a red circle", "--assets", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_evaluate_takes_the_sampling_settings(tiny_assets, tmp_path, capsys):
    from playground.evaluation import evaluate

    out = tmp_path / "evaluation.json"
    evaluate.main(["--assets", str(tiny_assets), "--seen", "2", "--held-out", "1", "--paradigm", "autoregressive",
                   "--temperature", "0.6", "--ar-guidance-scale", "3", "--autoencoder-scenes", "0",
                   "--out", str(out), "--examples", str(tmp_path / "examples"), "--threads", "1"])
    report = json.loads(out.read_text())
    assert report["settings"]["temperature"] == 0.6 and report["settings"]["ar_guidance_scale"] == 3.0
    assert report["autoregressive/seen"]["n"] == 2 and report["autoregressive/held_out"]["n"] == 1
    assert "autoencoder" not in report and "diffusion/seen" not in report
    seen = report["autoregressive/seen"]
    low, high = seen["interval_95"]  # the Wilson interval holds the share, inside 0..1
    assert 0.0 <= low <= seen["adherence"] <= high <= 1.0 and high - low > 0.3  # 2 prompts: wide
    assert set(seen["part_failures"]) == {"colour", "shape", "size", "place", "background"}
    assert all(0 <= v <= 2 * 2 for v in seen["part_failures"].values())  # at most two objects a prompt
    assert report["prompt_seeds"] == {"seen": 123, "held_out": 456}
    evaluate.main(["--assets", str(tiny_assets), "--seen", "2", "--held-out", "0", "--paradigm", "diffusion",
                   "--validation", "--autoencoder-scenes", "0", "--out", str(out),
                   "--examples", str(tmp_path / "examples"), "--threads", "1"])
    validation = json.loads(out.read_text())
    assert validation["prompt_seeds"] == {"seen": 789, "held_out": 1011}
    assert "diffusion/held_out" not in validation  # no held-out prompts asked for
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--assets", str(tiny_assets), "--temperature", "9"])
    assert exit_info.value.code == 2 and "temperature must be between 0.0 and 5.0" in capsys.readouterr().err


def test_benchmark_times_previews_in_this_thread_and_as_the_page_runs_the_samplers(tiny_assets, capsys):
    import re

    from playground.evaluation import benchmark

    benchmark.main(["--assets", str(tiny_assets), "--repeats", "1", "--threads", "1"])
    out = capsys.readouterr().out
    same_thread, _, in_worker = out.partition("in a worker process")
    pattern = r"(diffusion|autoregressive) +no previews (\d+\.\d+) s +previews every 50 ms (\d+\.\d+) s \((\d+) previews"
    for part in (same_thread, in_worker):
        found = {kind: (float(plain), float(live), int(n)) for kind, plain, live, n in re.findall(pattern, part)}
        assert set(found) == {"diffusion", "autoregressive"}, part
        assert all(plain > 0 and live > 0 and n >= 1 for plain, live, n in found.values()), found
    assert re.search(r"KV cache: .* (\d+\.\d)x speed-up", same_thread)


def test_paired_ratios_alternate_which_goes_first_and_leave_out_the_warm_up_pair():
    from playground.evaluation.benchmark import paired_ratios

    calls = []
    seconds = {"a": iter([9.0, 1.2, 1.1, 1.5]), "b": iter([9.0, 1.0, 1.0, 1.0])}

    def timer(name):
        def run():
            calls.append(name)
            return next(seconds[name])
        return run

    r = paired_ratios(timer("a"), timer("b"), pairs=3)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert r["pairs"] == 3 and r["a"] == pytest.approx(1.2) and r["b"] == pytest.approx(1.0)
    assert r["ratio"] == pytest.approx(1.2)  # ratios 1.1, 1.2, 1.5: the warm-up pair's 9 / 9 left out
    assert r["quartiles"][0] <= 1.2 <= r["quartiles"][1]


def test_benchmark_compares_two_model_folders_picture_by_picture(tiny_assets, capsys):
    import re

    from playground.evaluation import benchmark

    benchmark.main(["--assets", str(tiny_assets), "--compare", str(tiny_assets), "--pairs", "2", "--threads", "1"])
    out = capsys.readouterr().out
    found = re.findall(r"(diffusion|autoregressive) +these (\d+\.\d+) s, those (\d+\.\d+) s .*paired ratio ([+-]\d+\.\d) %", out)
    assert [kind for kind, *_ in found] == ["diffusion", "autoregressive"], out
    assert all(float(a) > 0 and float(b) > 0 for _, a, b, _ in found)
    assert "previews every 50 ms" not in out  # the comparison alone
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--assets", str(tiny_assets), "--compare", str(tiny_assets), "--pairs", "0"])
    assert exit_info.value.code == 2 and "--pairs must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "edits", "benchmark"])
def test_measuring_commands_report_a_missing_model_folder_in_one_line(command, tmp_path, capsys):
    import importlib

    (tmp_path / "assets").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"playground.evaluation.{command}").main(["--assets", str(tmp_path / "assets"), "--threads", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "incomplete" in err and "python -m playground.training.train" in err
    assert "Traceback" not in err
