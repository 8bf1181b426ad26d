"""The README's commands stay true: CI runs its test command; the main job runs."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _readme_commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_has_two_commands_and_ci_runs_the_test_command():
    main_cmd, test_cmd = _readme_commands()
    assert "python -m experiments." in main_cmd
    assert "pytest" in test_cmd
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    install_and_test = test_cmd.split("&& ", 2)[-1]  # after creating/activating the venv
    assert install_and_test in ci


def test_demo_pulse(tmp_path):
    from experiments import demo

    cfg = demo.get_config()
    cfg = demo.config_lib.apply_overrides(cfg, [("train.steps", "3"), ("workdir", str(tmp_path))])
    result = demo.main(cfg)
    assert result["checkpoint_bitwise_equal"] is True
    assert result["hf_roundtrip_max_diff"] == 0.0
    assert result["loss_after"] < result["loss_before"]
    assert os.path.exists(tmp_path / "hf_model" / "config.json")


def test_unknown_flag_exits_with_the_valid_keys():
    proc = subprocess.run([sys.executable, "-m", "experiments.demo", "--config.trian.steps=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown config key 'trian.steps'" in proc.stderr
    assert "'train'" in proc.stderr
