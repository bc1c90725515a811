"""MIGU's mechanisms on tiny models: exactly the rows below each layer's magnitude quantile get no gradient, the
magnitudes are summed over the micro-batches of one step, the first task is unmasked, nothing but the targets'
weights is touched, the LoRA variant masks LoRA-B rows from the base layer's output, the random ablation."""
import pytest
import torch

from clpet.methods.migu import magnitude_mask, random_mask
from tests.method_fixtures import make_lm_method

FAST_KEYS = ["method.optim.epochs=1", "method.optim.batch_size=4", "method.optim.max_grad_norm=null"]


def test_magnitude_mask_keeps_units_at_or_above_the_quantile():
    m = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 6.0, 7.0, 8.0, 9.0])
    keep = magnitude_mask(m, 0.7)
    assert keep.tolist() == [m_ >= torch.quantile(m, 0.7) for m_ in m.tolist()] and int(keep.sum()) == 3
    g = torch.Generator().manual_seed(0)
    assert int((~random_mask(10, 0.7, g)).sum()) == 7


def watch_updates(monkeypatch, m):
    """Record, at each optimizer step, every parameter's gradient before and after MIGU's masking, the
    magnitudes it used, and the number of forwards since the previous step; also sum every target's outputs
    independently of MIGU's hooks."""
    steps, own, forwards = [], {}, [0]
    for name, module, _ in m.targets:
        def hook(mod, inp, out, name=name):
            if m.training and torch.is_grad_enabled():
                y = out.detach().float().abs().reshape(-1, out.shape[-1]).sum(0)
                own[name] = own.get(name, 0) + y
                forwards[0] += name == m.targets[0][0]
        module.register_forward_hook(hook)
    real = type(m).before_update

    def spy(self):
        before = {n: p.grad.clone() for n, p in self.named_parameters() if p.grad is not None}
        mags = {k: v.clone() for k, v in self.magnitudes.items()}
        real(self)
        after = {n: p.grad.clone() for n, p in self.named_parameters() if p.grad is not None}
        steps.append({"before": before, "after": after, "mags": mags, "own": dict(own), "forwards": forwards[0]})
        own.clear()
        forwards[0] = 0

    monkeypatch.setattr(type(m), "before_update", spy)
    return steps


def names_of(m, weights):
    ids = {id(w) for w in weights}
    return {n for n, p in m.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("accum", [1, 2])
def test_rows_below_the_quantile_get_no_gradient_and_nothing_else_changes(monkeypatch, accum):
    m, scenario = make_lm_method("migu", *FAST_KEYS, f"method.optim.grad_accum_steps={accum}")
    steps = watch_updates(monkeypatch, m)
    m.learn_experience(scenario[0])
    first = len(steps)
    assert first > 0 and all(not s["mags"] for s in steps)  # first task: no magnitudes, no mask
    assert all(torch.equal(s["before"][k], s["after"][k]) for s in steps for k in s["before"])
    m.learn_experience(scenario[1])
    masked = names_of(m, [w for _, _, w in m.targets])
    assert masked and all(n.endswith(".weight") for n in masked)
    check_exact_masks(m, steps[first:], accum)
    assert 0.6 < m.diagnostics(None)["migu_masked_fraction"] < 0.75


def check_exact_masks(m, steps, accum=1):
    """Every step: the targets' gradient rows below the quantile of their summed magnitudes are zero, the others
    and every other gradient unchanged."""
    masked = names_of(m, [w for _, _, w in m.targets])
    by_weight = {names_of(m, [w]).pop(): name for name, _, w in m.targets}
    assert steps
    for s in steps:
        if accum == 2 and s["forwards"] == 1:
            continue  # an epoch's last, incomplete group
        assert s["forwards"] == accum  # one step's magnitudes come from all its micro-batches
        for pname, g in s["before"].items():
            if pname not in masked:
                assert torch.equal(g, s["after"][pname]), pname  # embeddings, norms, untargeted: untouched
                continue
            mag = s["mags"][by_weight[pname]]
            torch.testing.assert_close(mag, s["own"][by_weight[pname]])  # the summed magnitudes of the step
            keep = mag >= torch.quantile(mag, 0.7)
            assert torch.equal(s["after"][pname][~keep], torch.zeros_like(g[~keep]))
            assert torch.equal(s["after"][pname][keep], g[keep])


def test_embedding_tied_head_is_not_a_target():
    m, _ = make_lm_method("migu", *FAST_KEYS)
    embeddings = {id(e.weight) for e in m.backbone.model.modules() if isinstance(e, torch.nn.Embedding)}
    assert not embeddings & {id(w) for _, _, w in m.targets}
    assert {type(mod).__name__ for _, mod, _ in m.targets} == {"Linear"}


def test_lora_variant_masks_lora_b_rows_from_the_base_layer_output(monkeypatch):
    m, scenario = make_lm_method("migu", *FAST_KEYS, "method.variant=lora", "method.lora.rank=2")
    assert m.targets and all(w.shape[1] == 2 for _, _, w in m.targets)  # LoRA-B: (out, r)
    assert all(type(mod).__name__ == "Linear" and not hasattr(mod, "lora_B") for _, mod, _ in m.targets)
    steps = watch_updates(monkeypatch, m)
    m.learn_experience(scenario[0])
    first = len(steps)
    m.learn_experience(scenario[1])
    lora_b = names_of(m, [w for _, _, w in m.targets])
    assert all("lora_B" in n for n in lora_b)
    assert all("lora_A" in n for s in steps[first:] for n in s["before"] if n not in lora_b)  # LoRA-A: unmasked
    check_exact_masks(m, steps[first:])  # LoRA-B rows by the quantile of the base layer's output magnitudes


def test_random_update_masks_a_random_fraction(monkeypatch):
    m, scenario = make_lm_method("migu", *FAST_KEYS, "method.random_update=true")
    m.learn_experience(scenario[0])
    m.learn_experience(scenario[1])
    assert m.diagnostics(None)["migu_masked_fraction"] == pytest.approx(0.7, abs=0.1)


@pytest.mark.parametrize("bad", ["method.variant=prefix", "method.threshold=1.0", "method.threshold=-0.1"])
def test_bad_migu_values_are_refused(bad):
    with pytest.raises(ValueError, match="variant|threshold"):
        make_lm_method("migu", bad)


def _ddp_rank(rank, world, port, out):
    import torch.distributed as dist

    from clpet.methods.migu import MIGU

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        weight = torch.nn.Parameter(torch.zeros(10, 3))
        weight.grad = torch.ones(10, 3)
        m = MIGU.__new__(MIGU)  # only the masking state: one target, this rank's magnitudes
        torch.nn.Module.__init__(m)
        object.__setattr__(m, "cfg", type("C", (), {"random_update": False, "threshold": 0.7})())
        m.task, m.targets, m._masked_rows = 1, [("lin", None, weight)], [0, 0]
        m.magnitudes = {"lin": torch.arange(10, dtype=torch.float32) if rank == 0 else torch.arange(10, 0, -1).float() * 3}
        m.before_update()
        out[rank] = (weight.grad[:, 0] != 0).tolist()
    finally:
        dist.destroy_process_group()


def test_under_ddp_the_mask_comes_from_the_magnitudes_averaged_across_ranks():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_ddp_rank, args=(2, port, out), nprocs=2, join=True)
    mean = (torch.arange(10, dtype=torch.float32) + torch.arange(10, 0, -1).float() * 3) / 2
    expected = (mean >= torch.quantile(mean, 0.7)).tolist()
    assert out[0] == out[1] == expected  # every rank applies the same mask, that of the mean magnitudes
