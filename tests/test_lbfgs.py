"""optcb.optim.LBFGS against torch.optim.LBFGS: torch's own test configurations to the last bit (parameters and the
whole history), checkpoints both ways, bad checkpoints refused without change, hyperparameters as the other classes"""
import copy, pytest, torch
import optcb
from optcb.optim import LBFGS
from _util import torch_optim_db

def configs():
    info = next(i for i in torch_optim_db() if i.optim_cls.__name__ == 'LBFGS')
    return [i.kwargs for i in info.optim_inputs_func(device='cpu')]

def params(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in ((4, 3), (5,), (2, 2))]

def closure_for(ps, opt, seed=1):
    """A smooth non-convex loss (least squares, a quartic, a product term): L-BFGS's line search has work to do;
    negated for an optimizer that maximizes"""
    sign = -1 if opt.param_groups[0].get('maximize') else 1
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(9, 21, generator=g, dtype=ps[0].dtype); b = torch.randn(9, generator=g, dtype=ps[0].dtype)
    def closure():
        opt.zero_grad()
        x = torch.cat([p.reshape(-1) for p in ps[:3]])  # a fourth parameter, if any, gets no gradient
        loss = ((A @ x - b) ** 2).mean() + 0.05 * (x ** 4).sum() + 0.1 * (ps[0] @ ps[0].T).trace() * ps[1].sum()
        loss = sign * loss
        loss.backward()
        return loss
    return closure

def run(cls, kw, dtype, steps=6, ps=None):
    ps = ps if ps is not None else params(dtype)
    opt = cls(ps, **copy.deepcopy(kw))
    losses = [opt.step(closure_for(ps, opt)).item() for _ in range(steps)]
    return ps, opt, losses

def assert_same_state(s1, s2):
    assert set(s1) == set(s2), (set(s1) ^ set(s2))
    for k, v in s2.items():
        w = s1[k]
        if isinstance(v, list):
            assert len(w) == len(v), k
            for a, b in zip(w, v): assert (a is None and b is None) or torch.equal(torch.as_tensor(a), torch.as_tensor(b)), k
        elif isinstance(v, torch.Tensor): assert torch.equal(w, v), k
        else: assert w == v, k

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_equal_to_torch_on_torchs_test_configurations(dtype):
    "Six closure-driven steps per configuration (line search, history size, tensor lr, maximize…): every bit"
    cases = configs()
    assert len(cases) >= 4 and any(kw.get('line_search_fn') == 'strong_wolfe' for kw in cases)
    for kw in cases + [dict(history_size=2, max_iter=9), dict(line_search_fn='strong_wolfe', lr=0.7, max_eval=12),
                       dict(tolerance_grad=1e-2, line_search_fn='strong_wolfe')]:
        ps, a, la = run(LBFGS, kw, dtype)
        ref, b, lb = run(torch.optim.LBFGS, kw, dtype)
        assert la == lb, kw
        assert all(torch.equal(p, q) for p, q in zip(ps, ref)), kw
        assert_same_state(a.state[ps[0]], b.state[ref[0]])
        assert a.state[ps[0]]['func_evals'] > 6, kw  # it did iterate

def test_a_parameter_without_gradient_stays_and_counts_as_zero():
    ps, ref = params(), params()
    ps.append(torch.ones(3, requires_grad=True)); ref.append(torch.ones(3, requires_grad=True))
    ps, a, _ = run(LBFGS, dict(line_search_fn='strong_wolfe'), torch.float64, ps=ps)
    ref, b, _ = run(torch.optim.LBFGS, dict(line_search_fn='strong_wolfe'), torch.float64, ps=ref)
    assert all(torch.equal(p, q) for p, q in zip(ps, ref)) and torch.equal(ps[-1], torch.ones(3, dtype=ps[-1].dtype))

@pytest.mark.parametrize('line_search_fn', [None, 'strong_wolfe'])
def test_checkpoints_go_both_ways(line_search_fn):
    "3 steps, state dict to the other library, 3 more: the same as 6 uninterrupted steps, either way"
    kw = dict(line_search_fn=line_search_fn, history_size=4)
    straight, _, _ = run(LBFGS, kw, torch.float64, steps=6)
    for first, second in [(LBFGS, torch.optim.LBFGS), (torch.optim.LBFGS, LBFGS)]:
        ps, a, _ = run(first, kw, torch.float64, steps=3)
        b = second(ps, **kw); b.load_state_dict(copy.deepcopy(a.state_dict()))
        for _ in range(3): b.step(closure_for(ps, b))
        assert all(torch.equal(p, q) for p, q in zip(ps, straight)), (first, second)

def test_a_bad_checkpoint_is_refused_and_changes_nothing():
    ps, a, _ = run(LBFGS, {}, torch.float64, steps=2)
    before = copy.deepcopy(a.state_dict())
    b = LBFGS([torch.randn(4, 3, dtype=torch.float64, requires_grad=True)])
    with pytest.raises(ValueError, match='parameters per group'): a.load_state_dict(b.state_dict())
    sd = copy.deepcopy(before); sd['state'][0]['d'] = torch.zeros(5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r'history vectors have \[5, 21\] values; this LBFGS.*21'): a.load_state_dict(sd)
    sd = copy.deepcopy(before); sd['state'][0]['exp_avg'] = torch.zeros(3)
    with pytest.raises(ValueError, match="'exp_avg'"): a.load_state_dict(sd)
    assert repr(a.state_dict()) == repr(before)

def test_hyperparameters_are_checked_and_settable_like_the_other_classes():
    w = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError, match='invalid lr=-1'): LBFGS(w, lr=-1)
    with pytest.raises(ValueError, match='invalid history_size=-2'): LBFGS(w, history_size=-2)
    with pytest.raises(ValueError, match="line_search_fn='wolfe'"): LBFGS(w, line_search_fn='wolfe')
    with pytest.raises(TypeError, match="did you mean 'max_iter'"): LBFGS([{'params': w, 'max_iters': 3}])
    with pytest.raises(ValueError, match='parameter groups'): LBFGS([{'params': w}, {'params': [torch.zeros(2)]}])
    opt = LBFGS(w)
    assert opt.param_groups[0]['max_eval'] == 25 and opt.hypers[0]['history_size'] == 100
    opt.set_hyper('lr', 0.5)
    with pytest.raises(ValueError, match='tolerance_grad'): opt.set_hyper('tolerance_grad', -1.)
    assert opt.param_groups[0]['lr'] == 0.5 and opt.param_groups[0]['tolerance_grad'] == 1e-7
    assert [b.path for b in opt.plan()] == ['flat']

def test_a_torch_scheduler_drives_its_lr_as_torchs():
    ps, ref = params(), params()
    a, b = LBFGS(ps, lr=0.8), torch.optim.LBFGS(ref, lr=0.8)
    sa, sb = torch.optim.lr_scheduler.StepLR(a, 1, gamma=0.5), torch.optim.lr_scheduler.StepLR(b, 1, gamma=0.5)
    for _ in range(4):
        a.step(closure_for(ps, a)); b.step(closure_for(ref, b)); sa.step(); sb.step()
    assert a.param_groups[0]['lr'] == b.param_groups[0]['lr'] == 0.05
    assert all(torch.equal(p, q) for p, q in zip(ps, ref))
