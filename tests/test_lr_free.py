"""Prodigy and D-Adaptation Adam against their authors' packages (prodigyopt 1.1.2, dadaptation 3.2), and the pooling
callbacks they are built on: the sums over the whole step, checkpoints, and what is refused"""
import io
import pytest, torch
import optcb
from optcb.chain import callback, by_flags

prodigyopt = pytest.importorskip('prodigyopt')
dadaptation = pytest.importorskip('dadaptation')

def model(dtype=torch.float32):
    "A small MLP, one param group per layer (so the sums run over several groups), and its data"
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).to(dtype)
    g = torch.Generator().manual_seed(1)
    return m, torch.randn(32, 6, generator=g, dtype=dtype), torch.randn(32, 3, generator=g, dtype=dtype)

def groups(m, **extra): return [{'params': list(layer.parameters()), **extra} for layer in (m[0], m[2])]

def train(make, steps, dtype=torch.float32, **extra):
    m, X, Y = model(dtype)
    opt = make(groups(m, **extra))
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(m(X), Y).backward()
        opt.step()
    return list(m.parameters()), opt

PATHS = {'per-tensor': dict(foreach=False), 'group': dict(foreach=True, compile=False)}
OURS = dict(grad_avg='exp_avg', sqr_avg='exp_avg_sq')  # our state's names -> the packages'
THEIRS = dict(exp_avg='exp_avg', exp_avg_sq='exp_avg_sq')  # the torch-signature classes keep the packages' names

def assert_same(ours, theirs, names, group_keys):
    (ps, opt), (qs, ref) = ours, theirs
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
        for mine, their in names.items():
            assert torch.equal(opt.state[p][mine].flatten(), ref.state[q][their].flatten()), mine
    for g, h in zip(opt.param_groups, ref.param_groups):
        for k in group_keys: assert g[k] == h[k], k

PRODIGY = [dict(), dict(wd=0.01), dict(wd=0.01, decouple_wd=False), dict(safeguard_warmup=True),
           dict(bias_correction=True), dict(growth_rate=1.02), dict(d_coef=2., beta3=0.9), dict(d0=1e-4)]

def their_kw(kw):
    "Our keywords in the names of the authors' packages (prodigyopt's and dadaptation's are the same)"
    names = dict(wd='weight_decay', decouple_wd='decouple', bias_correction='use_bias_correction')
    out = {names.get(k, k): v for k, v in kw.items() if k not in ('mom', 'sqr_mom')}
    return {**out, 'betas': (kw.get('mom', 0.9), kw.get('sqr_mom', 0.999))}

@pytest.mark.parametrize('kw', PRODIGY, ids=lambda kw: ','.join(f'{k}={v}' for k, v in kw.items()) or 'defaults')
@pytest.mark.parametrize('path', ['per-tensor', 'group', 'torch signature'])
def test_prodigy_matches_prodigyopt(kw, path):
    """100 steps of a model in two param groups, bit for bit in float32: parameters, Adam's moments, s, p₀, and the
    estimate d with its running numerator and maximum, in every group"""
    make = (lambda gs: optcb.optim.Prodigy(gs, **their_kw(kw))) if path == 'torch signature' else (
        lambda gs: optcb.Prodigy(gs, **kw, **PATHS[path]))
    ours = train(make, 100)
    theirs = train(lambda gs: prodigyopt.Prodigy(gs, **their_kw(kw)), 100)
    moments = dict(s='s', p0='p0', **(THEIRS if path == 'torch signature' else OURS))
    assert_same(ours, theirs, moments, ('d', 'd_max', 'd_numerator', 'k'))
    assert ours[1].param_groups[0]['d'] > 5 * ours[1].param_groups[0]['d0']  # the estimate grew

DADAPT = [dict(), dict(wd=0.01), dict(wd=0.01, decouple_wd=True), dict(bias_correction=True), dict(growth_rate=1.02),
          dict(d0=1e-4), dict(mom=0.8, sqr_mom=0.99, eps=1e-6)]

@pytest.mark.parametrize('kw', DADAPT, ids=lambda kw: ','.join(f'{k}={v}' for k, v in kw.items()) or 'defaults')
@pytest.mark.parametrize('path', ['per-tensor', 'group', 'torch signature'])
def test_dadapt_adam_matches_dadaptation(kw, path):
    "100 steps, two param groups, bit for bit in float32: parameters, moments, s, the estimate d and its numerator"
    make = (lambda gs: optcb.optim.DAdaptAdam(gs, **their_kw(kw))) if path == 'torch signature' else (
        lambda gs: optcb.DAdaptAdam(gs, **kw, **PATHS[path]))
    ours = train(make, 100)
    theirs = train(lambda gs: dadaptation.DAdaptAdam(gs, **their_kw(kw)), 100)
    names = dict(s='s', **(THEIRS if path == 'torch signature' else OURS))
    assert_same(ours, theirs, names, ('d', 'numerator_weighted', 'k'))
    assert ours[1].param_groups[0]['d'] > 5 * kw.get('d0', 1e-6)

def test_dadapt_layer_scale_per_group():
    "D-Adaptation's `layer_scale`, a value of each param group, scales that group's step and share of the sums"
    ours = train(lambda gs: optcb.DAdaptAdam([gs[0], {**gs[1], 'layer_scale': 0.5}]), 60)
    theirs = train(lambda gs: dadaptation.DAdaptAdam([gs[0], {**gs[1], 'layer_scale': 0.5}]), 60)
    assert_same(ours, theirs, dict(grad_avg='exp_avg', s='s'), ('d', 'numerator_weighted'))

@pytest.mark.parametrize('build', [optcb.Prodigy, optcb.DAdaptAdam], ids=['prodigy', 'dadapt_adam'])
def test_compiled_path_equals_group_path(build):
    """The compiled path (each phase a kernel of its own) steps as the group path does: float64, 30 steps (at lr=1 on
    this small model the steps are large, and float32's rounding differences grow by about 10× every 10 steps)"""
    if not any(__import__('shutil').which(c) for c in ('g++', 'c++', 'clang++')): pytest.skip('no C++ compiler')
    f64 = torch.float64
    (ps, a), (qs, b) = (train(lambda gs: build(gs, compile=c), 30, f64) for c in (True, False))
    assert {bp.path for bp in a.plan()} == {'compiled'}
    for p, q in zip(ps, qs): torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    assert a.param_groups[0]['d'] == pytest.approx(b.param_groups[0]['d'], rel=1e-12)

@pytest.mark.parametrize('build', [optcb.Prodigy, optcb.DAdaptAdam], ids=['prodigy', 'dadapt_adam'])
def test_checkpoint_resumes_exactly(build):
    "40 steps, a state_dict through bytes, a new optimizer, 40 more: bit for bit with 80 steps, the estimate included"
    m, X, Y = model()
    opt = build(groups(m))
    def steps(opt, n):
        for _ in range(n):
            opt.zero_grad(); torch.nn.functional.mse_loss(m(X), Y).backward(); opt.step()
    steps(opt, 40)
    buf = io.BytesIO(); torch.save(opt.state_dict(), buf); buf.seek(0)
    again = build(groups(m)); again.load_state_dict(torch.load(buf))
    assert again.param_groups[0]['d'] == opt.param_groups[0]['d'] != 1e-6
    steps(again, 40)
    ps, ref = train(build, 80)
    for p, q in zip(m.parameters(), ps): assert torch.equal(p, q)
    assert again.param_groups[1]['d'] == ref.param_groups[1]['d']
    assert not any(k in s for s in again.state.values() for k in ('d_num', 'd_den'))  # the step's sums, not state

@pytest.mark.parametrize('build', [optcb.Prodigy, optcb.DAdaptAdam], ids=['prodigy', 'dadapt_adam'])
def test_zero_gradients_take_no_step(build):
    "Every gradient zero: nothing to estimate from, so no step, as the authors' code (d, k and the parameters kept)"
    w = torch.ones(4, requires_grad=True)
    opt = build([w], wd=0.1, decouple_wd=True)  # (L2 decay would make the gradient 0.1·p)
    w.grad = torch.zeros(4)
    opt.step(); opt.step()
    assert torch.equal(w.detach(), torch.ones(4)) and opt.param_groups[0]['k'] == 0
    assert opt.param_groups[0]['d'] == 1e-6

def test_estimate_lives_in_every_group_and_takes_schedules():
    "`d` is written into every group, also one without gradients this step; a torch scheduler scales lr over it"
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = optcb.Prodigy([{'params': [a]}, {'params': [b]}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5)
    for _ in range(5):
        a.grad = torch.tensor([1., -2., 3.]); opt.step(); sched.step()
    assert opt.param_groups[1]['d'] == opt.param_groups[0]['d'] > 1e-6 and opt.param_groups[1]['k'] == 5
    assert opt.param_groups[0]['lr'] == 0.5 and b.grad is None and torch.equal(b.detach(), torch.zeros(2))

def test_bad_values_are_refused_at_construction():
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match='invalid d0=0'): optcb.Prodigy([w], d0=0.)
    with pytest.raises(ValueError, match='invalid growth_rate=0.5'): optcb.DAdaptAdam([w], growth_rate=0.5)
    with pytest.raises(ValueError, match='invalid beta3=1.0'): optcb.Prodigy([w], beta3=1.)
    with pytest.raises(ValueError, match='pools a statistic of every gradient'): optcb.Prodigy([w]).release_gradients()

@callback(state=('g_sum',))
def _tally(p): return {'g_sum': p.grad.sum()}

@callback(pools=('g_sum',), total=0.)
def _pool_total(ps, *, g_sum, total): return {'total': total + g_sum}

def _shift(p, *, lr, total): p.sub_(lr * total)

def test_a_pooling_callback_sums_over_every_group_and_path():
    "The pooled value is the sum over all parameters of all groups, whichever path each bucket takes"
    a, b, c = (torch.zeros(n, requires_grad=True) for n in (2, 3, 1))
    opt = optcb.Optimizer([{'params': [a, c]}, {'params': [b], 'lr': 0.5}], [_tally, _pool_total, _shift], lr=1.)
    a.grad, b.grad, c.grad = torch.ones(2), torch.full((3,), 2.), torch.tensor([4.])
    opt.step()
    assert all(g['total'] == 12. for g in opt.param_groups)
    assert torch.equal(a.detach(), torch.full((2,), -12.)) and torch.equal(b.detach(), torch.full((3,), -6.))
    assert 'g_sum' not in opt.state[a]

def test_pooling_alike_in_every_group():
    "A flag that chooses a chain without the pooling callback, for one group: refused, naming both"
    build = by_flags(lambda pooled: [_tally, _pool_total, _shift] if pooled else [_tally, _shift])
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = optcb.Optimizer([a], build, lr=1., pooled=True, total=0.)
    with pytest.raises(ValueError, match="pooling with \\[\\], the optimizer's pools with \\['_pool_total'\\]"):
        opt.add_param_group({'params': [b], 'pooled': False})
    assert len(opt.param_groups) == 1

def test_a_pooling_callback_returns_group_values_only():
    "Returning a name it neither takes nor declares is a TypeError naming it, and no group is changed"
    @callback(pools=('g_sum',), total=0.)
    def leaky(ps, *, g_sum, total): return {'total': g_sum, 'other': 1.}
    w = torch.zeros(2, requires_grad=True)
    opt = optcb.Optimizer([w], [_tally, leaky, _shift], lr=1.)
    w.grad = torch.ones(2)
    with pytest.raises(TypeError, match=r"leaky returned \['other'\]"): opt.step()
    assert opt.param_groups[0]['total'] == 0. and 'other' not in opt.param_groups[0]
