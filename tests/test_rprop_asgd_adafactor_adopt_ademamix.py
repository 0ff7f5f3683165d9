"""Rprop and ASGD against torch.optim on torch's own test configurations; ADOPT and AdEMAMix against references written
from their papers and against their authors' (or another) implementation; every path and checkpoints for all four"""
import copy, math, pytest, torch
import optcb
from optcb import optimizers as O
from _util import make_params, params_for, clone_params, grad_stream, run, max_errs, rel_err, against_torch, STEPS, torch_optim_db, slow

# -- Rprop and ASGD: torch's own configurations (torch.testing._internal.common_optimizers), bit for bit
def torch_configs(name):
    "The CPU keyword sets torch's optimizer tests use for `name` (those optcb can take: no capturable/differentiable)"
    info = next(i for i in torch_optim_db() if i.optim_cls.__name__ == name)
    return [i.kwargs for i in info.optim_inputs_func(device='cpu')
            if not {'capturable', 'differentiable', 'fused', 'foreach'} & set(i.kwargs)]

@pytest.mark.parametrize('name', ['Rprop', 'ASGD'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('foreach', [True, False])
def test_equal_to_torch_on_torchs_test_configurations(name, dtype, foreach):
    "Three groups (one with other hyperparameters), a parameter that skips steps, an empty one: 120 steps, every bit"
    configs = torch_configs(name)
    assert len(configs) >= 5
    extra = dict(lr=0.05, etas=(0.3, 1.5)) if name == 'Rprop' else dict(lr=0.05, lambd=1e-2, t0=20)
    for kw in configs:
        r = against_torch(name, kw, extra, dtype, foreach=foreach)
        assert (r.perr, r.serr) == (0., 0.), (kw, r.perr, r.serr)
        assert r.moved > 1e-3

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('foreach', [True, False])
def test_adafactor_equals_torch_on_torchs_test_configurations(dtype, foreach):
    "Matrices (factored), a 3-D tensor (factored over its last two dims), vectors; three groups, a skipping parameter"
    configs = torch_configs('Adafactor')
    assert len(configs) >= 5
    for kw in configs + [dict(eps=(1e-30, 1e-3), lr=0.05)]:
        ps = params_for('Adafactor', dtype); ref = clone_params(ps); start = clone_params(ps)
        groups = lambda qs: [{'params': qs[:2]}, {'params': qs[2:4], 'lr': 0.02, 'd': 1.2}, {'params': qs[4:]}]
        a = optcb.optim.Adafactor(groups(ps), foreach=foreach, **kw)
        b = torch.optim.Adafactor(groups(ref), foreach=False, **kw)
        g = grad_stream(ps, STEPS); run(a, ps, g, STEPS); run(b, ref, g, STEPS)
        assert max_errs(ps, ref, a, b) == (0., 0.), kw
        assert all(not torch.equal(p, s) for p, s in zip(ps, start))
        assert set(a.state[ps[0]]) == {'step', 'row_var', 'col_var'} and set(a.state[ps[1]]) == {'step', 'variance'}

def test_asgd_keeps_torchs_scalar_state_and_average():
    ps = make_params(); ref = clone_params(ps)
    a, b = optcb.optim.ASGD(ps, lr=0.05, t0=5), torch.optim.ASGD(ref, lr=0.05, t0=5, foreach=False)
    g = grad_stream(ps, 30); run(a, ps, g, 30); run(b, ref, g, 30)
    sa, sb = a.state_dict()['state'][0], b.state_dict()['state'][0]
    assert set(sa) == set(sb) == {'step', 'eta', 'mu', 'ax'}
    for k in sb: assert torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype, k
    assert sb['mu'].item() < 1  # past t0: the average is a real average

@pytest.mark.parametrize('name', ['Rprop', 'ASGD'])
def test_torch_resumes_from_optcb_checkpoints_and_back(name):
    "optcb saves torch's state names and 0-d tensors: torch.optim.<name> continues exactly, and the other way round"
    ps = make_params(); ref = clone_params(ps)
    a, b = getattr(optcb.optim, name)(ps, lr=0.02), getattr(torch.optim, name)(ref, lr=0.02, foreach=False)
    g = grad_stream(ps, 40); run(a, ps, g, 20); run(b, ref, g, 20)
    a2 = getattr(torch.optim, name)(ps, lr=0.02, foreach=False); a2.load_state_dict(copy.deepcopy(a.state_dict()))
    b2 = getattr(optcb.optim, name)(ref, lr=0.02); b2.load_state_dict(copy.deepcopy(b.state_dict()))
    later = lambda t, qs: g(t + 20, qs)
    run(a2, ps, later, 20); run(b2, ref, later, 20)
    assert all(torch.equal(p, q) for p, q in zip(ps, ref))

# -- ADOPT: the paper's Algorithm 2, clipped as its authors' implementation does since November 2024
def adopt_reference(params, grads, steps, lr=1e-3, b1=0.9, b2=0.9999, eps=1e-6, wd=0., decouple=False, clip=True):
    """Taniguchi et al. 2024, Algorithm 2, in float64, one step counter per parameter:
       first gradient: v ← g² only; then m ← β₁m + (1−β₁)·clip(g/max(√v, ε), k^¼), x ← x − lr·m, v ← β₂v + (1−β₂)g²
       (k: the updates before this one, counting the first call); weight decay as L2, or decoupled from the first update"""
    xs = [p.detach().double().clone() for p in params]
    ms, vs, ks = [torch.zeros_like(x) for x in xs], [None] * len(xs), [0] * len(xs)
    for t in range(steps):
        for i, g in enumerate(grads(t, xs)):
            if g is None: continue
            g = g.double()
            if wd and not decouple: g = g + wd * xs[i]
            if vs[i] is None: vs[i], ks[i] = g * g, 1; continue
            if wd and decouple: xs[i] = xs[i] - lr * wd * xs[i]
            n = g / torch.clamp(vs[i].sqrt(), min=eps)
            if clip: n = n.clamp(-ks[i] ** 0.25, ks[i] ** 0.25)
            ms[i] = b1 * ms[i] + (1 - b1) * n
            xs[i] = xs[i] - lr * ms[i]
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            ks[i] += 1
    return xs, ms, vs

ADOPT_CASES = [dict(), dict(wd=0.1), dict(wd=0.1, decouple_wd=True), dict(clip=False), dict(mom=0.5, sqr_mom=0.99)]

@pytest.mark.parametrize('kw', ADOPT_CASES, ids=str)
@pytest.mark.parametrize('foreach', [True, False])
def test_adopt_matches_the_paper(kw, foreach):
    ps = make_params(); ref = clone_params(ps)
    opt = O.ADOPT(ps, lr=1e-2, foreach=foreach, **kw)
    g = grad_stream(ps, STEPS, scale=0.1); run(opt, ps, g, STEPS)
    xs, ms, vs = adopt_reference(ref, g, STEPS, lr=1e-2, b1=kw.get('mom', 0.9), b2=kw.get('sqr_mom', 0.9999),
                                 wd=kw.get('wd', 0.), decouple=kw.get('decouple_wd', False), clip=kw.get('clip', True))
    for p, x, m, v in zip(ps, xs, ms, vs):
        assert max(rel_err(p, x), rel_err(opt.state[p]['grad_avg'], m), rel_err(opt.state[p]['sqr_avg'], v)) < 1e-10

@pytest.mark.filterwarnings('ignore::UserWarning', 'ignore::DeprecationWarning')  # raised inside torch-adopt
@pytest.mark.parametrize('kw', ADOPT_CASES[:3], ids=str)
def test_adopt_matches_its_authors_implementation(kw):
    "torch-adopt 0.1.0 (the paper's authors' code): equal parameters and state after 120 steps"
    adopt = pytest.importorskip('adopt')
    ps = make_params(); ref = clone_params(ps)
    ours = O.ADOPT(ps, lr=1e-2, **kw)
    theirs = adopt.ADOPT(ref, lr=1e-2, weight_decay=kw.get('wd', 0.), decouple=kw.get('decouple_wd', False),
                         foreach=False)
    g = grad_stream(ps, STEPS, scale=0.1); run(ours, ps, g, STEPS); run(theirs, ref, g, STEPS)
    perr, serr = max_errs(ps, ref, ours, theirs, {'exp_avg': 'grad_avg', 'exp_avg_sq': 'sqr_avg'}, ignore=('step',))
    assert perr < 1e-10 and serr < 1e-10, (perr, serr)

# -- AdEMAMix: the paper's Algorithm 1
def ademamix_reference(params, grads, steps, lr=1e-3, b1=0.9, b2=0.999, b3=0.9999, alpha=5., T=0, eps=1e-8, wd=0.):
    """Pagliardini et al. 2024, Algorithm 1, in float64, one step counter per parameter:
       α_t = min(tα/T, α), β₃(t) = min(exp(ln β₁ ln β₃ / ((1 − t/T) ln β₃ + (t/T) ln β₁)), β₃) (T = 0: no warm-up);
       m₁ ← β₁m₁ + (1−β₁)g, m₂ ← β₃(t)m₂ + (1−β₃(t))g, ν ← β₂ν + (1−β₂)g²;
       x ← x − lr·((m₁/(1−β₁ᵗ) + α_t·m₂)/(√(ν/(1−β₂ᵗ)) + ε) + λx)"""
    xs = [p.detach().double().clone() for p in params]
    m1s, m2s, nus = ([torch.zeros_like(x) for x in xs] for _ in range(3))
    ts = [0] * len(xs)
    for t in range(steps):
        for i, g in enumerate(grads(t, xs)):
            if g is None: continue
            g = g.double(); ts[i] += 1; k = ts[i]
            a = min(k * alpha / T, alpha) if T else alpha
            b3t = min(math.exp(math.log(b1) * math.log(b3) / ((1 - k / T) * math.log(b3) + k / T * math.log(b1))),
                      b3) if T else b3
            m1s[i] = b1 * m1s[i] + (1 - b1) * g
            m2s[i] = b3t * m2s[i] + (1 - b3t) * g
            nus[i] = b2 * nus[i] + (1 - b2) * g * g
            upd = (m1s[i] / (1 - b1 ** k) + a * m2s[i]) / ((nus[i] / (1 - b2 ** k)).sqrt() + eps)
            xs[i] = xs[i] - lr * (upd + wd * xs[i])
    return xs, m2s

AEM_CASES = [dict(), dict(warmup=50), dict(warmup=50, wd=0.1, alpha=8.), dict(mom3=0.999, sqr_mom=0.99)]

@pytest.mark.parametrize('kw', AEM_CASES, ids=str)
@pytest.mark.parametrize('foreach', [True, False])
def test_ademamix_matches_the_paper(kw, foreach):
    ps = make_params(); ref = clone_params(ps)
    opt = O.AdEMAMix(ps, lr=1e-2, foreach=foreach, **kw)
    g = grad_stream(ps, STEPS); run(opt, ps, g, STEPS)
    xs, m2s = ademamix_reference(ref, g, STEPS, lr=1e-2, b2=kw.get('sqr_mom', 0.999), b3=kw.get('mom3', 0.9999),
                                 alpha=kw.get('alpha', 5.), T=kw.get('warmup', 0), wd=kw.get('wd', 0.))
    for p, x, m2 in zip(ps, xs, m2s):
        assert max(rel_err(p, x), rel_err(opt.state[p]['slow_avg'], m2)) < 1e-10

@pytest.mark.parametrize('kw', AEM_CASES[:3], ids=str)
def test_ademamix_matches_pytorch_optimizer(kw):
    "pytorch-optimizer 4.1's AdEMAMix (its step counter is per group: every parameter steps every time here)"
    po = pytest.importorskip('pytorch_optimizer')
    ps = make_params(); ref = clone_params(ps)
    ours = O.AdEMAMix(ps, lr=1e-2, **kw)
    theirs = po.AdEMAMix(ref, lr=1e-2, alpha=kw.get('alpha', 5.), t_alpha_beta3=kw.get('warmup') or None,
                         weight_decay=kw.get('wd', 0.), weight_decouple=True, foreach=False)
    g = grad_stream(ps, STEPS, skip=()); run(ours, ps, g, STEPS); run(theirs, ref, g, STEPS)
    perr, serr = max_errs(ps, ref, ours, theirs, {'exp_avg': 'grad_avg', 'exp_avg_sq': 'sqr_avg',
                                                  'exp_avg_slow': 'slow_avg'}, extra=('step',))
    assert perr < 1e-10 and serr < 1e-10, (perr, serr)

# -- every path and checkpoints, for the new entries
NEW = {'rprop': dict(lr=1e-2), 'asgd': dict(lr=0.05, t0=10, wd=0.1), 'adopt': dict(lr=1e-2, wd=0.1),
       'ademamix': dict(lr=1e-2, warmup=30, wd=0.1), 'cadamw': dict(lr=1e-2, wd=0.1), 'clion': dict(lr=1e-3, wd=0.1),
       'adafactor': dict(lr=1e-2, wd=0.1)}

GROUPED = [n for n in NEW if optcb.REGISTRY[n].compiles]  # Adafactor runs one tensor at a time

@pytest.mark.parametrize('name', GROUPED)
def test_group_path_equals_per_tensor_path(name):
    ps = make_params(); ref = clone_params(ps)
    build = optcb.REGISTRY[name].fastai
    a, b = build([ps[:3], ps[3:]], foreach=True, **NEW[name]), build([ref[:3], ref[3:]], foreach=False, **NEW[name])
    g = grad_stream(ps, 40, skip=((1, 3),)); run(a, ps, g, 40); run(b, ref, g, 40)
    assert max_errs(ps, ref, a, b) == (0, 0)

@slow
@pytest.mark.parametrize('name', GROUPED)
def test_compiled_path_equals_per_tensor_path(name):
    "float64, 25 steps with the learning rate changing every step: within 1e-12, no graph recompiled for the schedule"
    ps = make_params(); ref = clone_params(ps)
    build = optcb.REGISTRY[name].fastai
    a, b = build(ps, compile=True, **NEW[name]), build(ref, foreach=False, **NEW[name])
    g = grad_stream(ps, 25, skip=())
    for t in range(25):
        for o in (a, b): o.set_hyper('lr', NEW[name]['lr'] * (1 + 0.01 * t))
        for p, q, gr in zip(ps, ref, g(t, ps)): p.grad, q.grad = gr.clone(), gr.clone()
        a.step(); b.step()
    assert {x.path for x in a.plan()} == {'compiled'}
    perr, serr = max_errs(ps, ref, a, b)
    assert perr < 1e-12 and serr < 1e-12, (perr, serr)

@pytest.mark.parametrize('name', NEW)
def test_checkpoint_resume_is_exact(name):
    "20 steps, state_dict through torch.save/load, 20 more in a fresh optimizer: the same as 40 uninterrupted"
    import io
    build = optcb.REGISTRY[name].fastai
    ps, ref = make_params(), make_params()
    a, b = build(ps, **NEW[name]), build(ref, **NEW[name])
    g = grad_stream(ps, 40); run(a, ps, g, 40); run(b, ref, g, 20)
    buf = io.BytesIO(); torch.save(b.state_dict(), buf); buf.seek(0)
    b2 = build(ref, **NEW[name]); b2.load_state_dict(torch.load(buf, weights_only=True))
    run(b2, ref, lambda t, qs: g(t + 20, qs), 20)
    assert all(torch.equal(p, q) for p, q in zip(ps, ref))

def test_bad_hyperparameters_are_refused_by_name():
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match='etaminus'): optcb.optim.Rprop(w, etas=(1.5, 1.2))
    with pytest.raises(ValueError, match='etaplus'): optcb.optim.Rprop(w, etas=(0.5, 0.9))
    with pytest.raises(ValueError, match='etas must be a pair'): optcb.optim.Rprop(w, etas=0.5)
    with pytest.raises(ValueError, match='lambd'): optcb.optim.ASGD(w, lambd=-1.)
    with pytest.raises(ValueError, match='mom3'): O.AdEMAMix(w, mom3=1.)
    with pytest.raises(ValueError, match='sqr_mom'): O.ADOPT(w, sqr_mom=1.)

def test_a_per_tensor_optimizer_refuses_the_group_paths_by_name():
    "Adafactor's step reads norms with .item(): asking it for the group or compiled path is a clear error"
    w = [torch.zeros(2, 2, requires_grad=True)]
    for kw, what in ((dict(foreach=True), 'foreach=True'), (dict(compile=True), 'compile=True')):
        with pytest.raises(ValueError, match=f"{what}.*adafactor_step"): O.Adafactor(w, **kw)
    assert {b.path for b in optcb.optim.Adafactor(w, foreach=True).plan()} == {'per-tensor'}  # torch's hint: ignored
