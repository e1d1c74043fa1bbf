"""The `obliviate` command end to end on the tiny benchmark, and its one-line errors."""

from __future__ import annotations

import pytest

from obliviate.cli import main


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return ["--runs-dir", str(root / "runs"), "--cache-dir", str(root / "cache")]


def test_run_show_report_end_to_end(dirs, capsys, tmp_path):
    assert main(["-q", "run", "--bench", "tiny", "--method", "grad-ascent", "--set", "lr=0.01",
                 "--audits", "accuracy", *dirs]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "grad-ascent" in out and "oracle" in out
    runs = dirs[1]
    run_dir = next(__import__("pathlib").Path(runs, "tiny", "grad-ascent").iterdir())
    assert main(["show", str(run_dir)]) == 0
    assert "forget" in capsys.readouterr().out
    html = tmp_path / "r.html"
    assert main(["report", runs, "--html", str(html)]) == 0
    assert html.read_text().count("<table") >= 1
    # the same run again is refused without --reuse, and accepted with it
    again = ["-q", "run", "--bench", "tiny", "--method", "grad-ascent", "--set", "lr=0.01",
             "--audits", "accuracy", *dirs]  # fmt: skip
    assert main(again) == 1
    assert "already exists" in capsys.readouterr().err
    assert main([*again, "--reuse"]) == 0


def test_config_file_and_bad_input(dirs, capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'benchmark = "tiny"\nmethod = "finetune"\naudits = ["accuracy"]\n[params]\nepochs = 0.5\n'
    )
    assert main(["-q", "run", "--config", str(cfg), *dirs]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('benchmrk = "tiny"\n')
    assert main(["-q", "run", "--config", str(bad), *dirs]) == 2
    assert "Did you mean 'benchmark'" in capsys.readouterr().err
    assert main(["-q", "run", "--bench", "tiny", "--method", "fine-tune", *dirs]) == 2
    assert "Did you mean 'finetune'" in capsys.readouterr().err
    assert main(["-q", "run", "--bench", "tiny", "--method", "finetune", "--set", "lr", *dirs]) == 2
    assert "key=value" in capsys.readouterr().err


def test_list_verbose_prints_hyperparameters(capsys):
    assert main(["list", "methods", "-v"]) == 0
    out = capsys.readouterr().out
    assert "grad-ascent" in out and "lr (float) = 0.0002" in out


def test_config_file_takes_nested_option_tables(tmp_path):
    # a list-of-settings option (finetune-recovery's fine-tunes) written as TOML tables
    from obliviate.cli import _load_config
    from obliviate.registry import AUDITS

    cfg = tmp_path / "ft.toml"
    cfg.write_text(
        'benchmark = "t2i-tiny"\nmethod = "esd"\n'
        '[[audit_params.finetune-recovery.configs]]\nname = "a"\nlr = 1e-3\n'
        '[[audit_params.finetune-recovery.configs]]\nname = "b"\noptimizer = "sgd"\n'
    )
    params = _load_config(str(cfg))["audit_params"]["finetune-recovery"]
    audit = AUDITS.build("finetune-recovery", params)
    assert [(c.name, c.optimizer, c.lr) for c in audit.configs] == [
        ("a", "adamw", 1e-3),
        ("b", "sgd", 1e-4),
    ]
    cfg.write_text('[[audit_params.finetune-recovery.configs]]\nname = "a"\nlr = "fast"\n')
    with pytest.raises(TypeError, match="configs: an entry .* expected a number"):
        AUDITS.build(
            "finetune-recovery", _load_config(str(cfg))["audit_params"]["finetune-recovery"]
        )
