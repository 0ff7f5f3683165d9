"optcb.SGD/RMSProp/Adam equal fastai.optimizer's, and fastai's own callbacks run unchanged inside optcb.Optimizer"
import pytest, torch
from functools import partial
import fastai.optimizer as fo
import optcb
from _util import make_params, clone_params, grad_stream, run, max_errs, grid, STEPS, TOL, paths

CASES = ([('SGD', kw) for kw in grid(lr=[0.01], mom=[0., 0.9], wd=[0., 0.1], decouple_wd=[True, False])]
       + [('RMSProp', kw) for kw in grid(lr=[0.003], mom=[0., 0.9], sqr_mom=[0.99, 0.9], wd=[0., 0.1], decouple_wd=[True, False])]
       + [('Adam', {})]  # fastai's defaults: mom 0.9, sqr_mom 0.99, eps 1e-5, wd 0.01 decoupled
       + [('Adam', kw) for kw in grid(mom=[0.9, 0.5], sqr_mom=[0.99, 0.999], eps=[1e-5, 1e-8], wd=[0.01, 0.], decouple_wd=[True, False])])

def _id(case): return case[0] + '-' + '-'.join(f'{k}={v}' for k, v in case[1].items())

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('foreach', [True, False])
@pytest.mark.parametrize('case', CASES, ids=_id)
def test_matches_fastai(case, foreach, dtype):
    name, kw = case
    kw = {'lr': 0.01, **kw}
    ps = make_params(dtype); ref_ps = clone_params(ps)
    ours = getattr(optcb, name)([ps[:3], ps[3:]], foreach=foreach, **kw)
    ref = getattr(fo, name)([ref_ps[:3], ref_ps[3:]], **kw)
    for o in (ours, ref): o.set_hyper('lr', [kw['lr'] / 2, kw['lr']])  # groups with different learning rates
    ours.state[ps[1]]['do_wd'] = ref.state[ref_ps[1]]['do_wd'] = False  # what Learner(wd_bn_bias=False) does
    grads = grad_stream(ps, STEPS)
    run(ours, ps, grads, STEPS); run(ref, ref_ps, grads, STEPS)
    perr, serr = max_errs(ps, ref_ps, ours, ref)
    assert perr <= TOL[dtype] and serr <= TOL[dtype], (perr, serr)

@pytest.mark.parametrize('foreach', [False, True])
def test_fastai_callbacks_run_unchanged(foreach):
    "fastai's own callback functions (positional hypers, **kwargs, `_defaults`, returning p) compose an optcb Optimizer"
    ps = make_params(); ref_ps = clone_params(ps)
    cbs = [fo.weight_decay, partial(fo.average_grad, dampening=True), fo.average_sqr_grad, fo.step_stat, fo.adam_step]
    ours = optcb.Optimizer(ps, cbs, lr=0.01, mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.01, foreach=foreach)
    assert paths(ours) == {'group' if foreach else 'per-tensor'}  # fastai's callbacks are not declared group-safe: per tensor unless asked
    ref = fo.Adam(ref_ps, lr=0.01)
    grads = grad_stream(ps, STEPS)
    run(ours, ps, grads, STEPS); run(ref, ref_ps, grads, STEPS)
    perr, serr = max_errs(ps, ref_ps, ours, ref)
    assert perr <= 1e-12 and serr <= 1e-12, (perr, serr)
