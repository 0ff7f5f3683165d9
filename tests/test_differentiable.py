"""`differentiable=True`: a step autograd records (meta-learning, hyperparameter gradients). Checked with gradcheck, and
against torch's own differentiable step: the same values and the same gradients, through one step and through two"""
import inspect, pytest, torch
from torch.autograd import gradcheck
from optcb import optim

def _r(n=10, scale=1.): return (scale * torch.rand(n, dtype=torch.float64)).requires_grad_()
def _t(x, grad=False): return torch.tensor(x, dtype=torch.float64, requires_grad=grad)

def _state(name):
    """State under torch's names, as a checkpoint or a meta-learner would hand it in: buffers require grad, counters
    not. Without momentum, none for SGD: torch ignores a buffer handed in, optcb's SGD drops it (see the docs)"""
    adam = lambda: dict(step=_t(10.), exp_avg=_r(), exp_avg_sq=_r())
    return {'SGD': lambda: dict(momentum_buffer=_r()), 'SGD0': dict,  # without momentum, SGD keeps no state
            'Adam': lambda: dict(adam(), max_exp_avg_sq=_r()), 'AdamW': lambda: dict(adam(), max_exp_avg_sq=_r()),
            'RMSprop': lambda: dict(step=_t(0.), square_avg=_r(), momentum_buffer=_r(), grad_avg=_r(scale=1e-2)),
            'Adadelta': lambda: dict(step=_t(10.), square_avg=_r(), acc_delta=_r()),
            'Adagrad': lambda: dict(step=_t(10.), sum=_r()),
            'Adamax': lambda: dict(step=_t(10.), exp_avg=_r(), exp_inf=_r()),
            'ASGD': lambda: dict(step=_t(10.), eta=_t(0.9), mu=_t(1.), ax=_r()),
            'Rprop': lambda: dict(step=_t(10.), prev=_r(), step_size=_r()),
            'NAdam': lambda: dict(adam(), mu_product=_t(1., grad=True)),
            'RAdam': adam}[name]()

CASES = [('SGD0', dict(lr=0.9)), ('SGD', dict(lr=0.9, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True)),
         ('Adam', dict(lr=0.9, amsgrad=True)), ('AdamW', dict(lr=0.9, amsgrad=True)),
         ('RMSprop', dict(lr=0.9, maximize=True, momentum=0.9, centered=True, weight_decay=0.1)),
         ('Adadelta', dict(lr=0.9, weight_decay=0.1)), ('Adagrad', dict(lr=0.9, weight_decay=0.1)),
         ('Adamax', dict(lr=0.9, weight_decay=0.1)), ('ASGD', dict(lr=0.9)), ('Rprop', dict(lr=0.9)),
         ('NAdam', dict(lr=0.9)), ('NAdam', dict(lr=0.9, weight_decay=0.1, decoupled_weight_decay=True)),
         ('RAdam', dict(lr=0.9)), ('RAdam', dict(lr=0.9, weight_decay=0.1, decoupled_weight_decay=True))]
IDS = [f"{n}-{'-'.join(kw)}" for n, kw in CASES]
def _cls(lib, name): return getattr(lib, name.rstrip('0'))

def _one_step(p, grad, state, cls, kw, *inputs):
    """One differentiable step from `state` (`inputs`: the state's tensors, for gradcheck to vary); the new parameter
    and the state that requires grad, by name"""
    p = p.clone(); p.grad = grad
    opt = cls([p], differentiable=True, **kw)
    opt.state[p].update({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()})
    opt.step()
    return {'param': p, **{k: v for k, v in opt.state[p].items() if isinstance(v, torch.Tensor) and v.requires_grad}}

@pytest.mark.parametrize('name,kw', CASES, ids=IDS)
def test_a_differentiable_step_passes_gradcheck(name, kw):
    torch.manual_seed(0)
    p, g, state = _r(), _r(), _state(name)
    fn = lambda *a: tuple(_one_step(*a).values())
    assert gradcheck(fn, (p, g, state, _cls(optim, name), kw, *state.values()))

def _grads(outs, inputs, seed=1):
    "The gradients of a random weighting of `outs` with respect to `inputs` (a vector-Jacobian product)"
    g = torch.Generator().manual_seed(seed)
    total = sum((o * torch.rand(o.shape, generator=g, dtype=o.dtype)).sum() for _, o in sorted(outs.items()))
    return torch.autograd.grad(total, inputs, allow_unused=True)

@pytest.mark.parametrize('name,kw', CASES, ids=IDS)
def test_a_differentiable_step_and_its_gradients_equal_torchs(name, kw):
    torch.manual_seed(0)
    p, g, state = _r(), _r(), _state(name)
    inputs = [p, g, *[v for v in state.values() if v.requires_grad]]
    ours, theirs = _one_step(p, g, state, _cls(optim, name), kw), _one_step(p, g, state, _cls(torch.optim, name), kw)
    assert ours.keys() == theirs.keys()
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(ours, inputs), _grads(theirs, inputs)):
        if a is None or b is None: assert a is b
        else: torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

def _two_steps(p, grad, state, cls, kw, *inputs):
    """Two differentiable steps on a tiny regression, each from a gradient taken with `create_graph`: the loss after
    them (the meta-loss of a learned learning rate, say) and the state that requires grad"""
    p = p.clone(); p.grad = grad
    kw = dict(kw)
    if 'beta1' in kw: kw['betas'] = (kw.pop('beta1'), kw.pop('beta2'))  # separately, for gradcheck to see them
    opt = cls([p], differentiable=True, **kw)
    opt.state[p].update({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()})
    x, y = _t([1.]), _t([2.])
    for _ in range(2):
        loss = torch.nn.functional.mse_loss(x * p.sum(), y)
        loss.backward(inputs=(p,), create_graph=True)
        opt.step(); opt.zero_grad()
    return (loss, *[v for v in opt.state[p].values() if isinstance(v, torch.Tensor) and v.requires_grad])

HYPERS = [('Adam', dict(lr=_t(1e-3, True))), ('Adam', dict(weight_decay=_t(0.999, True))),
          ('Adam', dict(beta1=_t(0.9, True), beta2=_t(0.999, True), lr=_t([1e-3], True))),
          ('Adam', dict(lr=_t(1e-3, True), weight_decay=_t(0.999, True), beta1=_t(0.9, True), beta2=_t(0.999, True))),
          ('AdamW', dict(lr=_t(1e-3, True))), ('AdamW', dict(weight_decay=_t(0.999, True))),
          ('AdamW', dict(beta1=_t(0.9, True), beta2=_t(0.999, True))),
          ('SGD0', dict(lr=_t(1e-3, True))), ('SGD0', dict(weight_decay=_t(0.9, True))),
          ('SGD0', dict(weight_decay=_t(0.9, True), lr=_t(1e-3, True)))]

@pytest.mark.parametrize('name,kw', HYPERS, ids=[f"{n}-{'-'.join(kw)}" for n, kw in HYPERS])
def test_hyperparameter_gradients_through_two_steps_pass_gradcheck_and_equal_torchs(name, kw):
    torch.manual_seed(0)
    p, g = _r(), _r()
    state = _state('SGD0' if name == 'SGD0' else name)  # Adam's with `max_exp_avg_sq`, as torch's tests hand it in
    hypers = [v for v in kw.values() if isinstance(v, torch.Tensor)]
    args = (p, g, state, _cls(optim, name), kw, *state.values(), *hypers)
    assert gradcheck(_two_steps, args)
    ours, theirs = _two_steps(*args), _two_steps(p, g, state, _cls(torch.optim, name), kw)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    mine = torch.autograd.grad(ours[0], hypers)
    torch.testing.assert_close(mine, torch.autograd.grad(theirs[0], hypers), rtol=1e-10, atol=1e-12)
    assert all(h.abs() > 0 for h in mine), "a hyperparameter without a gradient: the test tests nothing"

def test_hyperparameter_gradients_through_sgd_with_momentum_pass_gradcheck():
    "Where torch's own differentiable SGD cannot go (2.14: its backward finds a value it saved overwritten in place)"
    torch.manual_seed(0)
    p, g, state = _r(), _r(), _state('SGD')
    kw = dict(weight_decay=_t(0.9, True), lr=_t(1e-3, True), momentum=0.9, nesterov=True)
    assert gradcheck(_two_steps, (p, g, state, optim.SGD, kw, *state.values(), kw['weight_decay'], kw['lr']))

@pytest.mark.parametrize('name,kw', CASES, ids=IDS)
def test_a_differentiable_step_moves_the_parameters_as_an_ordinary_step(name, kw):
    "Recording changes nothing in the arithmetic: five steps from no state equal the per-tensor path to the last bit"
    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=g, dtype=torch.float64) for s in [(4, 3), (5,)]]
    qs = [p.clone() for p in ps]
    recorded, plain = _cls(optim, name)(ps, differentiable=True, **kw), _cls(optim, name)(qs, foreach=False, **kw)
    for _ in range(5):
        for p, q in zip(ps, qs): p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64); q.grad = p.grad.clone()
        recorded.step(); plain.step()
    assert all(torch.equal(p, q) for p, q in zip(ps, qs))
    assert all(torch.equal(torch.as_tensor(recorded.state[p][k]), torch.as_tensor(plain.state[q][k]))
               for p, q in zip(ps, qs) for k in plain.state[q])

def _error(make):
    try: make()
    except Exception as e: return type(e), str(e)

def test_differentiable_is_refused_where_torch_refuses_it_in_torchs_words():
    p = torch.zeros(3, requires_grad=True)
    for name in ('SGD', 'Adam', 'AdamW', 'Adagrad'):  # the classes with a fused kernel
        ours = _error(lambda: getattr(optim, name)([p], fused=True, differentiable=True))
        assert ours is not None and ours == _error(lambda: getattr(torch.optim, name)([p], fused=True, differentiable=True))
    made = p * 2  # not a leaf: torch optimizes it only in a differentiable step
    assert _error(lambda: optim.SGD([made], lr=0.1)) == _error(lambda: torch.optim.SGD([made], lr=0.1)) != None
    assert _error(lambda: optim.SGD([made], lr=0.1, differentiable=True)) is None
    for name in ('Adafactor', 'Muon', 'SparseAdam', 'LBFGS'):  # torch's have no differentiable step
        assert 'differentiable' not in inspect.signature(getattr(torch.optim, name)).parameters
        assert 'differentiable' not in inspect.signature(getattr(optim, name)).parameters

def test_plan_says_why_a_differentiable_group_steps_per_tensor():
    ps = [torch.zeros(3), torch.zeros(2)]
    opt = optim.Adam([{'params': ps[:1]}, {'params': ps[1:], 'differentiable': True}], foreach=True)
    assert [(b.path, b.why) for b in opt.plan()] == [('group', 'foreach=True'),
                                                      ('per-tensor', 'differentiable=True: autograd records the step')]
