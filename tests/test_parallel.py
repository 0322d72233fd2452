"""Experiment grids in parallel processes: same results, same order, whatever the number of workers."""
import pytest
import torch

from clipwb.parallel import default_workers, pmap


def _train(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(16, requires_grad=True)
    x = torch.randn(256, 16, generator=g)
    y = x @ torch.randn(16, generator=g)
    opt = torch.optim.SGD([w], lr=0.05)
    for _ in range(20):
        loss = ((x @ w - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return seed, w.detach().clone(), torch.get_num_threads()


def test_parallel_and_sequential_runs_are_identical_and_ordered():
    threads = torch.get_num_threads()
    one = pmap(_train, range(5), workers=1, progress=False)
    two = pmap(_train, range(5), workers=2, progress=False)
    assert [r[0] for r in one] == [r[0] for r in two] == list(range(5))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(one, two))
    assert {r[2] for r in one + two} == {1}  # every run had one thread
    assert torch.get_num_threads() == threads  # the caller's setting is restored
    assert pmap(lambda x: x * x, [], progress=False) == []


def test_workers_from_the_environment(monkeypatch):
    monkeypatch.setenv("CLIPWB_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("CLIPWB_WORKERS", "zero")
    with pytest.raises(ValueError, match="CLIPWB_WORKERS"):
        default_workers()


def test_a_gca_grid_gives_the_same_runs_with_one_or_two_workers(monkeypatch, tmp_path):
    from clipwb.experiments import gca as G

    base = G.gca_config("quick", task="simclr", epochs=1)
    data = G.load_object_data(base.n_train, base.n_test, base.image_size, base.world_seed, progress=False)
    runs = {}
    for w in ("1", "2"):
        monkeypatch.setenv("CLIPWB_WORKERS", w)
        runs[w] = G.method_grid(base, data, ["ince", "gca-ince"], (0.0,), (0,), cache_dir=None, progress=False)
    key = lambda r: (r["config"]["method"], r["linear_probe_top1"], r["alignment"])  # noqa: E731
    assert [key(r) for r in runs["1"]] == [key(r) for r in runs["2"]]


def test_the_distributed_backend_follows_the_training_device(monkeypatch):
    import pytest
    import torch

    from clipwb.models.loading import check_device
    from clipwb.parallel import distributed_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CUDA host training on the CPU
    assert distributed_backend(check_device("cpu")) == "gloo"
    assert distributed_backend("cuda:1") == "cpu:gloo,cuda:nccl"
    with pytest.raises(ValueError, match="cpu or cuda"):
        distributed_backend("meta")
