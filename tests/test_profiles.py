import json
from pathlib import Path

import pytest

from clipwb.profiles import PROFILES, notebook_params, profile

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_reads_its_profile_from_the_one_table(nb):
    assert set(PROFILES[nb.stem]) == {"quick", "full"}
    assert set(PROFILES[nb.stem]["quick"]) == set(PROFILES[nb.stem]["full"]), "both profiles set the same knobs"
    code = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
    assert "notebook_params(NAME, profile" in code
    assert '"quick":' not in code and "'quick':" not in code, "a profile table inside the notebook"


def test_notebook_params_fill_from_the_profile_and_keep_given_values():
    p = notebook_params("02_po_training", "quick", n_train=None, k=5)
    assert p["n_train"] == PROFILES["02_po_training"]["quick"]["n_train"] and p["k"] == 5
    p["po"]["epochs"] = 99  # a copy: the table is not changed through it
    assert PROFILES["02_po_training"]["quick"]["po"]["epochs"] == 1
    with pytest.raises(ValueError, match="no profile setting 'nope'"):
        notebook_params("02_po_training", "quick", nope=1)
    with pytest.raises(ValueError, match="unknown PO profile 'fast'"):
        profile("po", "fast")
    with pytest.raises(ValueError, match="no profiles for"):
        profile("99_none", "full")
