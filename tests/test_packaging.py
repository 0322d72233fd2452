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
