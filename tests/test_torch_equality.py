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
    for flag in ['capturable', 'differentiable']:
        with pytest.raises(NotImplementedError, match=flag):
            optcb.optim.Adam(ps, **{flag: True})
    assert paths(optcb.optim.Adam(ps, fused=True)) == {'compiled'} and paths(optcb.optim.Adam(ps, fused=False)) == {'group'}
    with pytest.raises(RuntimeError, match='cannot be `True` together'):
        optcb.optim.Adam(ps, fused=True, foreach=True)
    with pytest.raises(NotImplementedError, match='amsgrad'):
        optcb.optim.Adam([{'params': ps[:2], 'amsgrad': True}, {'params': ps[2:]}])
