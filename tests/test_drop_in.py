"""The drop-in contract beyond arithmetic (optcb.optim, and the engine under both namespaces): a step never writes a
gradient; options per param group; torch's keys in every group"""
import copy, inspect, pytest, torch
import optcb
from optcb import optim
from _util import sample, slow

PATHS = {'per-tensor': dict(foreach=False), 'group': dict(foreach=True, compile=False), 'compiled': dict(compile=True)}
TORCH_PATHS = {'per-tensor': dict(foreach=False), 'group': dict(foreach=True, fused=False), 'compiled': dict(fused=True)}

def _params(matrices=False):
    "Many small tensors (a compiled step gathers them into one buffer) and a large one, with gradients"
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4)] * 70 + [(48, 64)] + ([] if matrices else [(5,), (7,)])
    ps = [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]
    return ps

def _steps_leave_grads_alone(opt, ps, steps=3, closure=None):
    for t in range(steps):
        grads = [torch.randn_like(p) for p in ps]
        for p, gr in zip(ps, grads): p.grad = gr
        kept = [gr.clone() for gr in grads]
        versions = [gr._version for gr in grads]
        before = [p.detach().clone() for p in ps]
        opt.step(closure) if closure else opt.step()
        assert all(p.grad is gr for p, gr in zip(ps, grads)), f"step {t}: a .grad was replaced"
        assert all(torch.equal(gr, k) for gr, k in zip(grads, kept)), f"step {t}: a gradient's values changed"
        assert [gr._version for gr in grads] == versions, f"step {t}: a gradient was written (its version moved)"
    assert any(not torch.equal(p, b) for p, b in zip(ps, before)), "nothing moved: the test tests nothing"

def _fastai_kwargs(build):
    "Weight decay as L2 (folded into the gradient) wherever the builder has it"
    sig = inspect.signature(build).parameters
    return {**({'wd': 0.1} if 'wd' in sig else {}), **({'decouple_wd': False} if 'decouple_wd' in sig else {})}

REGISTRY_CASES = [(n, path) for n, e in optcb.REGISTRY.items() for path in PATHS
                  if (path == 'per-tensor' or e.compiles) and not (path == 'compiled' and n == 'ranger')]

@pytest.mark.parametrize('name,path', sample(REGISTRY_CASES, *range(0, len(REGISTRY_CASES), 7)))
def test_no_registry_optimizer_writes_a_gradient(name, path):
    e = optcb.REGISTRY[name]
    ps = _params(matrices=name == 'muon')
    sig = inspect.signature(e.fastai).parameters
    opt = e.build(ps, **_fastai_kwargs(e.fastai), **{k: v for k, v in PATHS[path].items() if k in sig})
    _steps_leave_grads_alone(opt, ps)

TORCH_CLASSES = [n for n in optim.__all__ if n not in ('TorchOptimizer', 'strong_wolfe', 'SparseAdam', 'LBFGS')]
TORCH_CASES = [(n, path) for n in TORCH_CLASSES for path in TORCH_PATHS
               if path == 'per-tensor' or n not in ('Muon', 'Adafactor')]

def _torch_kwargs(cls, path):
    sig = inspect.signature(cls).parameters
    kw = {k: v for k, v in [('weight_decay', 0.1), ('maximize', True), *TORCH_PATHS[path].items()] if k in sig}
    if cls is optim.Muon: kw['lr'] = 0.02
    return kw

@pytest.mark.parametrize('name,path', sample(TORCH_CASES, *range(0, len(TORCH_CASES), 5)))
def test_no_torch_signature_class_writes_a_gradient(name, path):
    cls = getattr(optim, name)
    ps = _params(matrices=name == 'Muon')
    _steps_leave_grads_alone(cls(ps, **_torch_kwargs(cls, path)), ps)

def test_lbfgs_and_sparse_adam_leave_gradients_alone():
    ps = _params()
    opt = optim.LBFGS(ps, max_iter=3, maximize=True)
    _steps_leave_grads_alone(opt, ps, closure=lambda: sum((p.detach() ** 2).sum() for p in ps))
    emb = torch.nn.Embedding(10, 3, sparse=True).double()
    opt = optim.SparseAdam(emb.parameters(), maximize=True)
    for _ in range(3):
        emb.zero_grad(); emb(torch.tensor([1, 4, 4])).sum().backward()
        g = emb.weight.grad; kept = g.to_dense().clone()
        opt.step()
        assert emb.weight.grad is g and torch.equal(g.to_dense(), kept)

@slow
def test_under_dynamo_a_gradient_is_not_written_either(monkeypatch):
    "Where no kernel can be built ahead of time the chain runs under torch.compile: it too leaves gradients alone"
    monkeypatch.setattr(optcb.paths, '_build', lambda fn, args: (_ for _ in ()).throw(RuntimeError('no kernel')))
    ps = _params()
    with pytest.warns(UserWarning, match='could not be built ahead of time'):
        opt = optim.Adam(ps, weight_decay=0.1, maximize=True, fused=True)
        _steps_leave_grads_alone(opt, ps)
    assert opt.paths.kernel_error

# -- options per param group: any option torch's class takes, in any group
def _db_inputs():
    "(class name, keyword arguments) for every input configuration torch's optim_db gives its optimizers on CPU"
    from _util import torch_optim_db
    cases = []
    for info in torch_optim_db():
        name = info.optim_cls.__name__
        if name in ('LBFGS', 'SparseAdam') or not hasattr(optim, name): continue  # one group; sparse gradients
        cases += [(name, i.kwargs) for i in info.optim_inputs_func(device='cpu')]
    return cases

def _muon_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in [(4, 3), (5, 2), (3, 3), (2, 6)]]

@pytest.mark.parametrize('name,kw', _db_inputs(), ids=lambda x: x if isinstance(x, str) else repr(x))
def test_every_option_torch_tests_may_be_set_in_one_param_group(name, kw):
    """optim_db's configurations set in the middle one of three groups (torch's test_param_groups_* do so), the other
    groups on the defaults: parameters and state as torch's for-loop path gives them, over many steps"""
    from _util import against_torch, clone_params, grad_stream, run, rel_err, STEPS
    if name == 'Adagrad' and 'initial_accumulator_value' in kw:
        return _adagrad_group_accumulator(kw)
    if name != 'Muon':
        r = against_torch(name, {}, extra=kw, steps=40)
        assert r.perr < 1e-10 and r.serr < 1e-10 and r.moved > 1e-3, (r.perr, r.serr)
        return
    ps = _muon_params(); ref = clone_params(ps)
    groups = lambda qs: [{'params': qs[:1]}, {'params': qs[1:3], **kw}, {'params': qs[3:]}]
    ours, theirs = optim.Muon(groups(ps)), torch.optim.Muon(groups(ref))
    grads = grad_stream(ps, 40, skip=())
    run(ours, ps, grads, 40); run(theirs, ref, grads, 40)
    assert max(rel_err(a, b) for a, b in zip(ps, ref)) < 1e-6  # Newton–Schulz in bfloat16, as torch runs it

def _adagrad_group_accumulator(kw):
    """torch's Adagrad fills every accumulator with the constructor's `initial_accumulator_value` when it is built, so
    a group's own value is ignored; optcb starts the group's accumulators at the group's value (the reference: torch
    with those accumulators refilled so before the first step)"""
    from _util import make_params, three_groups, clone_params, grad_stream, run, max_errs, TORCH_STATE
    ps = make_params(); ref = clone_params(ps)
    ours = optim.Adagrad(three_groups(ps, kw))
    theirs = torch.optim.Adagrad(three_groups(ref, kw), foreach=False)
    for p in theirs.param_groups[1]['params']: theirs.state[p]['sum'].fill_(kw['initial_accumulator_value'])
    grads = grad_stream(ps, 40)
    run(ours, ps, grads, 40); run(theirs, ref, grads, 40)
    perr, serr = max_errs(ps, ref, ours, theirs, TORCH_STATE['Adagrad'])
    assert perr < 1e-10 and serr < 1e-10, (perr, serr)

TORCH_NAMED = [n for n in TORCH_CLASSES if hasattr(torch.optim, n)] + ['LBFGS', 'SparseAdam']

@pytest.mark.parametrize('name', TORCH_NAMED)
def test_every_group_keeps_torchs_keys_with_torchs_defaults(name):
    "Execution options and flags included, in the groups and in the state dict, as torch's class keeps them"
    ps = _muon_params() if name == 'Muon' else [torch.zeros(3, 2, requires_grad=True), torch.zeros(4, requires_grad=True)]
    ours, theirs = getattr(optim, name)([ps[0]]), getattr(torch.optim, name)([ps[0]])
    if name != 'LBFGS': ours.add_param_group({'params': ps[1:]}); theirs.add_param_group({'params': ps[1:]})
    for a, b in zip(ours.state_dict()['param_groups'], theirs.state_dict()['param_groups']):
        assert a == b
    assert [dict(g, params=None) for g in ours.param_groups] == [dict(g, params=None) for g in theirs.param_groups]

def test_groups_with_the_same_flags_share_one_chain_and_one_kernel():
    ps = _params()
    opt = optim.Adam([{'params': ps[:30]}, {'params': ps[30:60], 'amsgrad': True}, {'params': ps[60:], 'lr': 0.1}],
                     fused=True)
    for _ in range(3):
        for p in ps: p.grad = torch.randn_like(p)
        opt.step()
    assert len(opt._routes) == 2 and opt._route(opt.param_groups[2]) is opt.paths  # groups 0 and 2: the defaults
    assert all(len(paths._kernels) == 1 for paths in opt._routes.values())
    assert 'max_exp_avg_sq' in opt.state[ps[30]] and 'max_exp_avg_sq' not in opt.state[ps[0]]
    assert {b.group: b.path for b in opt.plan()} == {0: 'compiled', 1: 'compiled', 2: 'compiled'}

def test_a_group_chooses_its_own_execution_options():
    ps = _params()
    opt = optim.Adam([{'params': ps[:2]}, {'params': ps[2:4], 'foreach': False}, {'params': ps[4:], 'fused': True}])
    assert {b.group: b.path for b in opt.plan()} == {0: 'group', 1: 'per-tensor', 2: 'compiled'}
    with pytest.raises(RuntimeError, match='cannot be `True` together'):
        optim.Adam(ps, fused=True, foreach=True)
    opt = optim.SGD([{'params': ps[:2]}, {'params': ps[2:], 'differentiable': True}])
    assert {b.group: (b.path, b.why) for b in opt.plan()}[1] == ('per-tensor', 'differentiable=True: autograd records the step')
    with pytest.raises(RuntimeError, match='`fused` does not support `differentiable`'):
        optim.Adam([{'params': ps[:2]}, {'params': ps[2:], 'differentiable': True, 'fused': True}])

def test_fastai_signature_flags_may_differ_between_groups():
    "optcb.Adam's decouple_wd and amsgrad per group: each group steps as an optimizer built with its flags"
    from _util import make_params, clone_params, grad_stream, run, max_errs
    ps = make_params(); a, b = clone_params(ps), clone_params(ps)
    mixed = optcb.Adam([{'params': ps[:3]}, {'params': ps[3:], 'decouple_wd': False, 'amsgrad': True}], lr=0.01)
    first, second = optcb.Adam(a[:3], lr=0.01), optcb.Adam(a[3:], lr=0.01, decouple_wd=False, amsgrad=True)
    g = grad_stream(ps, 30)
    run(mixed, ps, g, 30)
    for t in range(30):
        for p, gr in zip(a, g(t, a)): p.grad = gr
        first.step(); second.step()
    assert max_errs(ps[:3], a[:3], mixed, first) == (0., 0.) and max_errs(ps[3:], a[3:], mixed, second) == (0., 0.)
    with pytest.raises(TypeError, match=r"flag amsgrad=\[1\] \(param group 1\)"):
        optcb.Adam([{'params': ps[:3]}, {'params': ps[3:], 'amsgrad': [1]}], lr=0.01)

def test_a_checkpoint_keeps_each_groups_flags():
    "Saved and loaded into an optimizer built with other flags, each group steps as the checkpoint's did"
    from _util import make_params, clone_params, grad_stream, run, max_errs
    ps = make_params(); qs = clone_params(ps)
    groups = lambda xs: [{'params': xs[:3], 'maximize': True}, {'params': xs[3:], 'amsgrad': True}]
    a = optim.Adam(groups(ps), lr=0.01, weight_decay=0.1)
    g = grad_stream(ps, 20)
    run(a, ps, g, 10)
    b = optim.Adam([qs[:3], qs[3:]], lr=0.01)
    for p, q in zip(ps, qs): q.data.copy_(p.data)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # torch's loading shares same-dtype tensors: a copy
    assert [(x['maximize'], x['amsgrad']) for x in b.param_groups] == [(True, False), (False, True)]
    for t in range(10, 20):
        for x, y, gr in zip(ps, qs, g(t, ps)): x.grad = gr; y.grad = None if gr is None else gr.clone()
        a.step(); b.step()
    assert max_errs(qs, ps, b, a) == (0., 0.)

# -- tensor learning rates: a 1-element tensor of any rank, on every path
TENSOR_LR = ['SGD', 'RMSprop', 'Adam', 'AdamW', 'Adagrad', 'Adamax', 'Adadelta', 'RAdam', 'NAdam', 'Rprop', 'ASGD',
             'Adafactor']
LR_CASES = [(n, dims, path) for n in TENSOR_LR for dims in (0, 1, 2) for path in TORCH_PATHS
            if not (n == 'Adafactor' and path != 'per-tensor')
            and not (n in ('Adam', 'AdamW') and path == 'group')]  # torch refuses a tensor lr with foreach=True

@pytest.mark.parametrize('name,dims,path', sample(LR_CASES, *range(0, len(LR_CASES), 4)))
def test_a_tensor_learning_rate_of_any_rank_steps_as_torchs(name, dims, path):
    """Uncompiled, bit for bit as torch (which computes `1 − lr·wd` and the like in the tensor's float32); compiled,
    within 1e-6 relative: inductor evaluates those float32 products in its own order and precision"""
    from _util import against_torch
    lr = torch.tensor(0.01).reshape((1,) * dims)
    kw = dict(lr=lr, **({'weight_decay': 0.1} if name != 'Rprop' else {}))
    r = against_torch(name, kw, steps=10, **TORCH_PATHS[path])
    assert r.perr < (1e-6 if path == 'compiled' else 1e-12) and r.moved > 1e-4, r.perr

@slow
def test_changing_a_tensor_learning_rate_does_not_recompile():
    "A schedule that writes the tensor in place (as torch's schedulers do for a tensor lr) reuses the kernel"
    from _util import clone_params, rel_err
    ps = _params(); ref = clone_params(ps)
    lr, lr_ref = torch.tensor([0.01]), torch.tensor([0.01])
    ours, theirs = optim.Adam(ps, lr=lr, fused=True), torch.optim.Adam(ref, lr=lr_ref, foreach=False)
    for t in range(6):
        for p, q in zip(ps, ref): p.grad = torch.randn_like(p); q.grad = p.grad.clone()
        ours.step(); theirs.step()
        lr.fill_(0.01 / (t + 2)); lr_ref.fill_(0.01 / (t + 2))
    assert len(ours.paths._kernels) == 1 and all(ours.paths._kernels.values())
    assert max(rel_err(p, q) for p, q in zip(ps, ref)) < 1e-6

# -- state as torch keeps it
@pytest.mark.parametrize('name,kw', [(n, {}) for n in TORCH_NAMED if n not in ('LBFGS', 'SparseAdam', 'Muon')] +
                         [('SGD', dict(momentum=0.9)), ('RMSprop', dict(momentum=0.9, centered=True)),
                          ('Adam', dict(amsgrad=True)), ('Muon', {})])
def test_a_state_dict_holds_the_state_torchs_holds(name, kw):
    """The same parameters with state, the same names, kinds, dtypes and shapes (SGD without momentum: none at all);
    `opt.state[p]` has torch's names while stepping too"""
    ps = _muon_params() if name == 'Muon' else [torch.randn(3, 2, requires_grad=True), torch.randn(4, requires_grad=True)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    ours, theirs = getattr(optim, name)(ps, **kw), getattr(torch.optim, name)(qs, **kw)
    for _ in range(3):
        for p, q in zip(ps, qs): p.grad = torch.randn_like(p); q.grad = p.grad.clone()
        ours.step(); theirs.step()
    def kinds(sd): return {i: {k: (type(v).__name__, getattr(v, 'dtype', None), tuple(getattr(v, 'shape', ())))
                               for k, v in s.items()} for i, s in sd['state'].items()}
    assert kinds(ours.state_dict()) == kinds(theirs.state_dict())
    in_memory = lambda opt, ps: {'state': {i: opt.state[p] for i, p in enumerate(ps) if opt.state[p]}}
    assert kinds(in_memory(ours, ps)) == kinds(in_memory(theirs, qs))  # in memory too: names, 0-d tensor `step`

@pytest.mark.parametrize('name,path', [(n, path) for n in ('Adam', 'NAdam', 'ASGD', 'Adagrad') for path in TORCH_PATHS])
def test_the_step_count_is_torchs_0_d_tensor_updated_in_place(name, path):
    """`opt.state[p]['step']` is a float32 0-d tensor on every path, the same tensor from step to step (as torch's
    `step += 1`); a value set by hand is the one the next step counts from; a state dict holds a copy of it"""
    ps, qs = _params(), _params()
    ours, theirs = getattr(optim, name)(ps, **TORCH_PATHS[path]), getattr(torch.optim, name)(qs, foreach=False)
    def step():
        for p, q in zip(ps, qs): p.grad = torch.ones_like(p); q.grad = torch.ones_like(q)
        ours.step(); theirs.step()
    step()
    first = [ours.state[p]['step'] for p in ps]
    assert all(t.dim() == 0 and t.dtype == torch.float32 and t.item() == 1 for t in first)
    step(); step()
    assert all(ours.state[p]['step'] is t and t.item() == 3 for p, t in zip(ps, first))
    for p, q in zip(ps, qs): ours.state[p]['step'] = torch.tensor(10.); theirs.state[q]['step'] = torch.tensor(10.)
    step()
    assert all(ours.state[p]['step'].item() == 11 for p in ps)
    torch.testing.assert_close(ps, qs, rtol=1e-12, atol=1e-12)  # the bias corrections used t = 11, as torch's
    saved = ours.state_dict()['state'][0]['step']
    step()
    assert saved.item() == 11 and ours.state[ps[0]]['step'].item() == 12

# -- complex parameters: stepped as their real views, as torch steps them
COMPLEX = ['SGD', 'RMSprop', 'Adam', 'AdamW', 'Adagrad', 'Adamax', 'Adadelta', 'RAdam', 'NAdam', 'Rprop', 'ASGD']
# torch refuses fused=True for complex parameters: so does optcb (below); compiled, RMSprop and the others take them
COMPLEX_CASES = [(n, path) for n in COMPLEX for path in TORCH_PATHS
                 if not (path == 'compiled' and n in ('SGD', 'Adam', 'AdamW', 'Adagrad'))]

def _complex_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.complex128).requires_grad_() for s in [(4, 3), (5,), (2, 2)]]

def _complex_kwargs(name):
    kw = dict(maximize=True, **({} if name == 'Rprop' else {'weight_decay': 0.1}))
    return {**kw, **({'momentum': 0.9} if name in ('SGD', 'RMSprop') else {}), **({'amsgrad': True} if name == 'Adam' else {})}

@pytest.mark.parametrize('name,path', sample(COMPLEX_CASES, *range(0, len(COMPLEX_CASES), 3)))
def test_complex_parameters_step_as_torchs(name, path):
    "Parameters and state (kept complex, as torch keeps it) equal torch's over 15 steps; torch resumes from our state dict"
    ps = _complex_params(); qs = [p.detach().clone().requires_grad_() for p in ps]
    ours = getattr(optim, name)(ps, **_complex_kwargs(name), **TORCH_PATHS[path])
    theirs = getattr(torch.optim, name)(qs, foreach=False, **_complex_kwargs(name))
    g = torch.Generator().manual_seed(1)
    def step(*opts):
        for p, q in zip(ps, qs):
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype) + 0.3 * p.detach(); q.grad = p.grad.clone()
        for o in opts: o.step()
    for _ in range(15): step(ours, theirs)
    rel = lambda a, b: ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()
    assert max(rel(p, q) for p, q in zip(ps, qs)) < 1e-10
    for p, q in zip(ps, qs):
        for k, v in theirs.state[q].items():
            if not (torch.is_tensor(v) and v.dim()): continue
            mine = ours.state[p][k]  # under torch's name
            assert mine.dtype == v.dtype and rel(mine, v) < 1e-10, k
    resumed = getattr(torch.optim, name)(ps, foreach=False, **_complex_kwargs(name))
    sd = copy.deepcopy(ours.state_dict())
    for group in sd['param_groups']: group.update(foreach=False, fused=None)  # torch's for-loop, as `theirs`
    resumed.load_state_dict(sd)
    for _ in range(3): step(resumed, theirs)
    assert max(rel(p, q) for p, q in zip(ps, qs)) < 1e-10

def test_complex_parameters_are_refused_where_torch_refuses_them_or_the_real_view_changes_the_maths():
    z = torch.randn(4, 4, dtype=torch.complex64, requires_grad=True)
    for build in (lambda: optim.Adafactor([z]), lambda: optim.Muon([z]), lambda: optim.LBFGS([z])):
        with pytest.raises(ValueError, match=r'does not support complex parameters \(param group 0\)'):
            build()
    with pytest.raises(ValueError, match=r"adafactor_step.*shape"):
        optcb.Adafactor([z])
    opt = optcb.Adam([z], lr=0.1)  # elementwise chains take them, as real and imaginary parts
    z.grad = torch.ones_like(z)
    opt.step()
    assert {b.path for b in opt.plan()} == {'per-tensor'} and opt.state[z]['grad_avg'].is_complex()

@pytest.mark.parametrize('name', ['SGD', 'Adam', 'AdamW', 'Adagrad'])
def test_fused_is_refused_where_torch_refuses_it(name):
    """Complex parameters, and parameters on the meta device (built there, as torch's test builds them): torch's
    RuntimeError at the step, which changes nothing"""
    with torch.device('meta'): meta = torch.nn.Linear(2, 3)
    cx = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    plain = torch.zeros(2, requires_grad=True)
    for params in (list(meta.parameters()), [{'params': [plain]}, {'params': [cx], 'fused': True}]):
        opt = getattr(optim, name)(params, fused=True if isinstance(params[0], torch.Tensor) else None)
        for p in meta.parameters(): p.grad = torch.ones_like(p)
        cx.grad, plain.grad = torch.ones_like(cx), torch.ones_like(plain)
        with pytest.raises(RuntimeError, match=r"`fused=True` requires all the params to be floating point"):
            opt.step()
        assert not opt.state and torch.equal(plain, torch.zeros(2))

# -- sparse gradients: SGD and Adagrad take them, as torch's do
@pytest.mark.parametrize('name,kw', [('SGD', dict(lr=0.1)), ('SGD', dict(lr=0.1, momentum=0.9, dampening=0.2)),
                                     ('SGD', dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
                                     ('Adagrad', dict(lr=0.1)),
                                     ('Adagrad', dict(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.1, eps=1e-6))])
def test_sparse_gradients_step_sgd_and_adagrad_as_torchs(name, kw):
    "An embedding with sparse gradients, rows drawn at random (repeated ones too): bit for bit torch's, 20 steps"
    torch.manual_seed(0)
    ours_e, ref_e = torch.nn.Embedding(20, 4, sparse=True).double(), torch.nn.Embedding(20, 4, sparse=True).double()
    ref_e.load_state_dict(ours_e.state_dict())
    ours, theirs = getattr(optim, name)(ours_e.parameters(), **kw), getattr(torch.optim, name)(ref_e.parameters(), **kw)
    for _ in range(20):
        rows = torch.randint(0, 20, (6,))
        for e, opt in ((ours_e, ours), (ref_e, theirs)):
            opt.zero_grad(); (e(rows) ** 2).sum().backward(); opt.step()
    assert torch.equal(ours_e.weight, ref_e.weight)
    assert [b.why for b in ours.plan()] == ['a sparse gradient, stepped in its rows']
    with pytest.raises(RuntimeError, match='does not support sparse gradients'):  # Adam does not take them
        optim.Adam(ours_e.parameters()).step()
