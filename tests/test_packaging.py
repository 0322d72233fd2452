import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _norm(req: str) -> str:
    name, _, ver = req.partition("==")
    return re.sub(r"[-_.]+", "-", name.strip().lower()) + "==" + ver.strip()


def test_environment_yml_agrees_with_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    want = {_norm(r) for r in py["dependencies"] + py["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = {_norm(r) for r in pip if not r.startswith("-e")}
    assert have == want
    assert all("==" in r for r in py["dependencies"]), "pin every dependency"


def test_readme_gives_the_two_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/report.sh" in readme and "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_shipped_tiny_config_is_package_data():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = py["tool"]["setuptools"]["package-data"]["clipwb.models"]
    assert "configs/*.json" in data and "weights/*.safetensors" in data
    assert "siglip" not in " ".join(p.name for p in (ROOT / "clipwb/models/configs").iterdir()).lower()


def test_the_layering_contract_holds():
    """import-linter's layers contract of pyproject.toml: no module imports a layer above its own (no cycle)."""
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("lint-imports")
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed
    r = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "1 kept, 0 broken" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_the_layering_contract_catches_an_upward_import(tmp_path):
    """The contract is live: a copy of the package in which the world imports training breaks it."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / "clipwb", tmp_path / "clipwb", ignore=shutil.ignore_patterns("weights", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    gen = tmp_path / "clipwb" / "world" / "generator.py"
    gen.write_text(gen.read_text() + "\n\ndef _upward():\n    from ..training import pretrain  # noqa: F401\n")
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([str(exe)], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode != 0 and "clipwb.world.generator -> clipwb.training" in r.stdout, r.stdout[-3000:]


def test_readme_architecture_is_the_contracts_picture():
    """The README's architecture block lists the layers of the import-linter contract, top to bottom."""
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = py["tool"]["importlinter"]["contracts"][0]["layers"]
    want = [" | ".join(m.removeprefix("clipwb.") for m in layer.split(" | ")) for layer in layers]
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```\ncli ", 1)[1].split("```", 1)[0]
    got = ["cli"] + [line.split("  ")[0].strip() for line in block.splitlines()[1:]
                     if line.strip() and not line.startswith(" ")]  # indented lines continue a description
    assert got == [w for w in want if w != "__main__"]
