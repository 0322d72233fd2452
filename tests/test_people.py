import numpy as np
import pytest
from PIL import Image

from clipwb.data.people import load_person_folder
from clipwb.world import World


def _folder(root, n=24):
    w = World()
    b = w.generate(n, "test", "portrait")
    root.mkdir()
    rows = []
    for i, (img, r) in enumerate(zip(b.images, b.records)):
        Image.fromarray(img).save(root / f"{i}.png")
        rows.append(f"{i}.png,{r['gender']},{r['occupation']}\n")
    (root / "labels.csv").write_text("file,gender,occupation\n" + "".join(rows))
    return b


def test_person_folder_and_its_bias_metrics(tmp_path, tiny):
    from clipwb.experiments.concepts import person_bias
    from clipwb.world.portraits import STEREOTYPE

    b = _folder(tmp_path / "faces")
    (tmp_path / "faces" / "0.png").write_bytes(b"not a png")
    data = load_person_folder(tmp_path / "faces", size=64)
    assert data["images"].shape == (23, 64, 64, 3) and len(data["skipped_corrupt"]) == 1
    assert data["classes"]["gender"] == ("man", "woman")
    names = [data["classes"]["occupation"][i] for i in data["labels"]["occupation"]]
    assert names == [r["occupation"] for r in b.records[1:]]
    m = person_bias(tiny, data, stereotype=STEREOTYPE)
    assert m["gender_top1"] > 0.8 and m["occupation_top1"] > 0.8 and 0 <= m["occupation_gap"] <= 1
    assert 0 <= m["max_skew_at_k"] <= np.log(2) + 1e-9


def test_person_folder_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        load_person_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("file,sex\nx.png,f\n")
    with pytest.raises(ValueError, match="lacks columns"):
        load_person_folder(tmp_path)
