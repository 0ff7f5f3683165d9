"Cautious optimizers (Liang et al. 2024): C-AdamW, C-Lion and C-SGD against references written from the paper"
import pytest, torch
import optcb
from _util import make_params, clone_params, grad_stream, run, max_errs, STEPS, slow

def masked(u, g):
    "The paper's mask: u where u·g > 0, rescaled by the share kept (its mean, at least 1e-3)"
    phi = (u * g > 0).double()
    return u * phi / phi.mean().clamp(min=1e-3)

def reference(kind, params, grads, steps, lr, wd=0., b1=0.9, b2=0.99, eps=1e-5, mom2=0.99):
    """C-AdamW, C-Lion, C-SGD (heavy ball) in float64, one step counter per parameter: decoupled weight decay
    x ← x·(1 − lr·λ), then x ← x − lr·masked(u, g) with u Adam's m̂/(√v̂ + ε), Lion's sign(β₁m + (1−β₁)g) or the
    momentum m ← b1·m + g"""
    xs = [p.detach().double().clone() for p in params]
    ms, vs, ts = [torch.zeros_like(x) for x in xs], [torch.zeros_like(x) for x in xs], [0] * len(xs)
    for t in range(steps):
        for i, g in enumerate(grads(t, xs)):
            if g is None: continue
            g = g.double(); ts[i] += 1; k = ts[i]
            xs[i] = xs[i] * (1 - lr * wd)
            if kind == 'adamw':
                ms[i] = b1 * ms[i] + (1 - b1) * g; vs[i] = b2 * vs[i] + (1 - b2) * g * g
                u = ms[i] / (1 - b1 ** k) / ((vs[i] / (1 - b2 ** k)).sqrt() + eps)
            elif kind == 'lion':
                u = torch.sign(b1 * ms[i] + (1 - b1) * g); ms[i] = mom2 * ms[i] + (1 - mom2) * g
            else:
                ms[i] = b1 * ms[i] + g; u = ms[i]
            xs[i] = xs[i] - lr * masked(u, g)
    return xs

CASES = {'adamw': lambda ps, **kw: optcb.AdamW(ps, lr=1e-2, wd=0.1, cautious=True, **kw),
         'lion': lambda ps, **kw: optcb.Lion(ps, lr=1e-3, wd=0.1, cautious=True, **kw),
         'sgd': lambda ps, **kw: optcb.SGD(ps, lr=1e-2, mom=0.9, wd=0.1, cautious=True, **kw)}
LRS = {'adamw': 1e-2, 'lion': 1e-3, 'sgd': 1e-2}

@pytest.mark.parametrize('foreach', [True, False])
@pytest.mark.parametrize('kind', CASES)
def test_cautious_matches_the_paper(kind, foreach):
    ps = make_params(); ref = clone_params(ps)
    opt = CASES[kind](ps, foreach=foreach)
    g = grad_stream(ps, STEPS); run(opt, ps, g, STEPS)
    xs = reference(kind, ref, g, STEPS, LRS[kind], wd=0.1)
    for p, x in zip(ps, xs):
        if p.numel(): assert (p - x).abs().max() / x.abs().max() < 1e-10

@pytest.mark.parametrize('kind', CASES)
def test_cautious_differs_from_the_plain_optimizer(kind):
    "The mask is not a no-op: the same run without `cautious` ends elsewhere"
    ps, ref = make_params(), make_params()
    plain = {'adamw': optcb.AdamW(ref, lr=1e-2, wd=0.1), 'lion': optcb.Lion(ref, lr=1e-3, wd=0.1),
             'sgd': optcb.SGD(ref, lr=1e-2, mom=0.9, wd=0.1)}[kind]
    g = grad_stream(ps, 30); run(CASES[kind](ps), ps, g, 30); run(plain, ref, g, 30)
    assert max((p - q).abs().max().item() for p, q in zip(ps, ref) if p.numel()) > 1e-4

@slow
@pytest.mark.parametrize('kind', ['sgd'])  # C-AdamW and C-Lion: with the registry entries, test_rprop_asgd_adafactor_adopt_ademamix
def test_compiled_path_equals_per_tensor_path(kind):
    ps = make_params(); ref = clone_params(ps)
    a, b = CASES[kind](ps, compile=True), CASES[kind](ref, foreach=False)
    g = grad_stream(ps, 20, skip=()); run(a, ps, g, 20); run(b, ref, g, 20)
    assert {x.path for x in a.plan()} == {'compiled'}
    perr, serr = max_errs(ps, ref, a, b)
    assert perr < 1e-12 and serr < 1e-12

def test_the_registry_lists_the_cautious_step():
    opt = optcb.Adam([torch.zeros(2, requires_grad=True)], lr=1e-3, cautious=True)
    assert [cb.name for cb in opt.chain][-1] == 'cautious_adam_step(max_sqr_avg=None)'  # without AMSGrad's maximum
