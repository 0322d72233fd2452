import os
import sys
from pathlib import Path

import pytest

# Offline by construction: no test may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Module- and session-scoped fixtures run before the per-test cache dir below: they get a throwaway one too, so that
# no test writes into the user's clipwb cache.
os.environ["CLIPWB_CACHE"] = __import__("tempfile").mkdtemp(prefix="clipwb-test-cache-")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_benchmark(name: str):
    """The script benchmarks/<name>.py as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own clipwb cache dir, so nothing is written to ~/.cache."""
    monkeypatch.setenv("CLIPWB_CACHE", str(tmp_path / "clipwb-cache"))


@pytest.fixture(scope="session")
def tiny():
    """The shipped pretrained tiny CLIP (loaded once per session)."""
    from clipwb.models import load_model

    return load_model("tiny", "cpu")
