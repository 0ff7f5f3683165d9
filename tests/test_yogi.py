"Yogi against a reference written here from Zaheer et al. 2018, Algorithm 2, with optax's bias correction and initial value"
import math
import pytest, torch
import optcb
from _util import make_params, clone_params, grad_stream, run, rel_err

def yogi_reference(params, grads, steps, lr, mom, sqr_mom, eps, init, wd):
    """Yogi as written in the paper, per parameter and in float64:
       m_t = β1·m + (1−β1)·g;  v_t = v − (1−β2)·sign(v − g²)·g²;  both start at `init`;
       m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ) (optax's scale_by_yogi);  x ← x·(1 − lr·wd) − lr·m̂/(√v̂ + ε)."""
    xs = [p.detach().double().clone() for p in params]
    m = [torch.full_like(x, init) for x in xs]; v = [torch.full_like(x, init) for x in xs]; t = [0] * len(xs)
    for step in range(steps):
        for i, g in enumerate(grads(step, xs)):
            if g is None: continue
            t[i] += 1
            m[i] = mom * m[i] + (1 - mom) * g
            v[i] = v[i] - (1 - sqr_mom) * torch.sign(v[i] - g * g) * g * g
            mhat, vhat = m[i] / (1 - mom ** t[i]), v[i] / (1 - sqr_mom ** t[i])
            xs[i] = xs[i] * (1 - lr * wd) - lr * mhat / (torch.sqrt(vhat) + eps)
    return xs, m, v

@pytest.mark.parametrize('init', [1e-6, 0.])
@pytest.mark.parametrize('wd', [0., 0.1])
@pytest.mark.parametrize('foreach', [True, False])
def test_yogi_matches_paper(init, wd, foreach):
    ps = make_params(torch.float64)
    kw = dict(lr=0.01, mom=0.9, sqr_mom=0.999, eps=1e-3)
    opt = optcb.Yogi(ps, initial_accumulator=init, wd=wd, foreach=foreach, **kw)
    ref_ps = clone_params(ps)
    grads = grad_stream(ps, 150)
    run(opt, ps, grads, 150)
    xs, m, v = yogi_reference(ref_ps, grads, 150, init=init, wd=wd, **kw)
    for p, x, mi, vi in zip(ps, xs, m, v):
        assert rel_err(p, x) < 1e-10
        if p.numel():
            assert rel_err(opt.state[p]['grad_avg'], mi) < 1e-10 and rel_err(opt.state[p]['sqr_avg'], vi) < 1e-10

def test_yogi_is_not_adam():
    "After large gradients, small ones: Adam's v decays by β2 a step, Yogi's by at most (1−β2)·g² (Zaheer et al., §3)"
    ps = [torch.zeros(1, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    yogi, adam = optcb.Yogi([ps[0]], lr=0.1, initial_accumulator=0.), optcb.Adam([ps[1]], lr=0.1, sqr_mom=0.999, eps=1e-3, wd=0.)
    v_yogi = v_adam = 0.
    for g in [10.] * 20 + [0.1] * 200:
        for p, o in zip(ps, (yogi, adam)): p.grad = torch.tensor([g], dtype=torch.float64); o.step()
        v_adam = 0.999 * v_adam + 0.001 * g * g
        v_yogi = v_yogi - 0.001 * math.copysign(1., v_yogi - g * g) * g * g
    got_yogi, got_adam = yogi.state[ps[0]]['sqr_avg'].item(), adam.state[ps[1]]['sqr_avg'].item()
    assert abs(got_adam - v_adam) < 1e-12 * v_adam and abs(got_yogi - v_yogi) < 1e-12 * v_yogi
    assert v_yogi - v_adam > 0.1 * v_adam  # 1.998 vs 1.62: Yogi forgets the large gradients far more slowly
