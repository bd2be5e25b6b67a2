"""Every CLI command, and bad input: exit 2, one line, no traceback, nothing written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jmlp.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_text_shows_the_seed_numbers_and_the_overshoot(capsys):
    code, out, _ = run(capsys, "explain")
    assert code == 0
    for text in ("[1.7, 1.9]", "2.45", "-7.55", "[-12.835, -14.345]", "[-4.53, -5.285]",
                 "[[-9.06, -13.59], [-10.57, -15.855]]", "W1 = [[1.406, 1.559], [1.357, 1.9855]]",
                 "b1 = [0.553, 0.6285]", "W2 = [1.8835, 2.1345]", "b2 = 0.855",
                 "step 2 overshoots: L goes 28.5 -> 334.1"):
        assert text in out, text


def test_explain_json(capsys):
    code, out, _ = run(capsys, "explain", "--json", "--steps", "5")
    w = json.loads(out)
    assert code == 0 and len(w["losses"]) == 5
    p = w["params_after_first_step"]
    np.testing.assert_allclose(p["W1"], [[1.406, 1.559], [1.357, 1.9855]], rtol=1e-12)
    assert p["b1"] == pytest.approx([0.553, 0.6285], rel=1e-12)
    assert p["W2"] == pytest.approx([1.8835, 2.1345], rel=1e-12)
    assert p["b2"] == pytest.approx([0.855], rel=1e-12)


def test_explain_other_inputs(capsys):
    code, out, _ = run(capsys, "explain", "--x", "1,1", "--y", "2", "--lr", "0.01", "--steps", "3", "--json")
    w = json.loads(out)
    assert code == 0 and w["forward"]["z1"] == pytest.approx([0.8, 0.8]) and w["learning_rate"] == 0.01


@pytest.mark.parametrize("name", ["seed", "synthetic", "diabetes", "digits"])
def test_train_each_shipped_config(capsys, tmp_path, name):
    overrides = [] if name == "seed" else ["--set", "train.steps=50"]
    code, out, _ = run(capsys, "train", CONFIGS / f"{name}.toml", "--out", tmp_path, *overrides)
    assert code == 0, out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["data"]["source"] == name
    assert "train" in out and summary["steps"] >= 1
    if name == "seed":
        assert summary["converged"] and summary["train"]["loss"] < 1e-6
    else:
        assert summary["validation"]["loss"] < summary["first_loss"]
    if name == "digits":
        assert 0 <= summary["validation"]["accuracy"] <= 1


def test_train_csv_and_set(capsys, tmp_path):
    rows = ["a,b,price"] + [f"{i},{i % 3},{2 * i + 1}" for i in range(20)]
    (tmp_path / "houses.csv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "houses.toml"
    config.write_text(
        '[data]\nsource = "csv"\npath = "houses.csv"\ntarget = "price"\nstandardize = true\nstandardize_target = true\n'
        '[model]\nsizes = [2, 8, 1]\nactivation = "tanh"\n'
        '[train]\nloss = "mse"\noptimizer = "adam"\nlearning_rate = 0.01\nsteps = 300\n'
    )
    code, out, err = run(capsys, "train", config, "--set", "train.optimizer=sgd", "--set", "train.learning_rate=0.1", "--out", tmp_path / "o")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert code == 0, err
    assert summary["config"]["train"]["optimizer"] == "sgd" and summary["train"]["loss"] < 0.05


BAD = [
    (["explain", "--lr", "0"], "learning_rate must be positive and finite, got 0.0"),
    (["explain", "--lr", "fast"], "expected a number, got 'fast'"),
    (["explain", "--x", "2,a"], "expected comma-separated numbers, got '2,a'"),
    (["explain", "--steps", "0"], "--steps must be a positive integer, got 0"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["train", "missing.toml"], "config file 'missing.toml' does not exist"),
    (["train", "{seed}", "--set", "train.learning_rate=-1"], "[train] learning_rate = -1 is invalid: expected a positive finite number"),
    (["train", "{seed}", "--set", "train.learning_rate=nan"], "[train] learning_rate = nan is invalid"),
    (["train", "{seed}", "--set", "train.optimizer=adma"], "unknown optimizer 'adma'; did you mean 'adam'"),
    (["train", "{seed}", "--set", "train.loss=mse2"], "unknown loss 'mse2'; did you mean 'mse'"),
    (["train", "{seed}", "--set", "train.grad=manul"], "[train] grad = 'manul' is invalid: expected manual or autodiff"),
    (["train", "{seed}", "--set", "model.activation=rleu"], "unknown activation 'rleu'; did you mean 'relu'"),
    (["train", "{seed}", "--set", "model.sizes=[3, 2, 1]"], "[model] sizes[0] = 3 but the seed data has 2 features"),
    (["train", "{seed}", "--set", "train.lr=0.1"], "unknown key in [train] 'lr'"),
    (["train", "{seed}", "--set", "trian.steps=3"], "unknown config section '[trian]'; did you mean '[train]'"),
    (["train", "{seed}", "--set", "steps"], "--set expects section.key=value, got 'steps'"),
    (["train", "{digits}", "--set", "train.loss=mse"], "needs real-valued targets, but digits has class labels"),
    (["train", "{digits}", "--set", "model.sizes=[64, 9]"], "[model] sizes[-1] = 9 but digits has 10 classes"),
    (["train", "{broken}"], "is not valid TOML"),
    (["train", "{nanfile}"], "csv data: x holds a non-finite value nan at row 1"),
    (["train", "{badcell}"], "line 3, column 'a': 'x' is not a number"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, argv, message):
    (tmp_path / "broken.toml").write_text("[data\nsource = 1")
    (tmp_path / "nan.csv").write_text("a,y\n1,2\nnan,3\n4,5\n")
    (tmp_path / "cell.csv").write_text("a,y\n1,2\nx,3\n")
    for name, csv in (("nanfile", "nan.csv"), ("badcell", "cell.csv")):
        (tmp_path / f"{name}.toml").write_text(
            f'[data]\nsource = "csv"\npath = "{csv}"\ntarget = "y"\n[model]\nsizes = [1, 1]\n[train]\nloss = "mse"\nlearning_rate = 0.1\nsteps = 2\n'
        )
    paths = {"seed": CONFIGS / "seed.toml", "digits": CONFIGS / "digits.toml", "broken": tmp_path / "broken.toml",
             "nanfile": tmp_path / "nanfile.toml", "badcell": tmp_path / "badcell.toml"}
    argv = [a.format(**paths) for a in argv] + ["--out", str(tmp_path / "out")] * (argv[0] == "train")
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("jmlp: error: ")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_existing_summary_is_never_overwritten(capsys, tmp_path):
    (tmp_path / "summary.json").write_text("precious")
    code, _, err = run(capsys, "train", CONFIGS / "seed.toml", "--out", tmp_path)
    assert code == 2 and "--force" in err and (tmp_path / "summary.json").read_text() == "precious"
    assert run(capsys, "train", CONFIGS / "seed.toml", "--out", tmp_path, "--force")[0] == 0
    assert json.loads((tmp_path / "summary.json").read_text())["converged"]


def test_console_script_bad_input_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "jmlp", "train", "nope.toml"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "jmlp: error: config file 'nope.toml' does not exist"
    assert "Traceback" not in proc.stderr


def test_seed_config_holds_the_walkthroughs_weights():
    from jmlp.config import load
    from jmlp.walkthrough import PARAMS

    assert load(CONFIGS / "seed.toml")["model"]["params"] == PARAMS
