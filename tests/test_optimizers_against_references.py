"""Adagrad, Adamax, Adadelta, RAdam and NAdam against torch.optim; RAdam, Lookahead, ranger, QHAdam, LAMB and LARC
against fastai; Lion, Adan and QHAdam against references written from their papers; their paths against the per-tensor
path; every registry optimizer as a Learner's opt_func"""
import copy, pytest, torch
import optcb
from _util import make_params, clone_params, grad_stream, run, max_errs, grid, against_torch, STEPS, TOL, paths, graphs, ahead_of_time, slow, sample

CASES = ([('Adagrad', kw, dict(lr=0.05, lr_decay=0.01)) for kw in grid(lr=[0.01], lr_decay=[0., 0.01], weight_decay=[0., 0.1],
                                                                       initial_accumulator_value=[0., 0.1], maximize=[False, True])]
       + [('Adamax', kw, dict(lr=0.005, betas=(0.8, 0.95))) for kw in grid(lr=[2e-3], betas=[(0.9, 0.999), (0.5, 0.9)], eps=[1e-8, 1e-3],
                                                                          weight_decay=[0., 0.1], maximize=[False, True])]
       + [('Adadelta', kw, dict(lr=0.5, rho=0.8)) for kw in grid(lr=[1.], rho=[0.9, 0.5], eps=[1e-6, 1e-3], weight_decay=[0., 0.1],
                                                                  maximize=[False, True])])

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('foreach', [True, False])
@pytest.mark.parametrize('case', CASES, ids=lambda c: c[0] + '-' + '-'.join(f'{k}={v}' for k, v in c[1].items()))
def test_matches_torch_optim(case, foreach, dtype):
    name, kw, extra = case
    r = against_torch(name, kw, extra, dtype, foreach=foreach)
    assert r.perr <= TOL[dtype] and r.serr <= TOL[dtype], (r.perr, r.serr)
    assert r.moved > 1e-3

def lion_reference(params, grads, steps, lr, mom, mom2, wd):
    """Lion as written in Chen et al. 2023, Algorithm 2, in float64:
       c = β1·m + (1−β1)·g;  x ← x − lr·(sign(c) + λ·x);  m ← β2·m + (1−β2)·g."""
    xs = [p.detach().double().clone() for p in params]; ms = [torch.zeros_like(x) for x in xs]
    for t in range(steps):
        for i, g in enumerate(grads(t, xs)):
            if g is None: continue
            c = mom * ms[i] + (1 - mom) * g
            xs[i] = xs[i] - lr * (torch.sign(c) + wd * xs[i])
            ms[i] = mom2 * ms[i] + (1 - mom2) * g
    return xs, ms

@pytest.mark.parametrize('wd', [0., 0.1])
@pytest.mark.parametrize('foreach', [True, False])
def test_lion_matches_the_paper(wd, foreach):
    ps = make_params(torch.float64); ref = clone_params(ps)
    opt = optcb.Lion(ps, lr=1e-3, wd=wd, foreach=foreach)
    g = grad_stream(ps, STEPS)
    run(opt, ps, g, STEPS)
    xs, ms = lion_reference(ref, g, STEPS, lr=1e-3, mom=0.9, mom2=0.99, wd=wd)
    for p, x, m in zip(ps, xs, ms):
        assert ((p - x).abs().max() if p.numel() else 0) < 1e-12
        if p.numel(): assert ((opt.state[p]['grad_avg'] - m).abs().max() / m.abs().max()) < 1e-12

@pytest.mark.parametrize('make,kw', [(optcb.Adagrad, dict(lr_decay=0.01, wd=0.1)), (optcb.Adamax, dict(wd=0.1, decouple_wd=True)),
                                     (optcb.Adadelta, dict(wd=0.1)), (optcb.Lion, dict(lr=1e-3, wd=0.1))], ids=lambda x: getattr(x, '__name__', ''))
def test_group_path_equals_per_tensor_path(make, kw):
    ps = make_params(); ref = clone_params(ps)
    a, b = make([ps[:3], ps[3:]], foreach=True, **kw), make([ref[:3], ref[3:]], foreach=False, **kw)
    g = grad_stream(ps, 40, skip=((1, 3),))
    run(a, ps, g, 40); run(b, ref, g, 40)
    assert max_errs(ps, ref, a, b) == (0, 0)

@pytest.mark.parametrize('make', [optcb.Adagrad, optcb.Adamax, optcb.Adadelta, optcb.Lion], ids=lambda x: x.__name__)
def test_compiled_path_matches(make):
    ps = make_params(torch.float64); ref = clone_params(ps)
    a, b = make(ps, compile=True), make(ref, foreach=False)
    g = grad_stream(ps, 20, skip=())
    run(a, ps, g, 20); run(b, ref, g, 20)
    perr, serr = max_errs(ps, ref, a, b)
    assert perr < 1e-12 and serr < 1e-12

# -- RAdam, Lookahead, ranger
import fastai.optimizer as fo

RADAM_TORCH = [dict(lr=1e-2, betas=b, eps=e, weight_decay=w, decoupled_weight_decay=d)
               for b in [(0.9, 0.999), (0.8, 0.9)] for e in [1e-8, 1e-3] for w in [0., 0.1] for d in [False, True]]

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('kw', RADAM_TORCH, ids=str)
def test_radam_matches_torch(kw, dtype):
    "betas=(0.8, 0.9) reach ρ_t > 5 at step 6, (0.9, 0.999) at step 5: both branches are exercised"
    r = against_torch('RAdam', kw, dict(lr=5e-3), dtype)
    assert r.perr <= TOL[dtype] and r.serr <= TOL[dtype], (r.perr, r.serr)

@pytest.mark.parametrize('kw', [dict(), dict(mom=0.5, sqr_mom=0.9, eps=1e-8, wd=0.1), dict(wd=0.1, decouple_wd=False), dict(beta=10.)], ids=str)
def test_radam_matches_fastai(kw):
    ps = make_params(); ref = clone_params(ps)
    ours, theirs = optcb.RAdam([ps[:3], ps[3:]], lr=1e-2, **kw), fo.RAdam([ref[:3], ref[3:]], lr=1e-2, **kw)
    g = grad_stream(ps, STEPS)
    run(ours, ps, g, STEPS); run(theirs, ref, g, STEPS)
    perr, serr = max_errs(ps, ref, ours, theirs)
    assert perr < 1e-10 and serr < 1e-10, (perr, serr)

@pytest.mark.parametrize('inner', ['SGD', 'RAdam'])
def test_lookahead_matches_fastai_and_syncs_every_k_steps(inner):
    ps = make_params(); ref = clone_params(ps)
    kw = dict(lr=1e-2, mom=0.9) if inner == 'SGD' else dict(lr=1e-2)
    ours = optcb.Lookahead(getattr(optcb, inner)([ps[:3], ps[3:]], **kw), k=5, alpha=0.4)
    theirs = fo.Lookahead(getattr(fo, inner)([ref[:3], ref[3:]], **kw), k=5, alpha=0.4)
    g = grad_stream(ps, 40, skip=())
    for t in range(40):
        for o, qs in [(ours, ps), (theirs, ref)]:
            for p, gr in zip(qs, g(t, qs)): p.grad = gr.clone()
            o.step()
        if (t + 1) % 5 == 0: assert all(torch.equal(p, ours.state[p]['slow_p']) for p in ps)  # fast == slow right after a sync
        elif t % 5 == 1: assert not all(torch.equal(p, ours.state[p]['slow_p']) for p in ps if p.numel())
    for a, b in zip(ps, ref): assert ((a - b).abs().max() if a.numel() else 0) < 1e-12

def test_ranger_matches_fastai_and_round_trips_its_state():
    ps = make_params(); ref = clone_params(ps)
    ours, theirs = optcb.ranger(ps, lr=1e-2), fo.ranger(ref, lr=1e-2)
    g = grad_stream(ps, 30, skip=())
    run(ours, ps, g, 15); run(theirs, ref, g, 15)
    sd = copy.deepcopy(ours.state_dict()); ps2 = clone_params(ps)  # load_state_dict keeps the given tensors, as torch does
    ours2 = optcb.ranger(ps2, lr=1e-2); ours2.load_state_dict(sd)
    for o, qs in [(ours, ps), (ours2, ps2)]: run(o, qs, lambda t, q: g(t + 15, q), 15)
    run(theirs, ref, lambda t, q: g(t + 15, q), 15)
    assert all(torch.equal(a, b) for a, b in zip(ps, ps2))
    for a, b in zip(ps, ref): assert ((a - b).abs().max() if a.numel() else 0) < 1e-12

@slow
def test_every_registry_optimizer_trains_as_a_learner_opt_func():
    "Each registry optimizer, at the learning rate optcb compare gives it, trains: its parameters move and the validation loss falls"
    from test_learner import learner, quiet_fit
    for name, e in optcb.REGISTRY.items():
        learn = learner(e.fastai)
        before, start = learn.validate()[0], [p.detach().clone() for p in learn.model.parameters()]
        quiet_fit(learn, 2, e.lr, **e.fit_kwargs)
        moved = max(((p - q).norm() / q.norm()).item() for p, q in zip(learn.model.parameters(), start) if q.norm() > 0)
        assert learn.recorder.values[-1][1] < before and moved > 1e-3, (name, before, learn.recorder.values[-1][1], moved)

# -- QHAdam, LAMB, LARC/LARS against fastai (LAMB also against the paper's trust ratio), both paths
FASTAI_MORE = [('QHAdam', dict()), ('QHAdam', dict(mom=0.9, sqr_mom=0.99, nu_1=0.5, nu_2=0.8, wd=0.1)),
               ('QHAdam', dict(wd=0.1, decouple_wd=False)), ('Lamb', dict()), ('Lamb', dict(wd=0.1, eps=1e-8)),
               ('Lamb', dict(wd=0.1, decouple_wd=False)), ('Larc', dict()), ('Larc', dict(clip=False, wd=0.01)),
               ('Larc', dict(mom=0., trust_coeff=0.1)), ('Larc', dict(wd=0.05, decouple_wd=False))]

@pytest.mark.parametrize('foreach', [True, False])
@pytest.mark.parametrize('name,kw', FASTAI_MORE, ids=lambda x: str(x))
def test_matches_fastai(name, kw, foreach):
    ps = make_params(); ref = clone_params(ps)
    ours = getattr(optcb, name)([ps[:3], ps[3:]], lr=1e-2, foreach=foreach, **kw)
    theirs = getattr(fo, name)([ref[:3], ref[3:]], lr=1e-2, **kw)
    g = grad_stream(ps, STEPS)
    run(ours, ps, g, STEPS); run(theirs, ref, g, STEPS)
    perr, serr = max_errs(ps, ref, ours, theirs)
    assert perr < 1e-10 and serr < 1e-10, (perr, serr)

def test_lamb_trust_ratio_is_per_layer():
    "Two layers of very different scale move by lr·‖p‖·(their own ratio): one step of LAMB from the paper's Algorithm 2"
    big, small = torch.full((4,), 100., dtype=torch.float64, requires_grad=True), torch.full((4,), 0.01, dtype=torch.float64, requires_grad=True)
    opt = optcb.Lamb([big, small], lr=0.1, eps=0.)
    big.grad = torch.ones(4, dtype=torch.float64); small.grad = torch.ones(4, dtype=torch.float64)
    opt.step()
    # first step: m̂/√v̂ = sign(g) = 1, so u = 1 everywhere, ‖u‖ = 2; trust = min(‖p‖/‖u‖, 10): 10 for big, 0.01 for small
    assert torch.allclose(big.detach(), torch.full((4,), 100 - 0.1 * 10, dtype=torch.float64))
    assert torch.allclose(small.detach(), torch.full((4,), 0.01 - 0.1 * 0.01, dtype=torch.float64))
    assert paths(optcb.Lamb([big], lr=0.1, compile=None)) != {'compiled'}  # per-layer norms: never the flat compiled path

# -- NAdam against torch, Adan against Algorithm 1
NADAM = [dict(lr=5e-3, betas=b, eps=e, weight_decay=w, momentum_decay=md, decoupled_weight_decay=d, maximize=m)
         for b in [(0.9, 0.999), (0.6, 0.9)] for e in [1e-8] for w in [0., 0.1] for md in [4e-3, 0.1] for d in [False, True] for m in [False, True]
         if not (m and md == 0.1)]

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('kw', NADAM, ids=str)
def test_nadam_matches_torch(kw, dtype):
    r = against_torch('NAdam', kw, dict(lr=1e-2), dtype)
    for p, q in zip(r.ps, r.ref):
        if 'mu_product' in r.theirs.state[q]: assert r.ours.state[p]['mu_product'] == r.theirs.state[q]['mu_product'].item()
    assert r.perr <= TOL[dtype] and r.serr <= TOL[dtype], (r.perr, r.serr)

def adan_reference(params, grads, steps, lr, b1, b2, b3, eps, wd):
    """Adan, Xie et al. 2022, Algorithm 1, with β's as decay rates (paper's β ↦ 1 − β), the bias corrections and zero
    start of the authors' implementation, and g₋₁ = g₀ on the first step:
       m = b1·m + (1−b1)·g;  d = b2·d + (1−b2)·(g − g_prev);  n = b3·n + (1−b3)·(g + b2·(g − g_prev))²
       θ ← (θ − lr·(m/(1−b1ᵗ) + b2·d/(1−b2ᵗ)) / (√(n/(1−b3ᵗ)) + ε)) / (1 + lr·λ)"""
    xs = [p.detach().double().clone() for p in params]
    st = [dict(m=torch.zeros_like(x), d=torch.zeros_like(x), n=torch.zeros_like(x), prev=None, t=0) for x in xs]
    for k in range(steps):
        for i, g in enumerate(grads(k, xs)):
            if g is None: continue
            s = st[i]; s['t'] += 1; t = s['t']
            diff = g - (g if s['prev'] is None else s['prev'])
            s['m'] = b1 * s['m'] + (1 - b1) * g
            s['d'] = b2 * s['d'] + (1 - b2) * diff
            s['n'] = b3 * s['n'] + (1 - b3) * (g + b2 * diff) ** 2
            s['prev'] = g.clone()
            upd = (s['m'] / (1 - b1 ** t) + b2 * s['d'] / (1 - b2 ** t)) / (torch.sqrt(s['n'] / (1 - b3 ** t)) + eps)
            xs[i] = (xs[i] - lr * upd) / (1 + lr * wd)
    return xs

@pytest.mark.parametrize('wd', [0., 0.05])
@pytest.mark.parametrize('path', sample([dict(foreach=True), dict(foreach=False), dict(compile=True)], 0, 1), ids=['group', 'per-tensor', 'compiled'])
def test_adan_matches_the_paper(wd, path):
    ps = make_params(torch.float64); ref = clone_params(ps)
    opt = optcb.Adan(ps, lr=1e-2, wd=wd, **path)
    g = grad_stream(ps, STEPS)
    run(opt, ps, g, STEPS)
    xs = adan_reference(ref, g, STEPS, lr=1e-2, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, wd=wd)
    for p, x in zip(ps, xs):
        if p.numel(): assert ((p - x).abs().max() / x.abs().max()) < 1e-10

@pytest.mark.parametrize('make', [optcb.NAdam, optcb.Adan], ids=lambda x: x.__name__)
def test_nadam_adan_group_path_equals_per_tensor_path(make):
    ps = make_params(); ref = clone_params(ps)
    a, b = make([ps[:3], ps[3:]], foreach=True, wd=0.1), make([ref[:3], ref[3:]], foreach=False, wd=0.1)
    g = grad_stream(ps, 40, skip=((1, 3),))
    run(a, ps, g, 40); run(b, ref, g, 40)
    assert max_errs(ps, ref, a, b) == (0, 0)

def qhadam_reference(params, grads, steps, lr, b1, b2, nu1, nu2, eps):
    """QHAdam, Ma & Yarats 2019, Algorithm 1 / eq. 8, in float64, moments started at zero and bias-corrected:
       g'ₜ = b1·g'ₜ₋₁ + (1−b1)·g,  s'ₜ = b2·s'ₜ₋₁ + (1−b2)·g²,  ĝ = g'/(1−b1ᵗ),  ŝ = s'/(1−b2ᵗ)
       θ ← θ − lr·((1−ν₁)·g + ν₁·ĝ) / (√((1−ν₂)·g² + ν₂·ŝ) + ε)"""
    xs = [p.detach().double().clone() for p in params]
    m = [torch.zeros_like(x) for x in xs]; v = [torch.zeros_like(x) for x in xs]; t = [0] * len(xs)
    for k in range(steps):
        for i, g in enumerate(grads(k, xs)):
            if g is None: continue
            t[i] += 1
            m[i] = b1 * m[i] + (1 - b1) * g; v[i] = b2 * v[i] + (1 - b2) * g * g
            num = (1 - nu1) * g + nu1 * m[i] / (1 - b1 ** t[i])
            den = torch.sqrt((1 - nu2) * g * g + nu2 * v[i] / (1 - b2 ** t[i])) + eps
            xs[i] = xs[i] - lr * num / den
    return xs

@pytest.mark.parametrize('nu', [(0.7, 1.0), (0.5, 0.8)])
def test_qhadam_matches_the_paper(nu):
    ps = make_params(torch.float64); ref = clone_params(ps)
    opt = optcb.QHAdam(ps, lr=1e-2, mom=0.9, sqr_mom=0.99, nu_1=nu[0], nu_2=nu[1])
    g = grad_stream(ps, STEPS); run(opt, ps, g, STEPS)
    for p, x in zip(ps, qhadam_reference(ref, g, STEPS, 1e-2, 0.9, 0.99, nu[0], nu[1], 1e-8)):
        if p.numel(): assert ((p - x).abs().max() / x.abs().max()) < 1e-10

@pytest.mark.parametrize('make', [optcb.RAdam, optcb.ranger, optcb.QHAdam, optcb.Lamb, optcb.Larc], ids=lambda x: x.__name__)
def test_more_group_paths_equal_per_tensor_paths(make):
    ps = make_params(); ref = clone_params(ps)
    a, b = make([ps[:3], ps[3:]], lr=1e-2, foreach=True), make([ref[:3], ref[3:]], lr=1e-2, foreach=False)
    g = grad_stream(ps, 40, skip=((1, 3),))
    run(a, ps, g, 40); run(b, ref, g, 40)
    perr, serr = max_errs(ps, ref, a, b)
    assert perr == 0 and serr == 0, (perr, serr)

@pytest.mark.parametrize('make,kw', [(optcb.RAdam, {}), (optcb.optim.RAdam, dict(fused=True))], ids=['fastai', 'torch'])
def test_radam_compiled_through_the_rectification_switch(make, kw):
    "The compiled RAdam selects the branch with torch.where: same result, and no new graph when ρ_t passes 5"
    ps = make_params(torch.float64); ref = clone_params(ps)
    a = make(ps, lr=1e-2, **({'compile': True} if not kw else kw)); b = make(ref, lr=1e-2, foreach=False)
    g = grad_stream(ps, 12, skip=())
    run(a, ps, g, 3); before = graphs()
    run(a, ps, lambda t, q: g(t + 3, q), 9); run(b, ref, g, 12)
    assert graphs() == before and ahead_of_time(a)
    perr, serr = max_errs(ps, ref, a, b)
    assert perr < 1e-12 and serr < 1e-12, (perr, serr)

@slow
def test_nadam_compiled_matches_torch():
    ps = make_params(torch.float32); ref = clone_params(ps)
    a, b = optcb.optim.NAdam(ps, lr=1e-2, fused=True), torch.optim.NAdam(ref, lr=1e-2, foreach=False)
    assert paths(a) == {'compiled'}
    g = grad_stream(ps, 30, skip=())
    run(a, ps, g, 30); run(b, ref, g, 30)
    perr, serr = max_errs(ps, ref, a, b)  # torch's names in both
    assert perr < 2e-6 and serr < 2e-6, (perr, serr)
    assert a.state[ps[0]]['mu_product'] == b.state[ref[0]]['mu_product'].item()
