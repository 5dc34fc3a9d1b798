"""The shipped recipe (playground/training/recipe.py): its runs as data, and the runner on tiny runs."""

import json
import subprocess

import pytest
import torch

from playground.training import recipe, train
from playground.training.recipe import SHIPPED, Recipe, RecipeError, Run, command, run_recipe


def options(run: Run):
    return train.build_parser().parse_args(command(run, 1, "cpu", recipe.RECIPE_RUNS)[3:])


def test_every_shipped_run_is_a_valid_train_command_from_scratch_with_muon():
    """Each run parses as `python -m playground.training.train` options: the autoencoder (no decoder
    fine-tune), the training set encoded, then each generator in one run from scratch, all
    with Muon; the step counts are the model card's (assets/README.md)."""
    runs = [*SHIPPED.prepare, *(r for _, chain in SHIPPED.chains for r in chain)]
    assert len({r.name for r in runs}) == len(runs)
    steps = {}
    for run in runs:
        args = options(run)
        assert args.stage in train.STAGES and args.threads == 1 and args.checkpoints.endswith(run.name)
        assert not args.ar_init and not args.diffusion_init and not args.ae_init and args.stop_at is None
        assert {"autoencoder": args.ae_optimizer, "diffusion": args.diffusion_optimizer,
                "autoregressive": args.ar_optimizer, "masked": args.masked_optimizer}.get(args.stage, "muon") == "muon", run.name
        steps[args.stage] = {"autoregressive": args.ar_steps, "diffusion": args.diffusion_steps, "masked": args.masked_steps,
                             "autoencoder": args.ae_steps, "encode": 0}[args.stage]
    assert steps == {"autoencoder": 1500, "encode": 0, "diffusion": 4400, "autoregressive": 6500, "masked": 4200}
    assert [options(r).stage for r in SHIPPED.prepare] == ["autoencoder", "encode"]  # what the chains read, made before them
    sizes = {options(r).dataset_size for _, chain in SHIPPED.chains for r in chain}
    assert sizes == {options(r).dataset_size for r in SHIPPED.prepare if options(r).stage == "encode"}


def test_train_without_options_runs_the_shipped_recipe_and_refuses_options_it_would_ignore(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(recipe, "run_recipe", lambda **kw: calls.append(kw))
    train.main([])
    train.main(["--threads", "4", "--device", "cpu"])
    shipped = {"recipe": SHIPPED, "folder": recipe.RECIPE_RUNS}
    assert calls == [{**shipped, "threads": 2, "device": "auto"}, {**shipped, "threads": 4, "device": "cpu"}]
    with pytest.raises(SystemExit) as e:
        train.main(["--stage", "shipped", "--ar-steps", "5"])
    assert e.value.code == 2 and "--ar-steps" in capsys.readouterr().err

    def fail(**kw):
        raise RecipeError("run x failed (exit code 1); its output is in runs/recipe/x.log")

    monkeypatch.setattr(recipe, "run_recipe", fail)
    with pytest.raises(SystemExit) as e:
        train.main([])
    assert "run x failed" in str(e.value.code)


TINY = ("--dataset-size", "48", "--test-size", "16", "--ae-steps", "2", "--ae-batch", "4", "--ae-channels", "8", "16", "16",
        "--decoder-steps", "1", "--decoder-batch", "4", "--diffusion-steps", "1", "--diffusion-batch", "4", "--ar-batch", "2")


def tiny(name: str, *args: str, checkpoints: str = "") -> Run:
    return Run(name, (*args, *TINY), checkpoints)


def test_the_runner_prepares_runs_the_chains_resumes_and_skips_what_is_done(tmp_path, monkeypatch):
    """A tiny recipe of the runner's every kind of run, each run a real `python -m playground.training.train`
    process: every run finishes once; one that shares a checkpoint folder resumes the run before
    it; one continued from assets/ keeps a checkpoint folder of its own; a second call runs nothing."""
    from playground.engine import load_engine

    monkeypatch.chdir(tmp_path)
    small = Recipe(
        prepare=(tiny("ae", "--stage", "autoencoder"), tiny("enc", "--stage", "encode")),
        chains=(
            ("one", (tiny("diff", "--stage", "diffusion"), tiny("dec", "--stage", "decoder"))),
            ("two", (tiny("ar", "--stage", "autoregressive", "--ar-steps", "2", checkpoints="ar"),
                     tiny("ar-b", "--stage", "autoregressive", "--ar-steps", "3", checkpoints="ar"),
                     tiny("ar-2", "--stage", "autoregressive", "--ar-init", "assets/transformer", "--ar-steps", "1"))),
        ),
    )
    run_recipe(small, threads=2, device="cpu")
    folder = tmp_path / "runs" / "recipe"
    for name in ("ae", "enc", "diff", "dec", "ar", "ar-b", "ar-2"):
        assert json.loads((folder / f"{name}.done").read_text())["minutes"] > 0
    assert torch.load(folder / "ar" / "autoregressive" / "checkpoint.pt", weights_only=True)["step"] == 3
    assert torch.load(folder / "ar-2" / "autoregressive" / "checkpoint.pt", weights_only=True)["step"] == 1
    log = (folder / "two.log").read_text()
    assert "resumed" in log and "--threads 1" in log  # two chains on two threads: one each
    assert "--threads 2" in (folder / "prepare.log").read_text()
    assert (tmp_path / "runs" / "encoded-48-seed0.safetensors").is_file()
    engine = load_engine(tmp_path / "assets")
    assert engine.autoregressive.transformer.config.prompt_order == "place_first"

    def no_process(*a, **kw):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(subprocess, "run", no_process)
    run_recipe(small, threads=2, device="cpu")
    # a run of the same name with other options (another recipe's) is not taken as finished
    changed = Recipe(prepare=(tiny("ae", "--stage", "autoencoder", "--ae-optimizer", "muon"),), chains=small.chains)
    with pytest.raises(RecipeError, match=r"ae\.done was left by another command .*--stage autoencoder --dataset-size 48"):
        run_recipe(changed, threads=2, device="cpu")


def test_a_failing_run_stops_its_chain_with_its_name_and_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    broken = Recipe(prepare=(), chains=(("only", (Run("bad", ("--stage", "diffusion", "--two-object-share", "2")),
                                                  Run("never", ("--stage", "encode")))),))
    with pytest.raises(RecipeError, match=r"run bad failed \(exit code 2\).*only\.log"):
        run_recipe(broken, threads=1, device="cpu")
    folder = tmp_path / "runs" / "recipe"
    assert "--two-object-share must lie between 0 and 1" in (folder / "only.log").read_text()
    assert not (folder / "bad.done").exists() and not (folder / "never.done").exists()
