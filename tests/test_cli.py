"""The CLI's contract for bad input: one line on stderr, exit code 2, no traceback, nothing written."""

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "threshold:1.7"], "lusbench run: error: --strategy 'threshold:1.7': "),
        (["--strategy", "threshold:abc"], "lusbench run: error: --strategy 'threshold:abc': "),
        (["--strategy", "nosuch"], "lusbench run: error: --strategy 'nosuch': unknown name 'nosuch' (known: "),
        (["--strategy", "soft", "--preset", "nosuch"], "lusbench run: error: argument --preset: invalid choice: 'nosuch'"),
        (["--strategy", "soft", "--model", "nosuch"], "lusbench run: error: --model 'nosuch': unknown name"),
        (["--strategy", "soft", "--dataset", "synthetic-lus:patients=0"],
         "lusbench run: error: --dataset 'synthetic-lus:patients=0': "),
        (["--strategy", "soft", "--seeds", "0"], "lusbench run: error: argument --seeds: expected a positive integer"),
        (["--strategy", "soft", "--folds", "1"], "lusbench run: error: --folds must be at least 2, got 1"),
        (["--strategy", "soft", "--eval-threshold", "1.5"], "lusbench run: error: --eval-threshold must be in (0, 1], got 1.5"),
        (["--strategy", "soft", "--strategy", "soft"], "lusbench run: error: --strategy given twice: soft"),
        (["--strategy", "soft", "--task", "sf-ratio", "--task", "sf-ratio:repeats=10"],
         "lusbench run: error: --task sf-ratio and --task sf-ratio:repeats=10 both report 'sf_ratio.mae'"),
        (["--strategy", "soft", "--task", "nosuch"], "lusbench run: error: --task 'nosuch': unknown name 'nosuch' (known: "),
        (["--strategy", "soft", "--reference", "nope"], "lusbench run: error: --reference 'nope': unknown name 'nope'"),
        # A label row is no strategy: refused before any training, not compared with nothing after it.
        (["--strategy", "soft", "--reference", "labels:expert"], "lusbench run: error: --reference 'labels:expert': "),
        (["--strategy", "soft", "--threads", "0"], "lusbench run: error: argument --threads: expected a positive integer"),
        (["--strategy", "soft", "--lr", "0"], "lusbench run: error: argument --lr: expected a positive number, got '0'"),
        (["--strategy", "soft", "--lr", "fast"], "lusbench run: error: argument --lr: expected a number, got 'fast'"),
        (["--strategy", "soft", "--batch-size", "0"], "lusbench run: error: argument --batch-size: expected a positive integer"),
        (["--strategy", "soft", "--weight-decay", "-1"], "lusbench run: error: argument --weight-decay: expected a number >= 0"),
        (["--strategy", "soft", "--patience", "0"], "lusbench run: error: argument --patience: expected a positive integer"),
        (["--strategy", "soft", "--val-fraction", "0.95"],
         "lusbench run: error: argument --val-fraction: expected a fraction in [0, 0.9], got '0.95'"),
        (["--strategy", "soft", "--normalize", "zscore"], "lusbench run: error: argument --normalize: invalid choice: 'zscore'"),
        (["--strategy", "soft", "--preset", "quick", "--min-epochs", "7"],
         "lusbench run: error: training setting min_epochs (7) exceeds epochs (6)"),
        (["--strategy", "soft", "--json", "/nonexistent-dir/lb.json"],
         "lusbench run: error: --json /nonexistent-dir/lb.json: directory /nonexistent-dir does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    proc = run_cli("run", *args, "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert proc.stderr.startswith(message), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "leaderboard.json").exists()


def test_help_and_version():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("run", "leaderboard", "check", "report", "plugins", "data"):
        assert command in proc.stdout
    assert run_cli("--version").stdout.startswith("lusbench ")


def test_no_command_prints_help_and_exits_2():
    proc = run_cli()
    assert proc.returncode == 2 and "usage: lusbench" in proc.stdout


def test_unknown_flag_is_one_line():
    proc = run_cli("plugins", "--nosuch")
    assert proc.returncode == 2
    assert proc.stderr == "lusbench: error: unrecognized arguments: --nosuch (see --help)\n"


def test_corrupt_results_store_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.sqlite").write_text("garbage, not a database")
    for command in ("leaderboard", "report"):
        proc = run_cli(command, "--out", str(run_dir))
        assert proc.returncode == 2
        assert proc.stderr == (f"lusbench {command}: error: {run_dir / 'results.sqlite'} is not a readable lusbench "
                               "results store: file is not a database\n")
    assert sorted(p.name for p in run_dir.iterdir()) == ["results.sqlite"]  # read-only: nothing created


def test_unwritable_path_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    proc = run_cli("data", "export", "synthetic-lus:patients=2,size=32", "--out", str(tmp_path / "file" / "x.npz"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_bug_is_exit_4_with_one_line_and_the_traceback_in_a_file(tmp_path, monkeypatch, capsys):
    # A bug anywhere below the CLI (here: the plugins command dividing by zero) must not exit 1, which
    # CI reads as "regression found".
    import lusbench.cli.plugins
    from lusbench.cli.main import main
    from lusbench.errors import EXIT_INTERNAL

    def broken(args):
        return 1 / 0

    monkeypatch.setattr(lusbench.cli.plugins, "run", broken)
    monkeypatch.setenv("LUSBENCH_TRACEBACK_DIR", str(tmp_path))
    assert main(["plugins"]) == EXIT_INTERNAL == 4
    err = capsys.readouterr().err
    assert err.startswith("lusbench plugins: internal error: ZeroDivisionError: division by zero (a bug in lusbench or "
                          "a plugin; traceback written to ")
    assert err.count("\n") == 1
    [written] = tmp_path.glob("lusbench-error-*.txt")
    assert str(written) in err
    assert "Traceback (most recent call last)" in written.read_text() and "in broken" in written.read_text()
