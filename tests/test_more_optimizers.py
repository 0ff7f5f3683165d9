"Adagrad, Adamax, Adadelta against torch.optim; Lion against a reference written from its paper; group == per-tensor"
import itertools, pytest, torch
import optcb
from _util import make_params, clone_params, grad_stream, run, max_errs

STEPS = 120
TOL = {torch.float64: 1e-10, torch.float32: 1e-6}
STATE = {'Adagrad': {'sum': 'sqr_sum'}, 'Adamax': {'exp_avg': 'grad_avg', 'exp_inf': 'inf_norm'},
         'Adadelta': {'square_avg': 'sqr_avg', 'acc_delta': 'delta_avg'}}
def grid(**axes): return [dict(zip(axes, v)) for v in itertools.product(*axes.values())]
CASES = ([('Adagrad', kw, dict(lr=0.05, lr_decay=0.01)) for kw in grid(lr=[0.01], lr_decay=[0., 0.01], weight_decay=[0., 0.1],
                                                                       initial_accumulator_value=[0., 0.1], maximize=[False, True])]
       + [('Adamax', kw, dict(lr=0.005, betas=(0.8, 0.95))) for kw in grid(lr=[2e-3], betas=[(0.9, 0.999), (0.5, 0.9)], eps=[1e-8, 1e-3],
                                                                          weight_decay=[0., 0.1], maximize=[False, True])]
       + [('Adadelta', kw, dict(lr=0.5, rho=0.8)) for kw in grid(lr=[1.], rho=[0.9, 0.5], eps=[1e-6, 1e-3], weight_decay=[0., 0.1],
                                                                  maximize=[False, True])])

def groups(ps, extra): return [{'params': ps[:2]}, {'params': ps[2:4], **extra}, {'params': ps[4:]}]

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('foreach', [True, False])
@pytest.mark.parametrize('case', CASES, ids=lambda c: c[0] + '-' + '-'.join(f'{k}={v}' for k, v in c[1].items()))
def test_matches_torch_optim(case, foreach, dtype):
    name, kw, extra = case
    ps = make_params(dtype); ref = clone_params(ps)
    ours = getattr(optcb.optim, name)(groups(ps, extra), foreach=foreach, **kw)
    theirs = getattr(torch.optim, name)(groups(ref, extra), foreach=False, **kw)
    g = grad_stream(ps, STEPS)
    run(ours, ps, g, STEPS); run(theirs, ref, g, STEPS)
    perr, serr = max_errs(ps, ref, ours, theirs, STATE[name], ignore=('step',) if name == 'Adadelta' else ())
    assert perr <= TOL[dtype] and serr <= TOL[dtype], (perr, serr)

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
