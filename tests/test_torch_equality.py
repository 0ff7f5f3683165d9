"optcb.optim equals torch.optim: ≥100 steps, several groups, a parameter that misses steps, an empty parameter"
import pytest, torch
import optcb
from _util import make_params, grid, against_torch, TOL, paths

CASES = (
    [('SGD', kw, dict(lr=0.02, momentum=0.5, weight_decay=0.05)) for kw in grid(
        lr=[0.01], momentum=[0., 0.9], dampening=[0., 0.3], weight_decay=[0., 0.1], nesterov=[False, True], maximize=[False, True])
     if not (kw['nesterov'] and (kw['momentum'] == 0 or kw['dampening'] != 0))]
    + [('RMSprop', kw, dict(lr=0.003, alpha=0.9, momentum=0.5, weight_decay=0.05)) for kw in grid(
        lr=[0.01], alpha=[0.99, 0.8], momentum=[0., 0.9], centered=[False, True], weight_decay=[0., 0.1], maximize=[False, True])]
    + [(name, kw, dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05, eps=1e-6)) for name in ['Adam', 'AdamW'] for kw in grid(
        lr=[0.01], betas=[(0.9, 0.999), (0.5, 0.9)], eps=[1e-8, 1e-3], weight_decay=[0., 0.1], amsgrad=[False, True], maximize=[False, True])]
    + [('Adam', dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=a), {}) for a in [False, True]]
)

def _id(case): name, kw, _ = case; return name + '-' + '-'.join(f'{k}={v}' for k, v in kw.items() if k != 'lr')

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('foreach', [True, False])
@pytest.mark.parametrize('case', CASES, ids=_id)
def test_matches_torch_optim(case, foreach, dtype):
    name, kw, extra = case
    r = against_torch(name, kw, extra, dtype, foreach=foreach)
    assert r.perr <= TOL[dtype] and r.serr <= TOL[dtype], (r.perr, r.serr)
    assert r.moved > 1e-3  # the run really moved the parameters

def test_torch_optimizer_interop():
    "isinstance, param_groups with torch's names, and torch's execution flags either work or say which does not"
    ps = make_params()
    opt = optcb.optim.Adam(ps, lr=1e-3)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[0]['betas'] == (0.9, 0.999) and opt.param_groups[0]['weight_decay'] == 0.
    assert optcb.optim.AdamW(ps).param_groups[0]['weight_decay'] == 0.01
    with pytest.raises(NotImplementedError, match='capturable'):
        optcb.optim.Adam(ps, capturable=True)
    assert paths(optcb.optim.Adam(ps, differentiable=True)) == {'per-tensor'}  # tests/test_differentiable.py
    assert paths(optcb.optim.Adam(ps, fused=True)) == {'compiled'} and paths(optcb.optim.Adam(ps, fused=False)) == {'group'}
    with pytest.raises(RuntimeError, match='cannot be `True` together'):
        optcb.optim.Adam(ps, fused=True, foreach=True)
    with pytest.raises(NotImplementedError, match=r'capturable=True\) \(param group 1\)'):  # in a group too
        optcb.optim.Adam([{'params': ps[:2]}, {'params': ps[2:], 'capturable': True}])

# -- the defaults: the equality grids pass lr, betas and eps explicitly, so a wrong default would slip through them
# the classes mirroring torch.optim (the schedule-free ones follow the schedulefree package: test_schedule_free)
TORCH_CLASSES = sorted({e.torch.__name__ for e in optcb.REGISTRY.values() if e.torch and hasattr(torch.optim, e.torch.__name__)}
                       | {'AdamW'})

@pytest.mark.parametrize('name', TORCH_CLASSES)
def test_signature_and_defaults_are_torchs(name):
    import inspect
    ours, theirs = getattr(optcb.optim, name), getattr(torch.optim, name)
    po, pt = inspect.signature(ours).parameters, inspect.signature(theirs).parameters
    positional = lambda ps: [k for k, p in ps.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional(po)[:len(positional(pt))] == positional(pt)  # optcb may add `fused` at the end (RMSprop)
    for k, p in pt.items():
        assert k in po and po[k].kind == p.kind and po[k].default == p.default, (k, po.get(k), p)
    w = [torch.zeros(3, requires_grad=True)]
    go, gt = ours(w).param_groups[0], theirs(w).param_groups[0]
    for k in gt.keys() & go.keys() - {'params'}: assert go[k] == gt[k], (k, go[k], gt[k])
    assert 'lr' in gt.keys() & go.keys() and ('weight_decay' in gt) == ('weight_decay' in go)  # Rprop has none

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('name', TORCH_CLASSES)
def test_runs_with_defaults_equal_torchs(name, dtype):
    "Built with nothing but the parameters (and torch's required lr), 40 steps: bit for bit"
    kw = {} if inspect_default(getattr(torch.optim, name), 'lr') is not None else dict(lr=1e-3)
    r = against_torch(name, kw, dtype=dtype, steps=40)
    assert r.perr == 0 and r.serr == 0 and r.moved > 1e-4, (r.perr, r.serr, r.moved)

def inspect_default(cls, k):
    import inspect
    d = inspect.signature(cls).parameters[k].default
    return None if d is inspect.Parameter.empty else d
