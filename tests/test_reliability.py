"Bad input is refused like torch refuses it; non-finite gradients; checkpoints that resume exactly; long runs"
import math, os, pytest, torch
from functools import partial
import optcb
from optcb import Optimizer, average_grad, momentum_step, callback
from _util import make_params, clone_params, grad_stream, run, max_errs, slow

# -- every error case torch.optim rejects for these classes is rejected by optcb.optim with the same error type
TORCH_CASES = [('SGD', dict(lr=-0.1)), ('SGD', dict(lr=0.1, momentum=-0.5)), ('SGD', dict(lr=0.1, weight_decay=-1.)),
               ('SGD', dict(lr=0.1, nesterov=True)), ('SGD', dict(lr=0.1, momentum=0.9, dampening=0.5, nesterov=True)),
               ('SGD', dict(lr=torch.tensor([0.1, 0.2]))), ('SGD', dict(lr=0.1, fused=True, foreach=True))]
for cls in ['Adam', 'AdamW']:
    TORCH_CASES += [(cls, dict(lr=-1e-3)), (cls, dict(eps=-1e-8)), (cls, dict(betas=(1.0, 0.999))), (cls, dict(betas=(-0.1, 0.999))),
                    (cls, dict(betas=(0.9, 1.0))), (cls, dict(betas=(0.9, -0.1))), (cls, dict(weight_decay=-0.1)),
                    (cls, dict(lr=torch.tensor([1e-3, 1e-3]))), (cls, dict(fused=True, foreach=True))]
TORCH_CASES += [('RMSprop', dict(lr=-0.01)), ('RMSprop', dict(eps=-1e-8)), ('RMSprop', dict(alpha=-0.1)),
                ('RMSprop', dict(momentum=-0.1)), ('RMSprop', dict(weight_decay=-0.1)),
                ('Adagrad', dict(lr=-0.01)), ('Adagrad', dict(lr_decay=-0.1)), ('Adagrad', dict(weight_decay=-0.1)),
                ('Adagrad', dict(initial_accumulator_value=-0.1)), ('Adagrad', dict(eps=-1e-10)),
                ('Adamax', dict(lr=-0.01)), ('Adamax', dict(eps=-1e-8)), ('Adamax', dict(betas=(1.0, 0.999))),
                ('Adamax', dict(betas=(0.9, 1.0))), ('Adamax', dict(weight_decay=-0.1)),
                ('Adadelta', dict(lr=-0.1)), ('Adadelta', dict(rho=1.5)), ('Adadelta', dict(rho=-0.1)),
                ('Adadelta', dict(eps=-1e-6)), ('Adadelta', dict(weight_decay=-0.1))]
for cls in ['RAdam', 'NAdam']:
    TORCH_CASES += [(cls, dict(lr=-1e-3)), (cls, dict(eps=-1e-8)), (cls, dict(betas=(1.0, 0.999))), (cls, dict(betas=(0.9, 1.0))),
                    (cls, dict(weight_decay=-0.1))]
TORCH_CASES += [('NAdam', dict(momentum_decay=-1e-3))]

@pytest.mark.parametrize('cls,kw', TORCH_CASES, ids=[f'{c}-{k}' for c, k in TORCH_CASES])
def test_torch_error_cases_are_refused_with_the_same_type(cls, kw):
    with pytest.raises(Exception) as theirs: getattr(torch.optim, cls)(make_params(), **kw)
    with pytest.raises(type(theirs.value)): getattr(optcb.optim, cls)(make_params(), **kw)

FASTAI_CASES = [(optcb.SGD, dict(lr=-0.1)), (optcb.SGD, dict(lr=0.1, mom=-0.5)), (optcb.SGD, dict(lr=0.1, wd=-1.)),
                (optcb.SGD, dict(lr=0.1, nesterov=True)), (optcb.RMSProp, dict(lr=0.1, sqr_mom=-0.1)), (optcb.RMSProp, dict(lr=0.1, eps=-1.)),
                (optcb.Adam, dict(lr=0.1, mom=1.0)), (optcb.Adam, dict(lr=0.1, sqr_mom=1.0)), (optcb.Adam, dict(lr=0.1, wd=-0.1)),
                (optcb.Yogi, dict(lr=0.1, initial_accumulator=-1.)), (optcb.Yogi, dict(lr=0.1, eps=-1.))]

@pytest.mark.parametrize('make,kw', FASTAI_CASES, ids=[f'{m.__name__}-{k}' for m, k in FASTAI_CASES])
def test_fastai_style_constructors_refuse_the_same_cases(make, kw):
    with pytest.raises(ValueError): make(make_params(), **kw)

# -- structural mistakes
def test_structural_mistakes_name_the_problem():
    ps = make_params()
    with pytest.raises(ValueError, match='empty parameter list'): optcb.Adam([], lr=1e-3)
    with pytest.raises(ValueError, match='more than one parameter group'): optcb.Adam([ps[:3], ps[2:]], lr=1e-3)
    with pytest.raises(ValueError, match='non-leaf'): optcb.Adam([ps[0] * 2], lr=1e-3)
    with pytest.raises(ValueError, match='complex parameters'):  # a ValueError, as torch's SparseAdam raises
        optcb.optim.SparseAdam([torch.zeros(3, dtype=torch.complex64, requires_grad=True)])
    emb = torch.nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match='sparse gradients'): optcb.Adam(emb.parameters(), lr=1e-3).step()

def test_two_callbacks_returning_the_same_state_are_refused():
    @callback(mom=0.9)
    def my_momentum(p, *, mom, grad_avg=None):
        return {'grad_avg': p.grad.clone() if grad_avg is None else grad_avg.mul_(mom).add_(p.grad)}
    w = torch.zeros(3, requires_grad=True); w.grad = torch.ones(3)
    opt = Optimizer([w], [average_grad, my_momentum, momentum_step], lr=0.1)
    with pytest.raises(TypeError, match="average_grad and my_momentum both return state 'grad_avg'"): opt.step()

# -- non-finite gradients
def _nan_at(step, param=1, value=float('nan')):
    "The usual gradient stream, with one NaN (or `value`) in parameter `param` at step `step`"
    def grads(t, ps):
        gs = grad_stream(ps, 30, skip=())(t, ps)
        if t == step: gs[param] = gs[param].clone(); gs[param].view(-1)[0] = value
        return gs
    return grads

@pytest.mark.parametrize('value', [float('nan'), float('inf'), -float('inf')])
@pytest.mark.parametrize('compile', [False, True])
def test_skip_nonfinite_leaves_parameters_and_state_untouched(compile, value):
    ps = make_params(torch.float32); ref = clone_params(ps)
    opt = optcb.Adam(ps, lr=1e-2, compile=compile); opt.skip_nonfinite = True
    clean = optcb.Adam(ref, lr=1e-2, compile=compile)
    bad, good = _nan_at(5, value=value), grad_stream(ps, 30, skip=())
    for t in range(12):
        for p, g in zip(ps, bad(t, ps)): p.grad = g.clone()
        opt.step()
        if t != 5:  # the reference simply never sees the bad step
            for p, g in zip(ref, good(t, ref)): p.grad = g.clone()
            clean.step()
    assert opt.skipped_steps == 1 and opt.state[ps[0]]['step'] == 11
    assert max_errs(ps, ref, opt, clean) == (0, 0)

def test_without_the_option_nonfinite_gradients_behave_as_in_torch():
    ps = make_params(); ref = clone_params(ps)
    ours, theirs = optcb.optim.Adam(ps, lr=1e-2), torch.optim.Adam(ref, lr=1e-2, foreach=False)
    g = _nan_at(3)
    run(ours, ps, g, 6); run(theirs, ref, g, 6)
    for a, b in zip(ps, ref): assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()])

def test_grad_scaler_skips_inf_steps():
    torch.manual_seed(0)
    models = [torch.nn.Linear(4, 2) for _ in range(2)]; models[1].load_state_dict(models[0].state_dict())
    opts = [optcb.optim.Adam(models[0].parameters(), lr=1e-2), torch.optim.Adam(models[1].parameters(), lr=1e-2, foreach=False)]
    scalers = [torch.amp.GradScaler('cpu', init_scale=1024.) for _ in range(2)]
    x = torch.randn(8, 4)
    for t in range(6):
        for m, o, sc in zip(models, opts, scalers):
            o.zero_grad()
            sc.scale(m(x).pow(2).mean()).backward()
            if t == 2: m.weight.grad[0, 0] = float('inf')
            before = [p.detach().clone() for p in m.parameters()]
            sc.step(o); sc.update()
            if t == 2: assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))  # skipped
    assert scalers[0].get_scale() == scalers[1].get_scale() == 512.
    assert opts[0].state[models[0].weight]['step'] == 5
    for a, b in zip(models[0].parameters(), models[1].parameters()): assert torch.equal(a, b)

# -- checkpoints
@slow
@pytest.mark.parametrize('compile', [False, True])
def test_save_load_weights_only_resumes_bit_identically(tmp_path, compile):
    ps = make_params(torch.float32); opt = optcb.Yogi(ps, lr=1e-2, compile=compile)
    g = grad_stream(ps, 40)
    run(opt, ps, g, 15)
    torch.save({'params': [p.detach() for p in ps], 'opt': opt.state_dict()}, tmp_path / 'ckpt.pt')
    run(opt, ps, lambda t, qs: g(t + 15, qs), 15)  # the uninterrupted run
    ck = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    ps2 = [p.clone().requires_grad_() for p in ck['params']]
    opt2 = optcb.Yogi(ps2, lr=1e-2, compile=compile); opt2.load_state_dict(ck['opt'])
    run(opt2, ps2, lambda t, qs: g(t + 15, qs), 15)
    assert all(torch.equal(a, b) for a, b in zip(ps, ps2)) and max_errs(ps, ps2, opt, opt2) == (0, 0)

def test_distributed_checkpoint_in_one_process_resumes_exactly(tmp_path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 1))
    opt = optcb.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(16, 5)
    def train(m, o, n):
        for _ in range(n): o.zero_grad(); m(x).pow(2).mean().backward(); o.step()
    train(model, opt, 5)
    dcp.save({'model': model.state_dict(), 'optim': get_optimizer_state_dict(model, opt)}, checkpoint_id=str(tmp_path / 'dcp'))
    train(model, opt, 5)
    model2 = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 1)); opt2 = optcb.Adam(model2.parameters(), lr=1e-2)
    sd = {'model': model2.state_dict(), 'optim': get_optimizer_state_dict(model2, opt2)}
    dcp.load(sd, checkpoint_id=str(tmp_path / 'dcp'))
    model2.load_state_dict(sd['model']); set_optimizer_state_dict(model2, opt2, sd['optim'])
    train(model2, opt2, 5)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))

# -- long runs
def _rss_mb(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20

def _quadratic(dtype):
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    A = (q * torch.linspace(0.5, 2.0, 20, dtype=torch.float64)) @ q.T  # condition number 4
    b = torch.randn(20, generator=g, dtype=torch.float64)
    return A.to(dtype), b.to(dtype)

@slow
@pytest.mark.parametrize('make', [partial(optcb.Adam, lr=1e-2, wd=0.), partial(optcb.Yogi, lr=1e-2)], ids=['Adam', 'Yogi'])
def test_ten_thousand_float32_steps_stay_close_to_float64(make):
    "A learning rate annealed to zero, as in training: float32 rounding must not accumulate into a different answer"
    xs = {}
    for dtype in (torch.float32, torch.float64):
        A, b = _quadratic(dtype)
        x = torch.zeros(20, dtype=dtype, requires_grad=True)
        opt = make([x])
        for t in range(10_000):
            opt.set_hyper('lr', 1e-2 * (1 + math.cos(math.pi * t / 10_000)) / 2)
            x.grad = A @ x.detach() - b
            opt.step()
            if t == 999: n_state, rss_1k = len(opt.state[x]), _rss_mb()
        assert len(opt.state[x]) == n_state and len(opt.state) == 1  # state does not grow
        assert _rss_mb() - rss_1k < 20  # nor does memory: no tensors leaked per step
        xs[dtype] = x.detach()
    rel = ((xs[torch.float32].double() - xs[torch.float64]).abs().max() / xs[torch.float64].abs().max()).item()
    assert rel < 1e-5, rel
