"The compiled path (torch.compile of the same callbacks over each bucket's own tensors) against the per-tensor reference"
import copy, pytest, torch
import optcb
from optcb import Optimizer, callback
from _util import make_params, clone_params, grad_stream, run, max_errs, paths, graphs, ahead_of_time, slow, sample

pytestmark = pytest.mark.skipif(not any(__import__('shutil').which(c) for c in ('g++', 'c++', 'clang++')), reason='torch.compile on CPU needs a C++ compiler')

FASTAI = [(optcb.SGD, dict(lr=0.01, mom=0.9, wd=0.1)), (optcb.SGD, dict(lr=0.01, mom=0.9, nesterov=True, decouple_wd=False, wd=0.1)),
          (optcb.RMSProp, dict(lr=0.003, mom=0.9, centered=True)), (optcb.Adam, dict(lr=0.01)),
          (optcb.Adam, dict(lr=0.01, amsgrad=True, decouple_wd=False)), (optcb.Yogi, dict(lr=0.01, wd=0.1))]
TORCH = [(optcb.optim.SGD, dict(lr=0.01, momentum=0.9, dampening=0.2, weight_decay=0.1, maximize=True)),
         (optcb.optim.RMSprop, dict(lr=0.003, momentum=0.9, weight_decay=0.1)),
         (optcb.optim.AdamW, dict(lr=0.01, amsgrad=True))]

@pytest.mark.parametrize('make,kw', sample(FASTAI + TORCH, 3, len(FASTAI) + 2), ids=lambda x: getattr(x, '__qualname__', None) or str(x))
@pytest.mark.parametrize('dtype,tol', sample([(torch.float32, 2e-6), (torch.float64, 1e-12)], 0))
def test_compiled_equals_per_tensor_path(make, kw, dtype, tol):
    "Several groups, a per-parameter do_wd flag, a parameter that misses steps, and an lr schedule; params and state"
    ps = make_params(dtype); ref = clone_params(ps)
    two = lambda qs: [{'params': qs[:4]}, {'params': qs[4:]}]
    fast = make(two(ps), **({'fused': True} if make in [m for m, _ in TORCH] else {'compile': True}), **kw)
    slow = make(two(ref), foreach=False, **kw)
    assert paths(fast) == {'compiled'}
    fast.state[ps[0]]['do_wd'] = slow.state[ref[0]]['do_wd'] = False
    grads = grad_stream(ps, 40, skip=((3, 3),))
    for t in range(40):
        for o, qs in [(fast, ps), (slow, ref)]:
            o.set_hyper('lr', kw['lr'] * (1 + t % 4) / 2)
            for p, g in zip(qs, grads(t, qs)): p.grad = None if g is None else g.clone()
            o.step()
    perr, serr = max_errs(ps, ref, fast, slow)
    assert perr < tol and serr < tol, (perr, serr)

@pytest.mark.parametrize('name', sample(['adam', 'yogi', 'lamb'], 0))
def test_a_parameter_whose_first_gradient_comes_late_is_stepped_like_the_others(name):
    "Its bucket is new when its gradient arrives: that first step creates the state uncompiled, with no graph break"
    torch._dynamo.utils.counters.clear()
    make = optcb.REGISTRY[name].build
    ps = make_params(torch.float64); ref = clone_params(ps)
    fast, slow = make(ps, compile=True), make(ref, foreach=False)
    stream = grad_stream(ps, 10, skip=())
    late = lambda t, qs: [None if (i == 1 and t < 3) else g for i, g in enumerate(stream(t, qs))]
    run(fast, ps, late, 10); run(slow, ref, late, 10)
    assert dict(torch._dynamo.utils.counters['graph_break']) == {}
    perr, serr = max_errs(ps, ref, fast, slow)
    assert perr < 1e-12 and serr < 1e-12, (perr, serr)
    assert fast.state[ps[1]]['step'] == 7 and fast.state[ps[0]]['step'] == 10

@slow
def test_schedules_do_not_recompile():
    ps = make_params(torch.float32)
    opt = optcb.Adam(ps, lr=1e-3, compile=True)
    for p in ps: p.grad = torch.randn_like(p)
    opt.step(); opt.step()  # the first step (no state yet) and the steady state: two graphs
    before = graphs()
    for t in range(20):
        opt.set_hypers(lr=1e-3 * (1 + t), mom=0.85 + t / 200, sqr_mom=0.99 - t / 1000, wd=0.01 * (t + 1))
        opt.step()
    assert graphs() == before and opt.state[ps[0]]['step'] == 22 and ahead_of_time(opt)

def test_hyperparameter_tensors_are_made_again_only_when_their_value_changes(monkeypatch):
    """The compiled path carries numbers as 0-d tensors: one made per step costs ~5 µs; an unchanged value reuses its
    own, also where two param groups give it different values in one step"""
    ps = make_params(torch.float32)
    two = lambda qs: [{'params': qs[:4]}, {'params': qs[4:], 'lr': 5e-4}]
    opt, ref = optcb.Adam(two(ps), lr=1e-3, compile=True), optcb.Adam(two(clone_params(ps)), lr=1e-3, foreach=False)
    seen = []  # per step, the hyperparameters each part of the kernel call was given
    monkeypatch.setattr(optcb.paths._Kernel, '__call__', lambda self, parts, call=optcb.paths._Kernel.__call__:
                        seen.append([h for _, _, h in parts]) or call(self, parts))
    for t in range(6):
        for o in (opt, ref):
            o.param_groups[0]['lr'] = 1e-3 * (1 + t // 2)  # the first group's lr changes every other step
            gen = torch.Generator().manual_seed(t)
            for g in o.param_groups:
                for p in g['params']: p.grad = torch.randn(p.shape, generator=gen) * 1e-3
            o.step()
    assert len(seen) == 5 and all(len(s) == 2 for s in seen)  # steps 2-6, one call with both groups
    first, second = [[s[i] for s in seen] for i in (0, 1)]
    assert all(h['eps'] is first[0]['eps'] for h in first + second)  # eps never changes, in either group
    assert all(h['lr'] is second[0]['lr'] and h['lr'].item() == 5e-4 for h in second)
    assert first[1]['lr'] is first[2]['lr'] and first[2]['lr'] is not first[3]['lr']  # steps 3, 4 | 5
    assert [h['lr'].item() for h in first] == [1e-3 * (1 + t // 2) for t in range(1, 6)]
    for a, b in zip(ps, [p for g in ref.param_groups for p in g['params']]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)

def own_storage(t): return t.untyped_storage().nbytes() == t.numel() * t.element_size()

def saved_bytes(obj):
    buf = __import__('io').BytesIO(); torch.save(obj, buf)
    return buf.getbuffer().nbytes

@pytest.mark.parametrize('flags,path', [(dict(foreach=False), 'per-tensor'), (dict(fused=False), 'group'),
                                        (dict(fused=True), 'compiled'), ({}, None)])
def test_parameters_gradients_and_state_keep_their_own_storage(flags, path):
    "Two 512x512 layers (large enough for the default compiled path): saving one writes one"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512))
    layer_bytes = saved_bytes(model[2].state_dict())
    opt = optcb.optim.AdamW(model.parameters(), lr=1e-3, **flags)
    if path: assert paths(opt) == {path}
    grads = {}
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(8, 512)).square().mean().backward()
        grads = {p: p.grad for p in model.parameters()}
        opt.step()
    for p in model.parameters():
        assert own_storage(p) and own_storage(p.grad) and p.grad is grads[p]  # the step did not replace the gradient
        assert all(own_storage(v) for v in opt.state[p].values() if isinstance(v, torch.Tensor))
    w = model[0].weight
    assert saved_bytes(w) < 1.1 * w.numel() * 4
    assert saved_bytes(model[2].state_dict()) == layer_bytes  # the same size as before any step
    one = {k: v for k, v in opt.state_dict()['state'][0].items()}
    assert saved_bytes(one) < 2.2 * w.numel() * 4  # exp_avg and exp_avg_sq of that weight, nothing else

def test_gradients_keep_their_values():
    ps = make_params(torch.float32); grads = [torch.randn_like(p) for p in ps]
    for p, g in zip(ps, grads): p.grad = g.clone()
    opt = optcb.Adam(ps, lr=1e-3, compile=True); opt.step(); opt.step()
    assert all(torch.equal(p.grad, g) for p, g in zip(ps, grads))

@pytest.mark.parametrize('set_to_none', [False, True])
def test_a_training_loop_matches_torch_and_keeps_the_gradient_tensors(set_to_none):
    "zero_grad(set_to_none=False): backward accumulates into the same gradient tensors, which the step reads in place"
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    ours = optcb.optim.AdamW(models[0].parameters(), lr=1e-2, fused=True)
    ref = torch.optim.AdamW(models[1].parameters(), lr=1e-2, foreach=False)
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    for _ in range(30):
        for m, o in zip(models, (ours, ref)):
            before = [p.grad for p in m.parameters()]
            o.zero_grad(set_to_none=set_to_none)
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
            if not set_to_none and before[0] is not None:
                assert all(p.grad is g for p, g in zip(m.parameters(), before))
    assert paths(ours) == {'compiled'}
    for a, b in zip(models[0].parameters(), models[1].parameters()): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

def test_state_dict_round_trip_resumes_identically():
    ps = make_params(torch.float32)
    opt = optcb.Adam(ps, lr=1e-3, compile=True)
    g = grad_stream(ps, 30, skip=())
    run(opt, ps, g, 10)
    sd = copy.deepcopy(opt.state_dict()); ps2 = clone_params(ps)
    opt2 = optcb.Adam(ps2, lr=1e-3, compile=True); opt2.load_state_dict(sd)
    run(opt, ps, lambda t, qs: g(t + 10, qs), 10); run(opt2, ps2, lambda t, qs: g(t + 10, qs), 10)
    assert all(torch.equal(a, b) for a, b in zip(ps, ps2))
    assert opt2.state[ps2[0]]['step'] == 20

def test_compile_needs_callbacks_that_run_on_a_tensorlist():
    @callback(foreach=False)
    def branches(p, *, lr):
        if p.grad.norm() > 1: p.add_(p.grad, alpha=-lr)
    with pytest.raises(ValueError, match='foreach.*branches'):
        Optimizer(make_params(), [branches], lr=0.1, compile=True)
    assert paths(Optimizer(make_params(), [branches], lr=0.1)) == {'per-tensor'}

def test_per_tensor_reductions_are_compiled_and_equal_the_per_tensor_path():
    "A norm per tensor (LAMB's trust ratio) is traced per tensor: each parameter gets its own, not the bucket's"
    @callback(elementwise=False)
    def layerwise(p, *, lr): p.add_(p.grad / p.grad.norm(), alpha=-lr)
    ps = make_params(torch.float64); ref = clone_params(ps)
    fast, slow = Optimizer(ps, [layerwise], lr=0.1, compile=True), Optimizer(ref, [layerwise], lr=0.1, foreach=False)
    assert paths(fast) == {'compiled'}
    g = grad_stream(ps, 6, skip=()); run(fast, ps, g, 6); run(slow, ref, g, 6)
    assert max_errs(ps, ref, fast, slow)[0] < 1e-12

@slow
def test_a_chain_that_reduces_takes_the_kernel_built_ahead_of_time_and_equals_the_per_tensor_path():
    """LAMB's chain with a callback that makes new state tensors every step from a norm per tensor: state updated in
    place, state made anew and the step count come back from the kernel as from the per-tensor path, in two param
    groups with different hyperparameters, with a parameter that misses steps (a bucket of its own: another step
    count)"""
    @callback(elementwise=False)
    def unit_grad(p): return {'unit_grad': p.grad / (p.grad.norm() + 1)}
    shapes = [(4, 3), (5,), (2, 2), (3,), (6,), (7, 2), (8,), (1,)]
    ps = make_params(torch.float64, shapes=shapes); ref = clone_params(ps)
    def make(qs, **kw):
        cbs = optcb.Lamb(clone_params(qs), lr=0.).cbs + [unit_grad]
        return Optimizer([{'params': qs[:5]}, {'params': qs[5:], 'lr': 3e-3, 'wd': 0.}], cbs, lr=1e-2, mom=0.9,
                         sqr_mom=0.99, eps=1e-5, wd=0.1, **kw)
    fast, slow = make(ps, compile=True), make(ref, foreach=False)
    g = grad_stream(ps, 10, skip=((6, 3),))
    run(fast, ps, g, 10); run(slow, ref, g, 10)
    assert ahead_of_time(fast) and len(fast.paths._kernels) == 2, fast.paths.kernel_error  # with parameter 6 or not
    perr, serr = max_errs(ps, ref, fast, slow)
    assert perr < 1e-12 and serr < 1e-12, (perr, serr)
    assert [fast.state[p]['step'] for p in ps] == [slow.state[q]['step'] for q in ref]

def test_a_failing_compiler_falls_back_with_a_warning(monkeypatch):
    ps = make_params(torch.float64); ref = clone_params(ps)
    opt = optcb.Adam(ps, lr=1e-2, compile=True)
    def broken(*args, **kwargs): raise OSError('no C++ compiler')
    monkeypatch.setattr(optcb.Paths, 'compiled_chain', broken)  # dynamo's compile, and inductor's ahead of time
    monkeypatch.setattr(torch._inductor, 'compile', broken)
    g = grad_stream(ps, 5, skip=())
    with pytest.warns(UserWarning, match='torch.compile failed'):
        run(opt, ps, g, 5)
    slow = optcb.Adam(ref, lr=1e-2, foreach=False); run(slow, ref, g, 5)
    assert max_errs(ps, ref, opt, slow) == (0, 0)

def test_an_untested_torch_steps_uncompiled_by_default_with_one_warning(monkeypatch):
    "Outside TESTED_TORCH the default (compile=None) is the group path, said once; $OPTCB_COMPILE=1 compiles anyway"
    from optcb import paths as P
    assert P.compile_tested() and P.torch_minor('2.15.0+cu132') == '2.15' and not P.compile_tested('2.13.0+cpu')
    monkeypatch.setattr(P, 'TESTED_TORCH', ('1.0',)); monkeypatch.setattr(P, '_warned', set())
    monkeypatch.delenv('OPTCB_COMPILE')
    big = [torch.nn.Parameter(torch.randn(300, 300))]
    with pytest.warns(UserWarning, match='not among the releases') as seen:
        opts = [optcb.optim.AdamW(big), optcb.Adam(big, lr=1e-3)]
    assert len([w for w in seen if 'not among' in str(w.message)]) == 1
    big[0].grad = torch.randn(300, 300)
    assert all(paths(o) == {'group'} and 'not among the releases' in o.plan()[0].why for o in opts)
    monkeypatch.setenv('OPTCB_COMPILE', '1')
    assert paths(optcb.optim.AdamW(big)) == {'compiled'}

def test_on_an_untested_torch_a_kernel_whose_writes_go_unseen_is_not_used(monkeypatch):
    """The gathered buffers rely on version counters seeing a kernel's writes (torch 2.4's did not): where the probe
    says they do not, the step runs under dynamo instead, with one warning, and equals the per-tensor path"""
    from optcb import paths as P
    assert P.kernel_writes_seen()  # this torch's kernels: seen
    def unseen(fn, args):  # a kernel that writes through `.data`, which no version counter sees (as torch 2.4's did)
        def run(a, b): a.data.mul_(0.5).add_(b); return (a.data + b,)
        return run
    monkeypatch.setattr(P, '_build', unseen); monkeypatch.setattr(P, '_probed', {})
    assert not P.kernel_writes_seen()  # the probe catches it
    monkeypatch.setattr(P, '_build', lambda fn, args: lambda a, b: (a + b,)); monkeypatch.setattr(P, '_probed', {})
    assert not P.kernel_writes_seen()  # and a kernel that does not write at all
    monkeypatch.setattr(P, 'TESTED_TORCH', ('1.0',)); monkeypatch.setattr(P, 'kernel_writes_seen', lambda: False)
    ps = make_params(torch.float64, shapes=[(3, 2)] * 70); ref = clone_params(ps)  # enough small ones to be gathered
    fast = optcb.Adam(ps, lr=1e-2, wd=0.1, decouple_wd=False, compile=True)
    slow = optcb.Adam(ref, lr=1e-2, wd=0.1, decouple_wd=False, foreach=False)
    g = grad_stream(ps, 6, skip=())
    with pytest.warns(UserWarning, match='could not be built ahead of time') as seen:
        run(fast, ps, g, 6)
    assert len([w for w in seen if 'ahead of time' in str(w.message)]) == 1 and not ahead_of_time(fast)
    run(slow, ref, g, 6)
    perr, serr = max_errs(ps, ref, fast, slow)
    assert perr < 1e-12 and serr < 1e-12, (perr, serr)

def test_a_dynamo_error_falls_back_to_the_group_path_with_a_warning(monkeypatch):
    "Any error of dynamo's (torch 2.6 raised TorchRuntimeError on lerp_ at step 2) ends compiling, not the training"
    ps = make_params(torch.float64); ref = clone_params(ps)
    opt = optcb.Adam(ps, lr=1e-2, compile=True)
    def crash(self, parts): raise torch._dynamo.exc.TorchRuntimeError('Failed running call_method lerp_')
    monkeypatch.setattr(optcb.Paths, '_compiled_run', crash)
    g = grad_stream(ps, 5, skip=())
    with pytest.warns(UserWarning, match='torch.compile failed .TorchRuntimeError'):
        run(opt, ps, g, 5)
    slow = optcb.Adam(ref, lr=1e-2, foreach=False); run(slow, ref, g, 5)
    assert max_errs(ps, ref, opt, slow) == (0, 0) and 'TorchRuntimeError' in opt.plan()[0].why

@slow
def test_compiled_adam_in_a_learner_follows_fit_one_cycle_without_recompiling():
    from test_learner import learner, quiet_fit
    from functools import partial
    learn = learner(partial(optcb.Adam, compile=True))
    quiet_fit(learn, 1, 1e-2)
    before = graphs()
    quiet_fit(learn, 2, 1e-2)
    assert graphs() == before
    ref = learner(partial(optcb.Adam, foreach=False)); quiet_fit(ref, 1, 1e-2); quiet_fit(ref, 2, 1e-2)
    for a, b in zip(learn.model.parameters(), ref.model.parameters()): torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

COMPILED = [(n, e.build) for n, e in optcb.REGISTRY.items() if e.compiles] + \
           [(f'optim.{e.torch.__name__}', e.torch) for e in optcb.REGISTRY.values() if e.torch and e.compiles] + \
           [('optim.Adam(amsgrad)', lambda ps, **kw: optcb.optim.Adam(ps, amsgrad=True, **kw))]

@pytest.mark.parametrize('name,make', sample(COMPILED, [n for n, _ in COMPILED].index('adam')), ids=[n for n, _ in COMPILED])
def test_every_compiled_chain_is_one_graph_and_equals_the_per_tensor_path(name, make):
    "A graph break inside the chain makes dynamo fall back frame by frame (slow, and once silently wrong): none allowed"
    torch._dynamo.reset(); torch._dynamo.utils.counters.clear()
    ps = make_params(torch.float64); ref = clone_params(ps)
    flag = {'fused': True} if name.startswith('optim.') else {'compile': True}
    fast, slow = make(ps, **flag), make(ref, foreach=False)
    assert paths(fast) == {'compiled'}
    g = grad_stream(ps, 12, skip=())
    run(fast, ps, g, 12); run(slow, ref, g, 12)
    assert dict(torch._dynamo.utils.counters['graph_break']) == {}
    if name == 'ranger':  # Lookahead syncs when its step count says so: a branch on a value, which the trace refuses
        assert not ahead_of_time(fast) and 'data-dependent' in fast.paths.kernel_error
    else: assert ahead_of_time(fast), fast.paths.kernel_error  # chains that reduce (LAMB, LARC) too
    perr, serr = max_errs(ps, ref, fast, slow)
    assert perr < 1e-12 and serr < 1e-12, (perr, serr)

@pytest.mark.parametrize('decouple_wd', [True, False], ids=['weight_decay', 'l2_reg'])
def test_gathered_tensors_kept_between_steps_are_copied_again_only_when_changed(decouple_wd, monkeypatch):
    """Gradients kept from step to step (the same tensors) are not copied into the gathered buffer again unless they or
    the buffer changed: edited in place or replaced. l2_reg replaces the gradient it hands on (it writes no buffer), so
    it costs no copy either"""
    copied, t = [], None  # the steps at which the gradients were copied into the gathered buffer
    synced = optcb.paths._Scratch.synced
    monkeypatch.setattr(optcb.paths._Scratch, 'synced',
                        lambda self, k, ts: (k == 'grads' and copied.append(t)) or synced(self, k, ts))
    torch.manual_seed(0)
    shapes = [(7, 5), (12,), (3, 4, 2), (30,)] * 16  # tiny tensors, at least `gather_min_count`: gathered
    ps = [torch.randn(s, requires_grad=True) for s in shapes]
    grads = [torch.randn(s) for s in shapes]
    ours = optcb.Adam(ps, lr=1e-2, wd=0.1, decouple_wd=decouple_wd, compile=True)
    qs = clone_params(ps)
    ref = optcb.Adam(qs, lr=1e-2, wd=0.1, decouple_wd=decouple_wd, foreach=False)
    for p, g in zip(ps, grads): p.grad = g  # kept for every step
    for t in range(10):
        if t == 3: ps[1].grad.mul_(2)  # in place
        if t == 6: ps[2].grad = torch.full(shapes[2], 0.5)  # a new tensor
        if t == 8:
            with torch.no_grad(): ps[5].mul_(0.5)  # the parameter itself, in place
        for p, q in zip(ps, qs): q.grad = p.grad.clone()  # the reference gets a fresh copy each step
        if t == 8:
            with torch.no_grad(): qs[5].mul_(0.5)
        ours.step(); ref.step()
    assert paths(ours) == {'compiled'} and ours.paths._scratch and ahead_of_time(ours)  # gathered, in a kernel
    for a, b in zip(ps, qs): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(p.grad, g) for p, g in zip(ps[3:], grads[3:]))  # the kept gradients are untouched
    # step 0 runs uncompiled (it makes the state); step 1 fills the buffer; then only when they change (steps 3, 6)
    assert copied == [1, 3, 6], copied

def test_changes_made_between_steps_are_seen_like_torch_sees_them(monkeypatch):
    """Loading weights into the model, replacing p.data, writing a parameter through `.data` (which no version counter
    sees: fastai's WGAN clips the critic's weights so), and editing state in place between steps: on both compiled
    forms"""
    monkeypatch.setattr(optcb.Paths, 'gather_min_count', 2)  # the model's two biases are gathered
    torch.manual_seed(0)
    make = lambda: torch.nn.Sequential(torch.nn.Linear(200, 200), torch.nn.Tanh(), torch.nn.Linear(200, 3))
    models = [make() for _ in range(2)]; models[1].load_state_dict(models[0].state_dict())
    ours = optcb.optim.AdamW(models[0].parameters(), lr=1e-2, fused=True)
    ref = torch.optim.AdamW(models[1].parameters(), lr=1e-2, foreach=False)
    x, y, other = torch.randn(16, 200), torch.randn(16, 3), make().state_dict()
    for t in range(12):
        for m, o in zip(models, (ours, ref)):
            if t == 4: m.load_state_dict(other)  # copies into the parameters in place
            if t == 6: m[2].bias.data = torch.full((3,), 0.5)  # a new tensor: a gathered (small) parameter
            if t == 7: m[2].bias.data.clamp_(-0.05, 0.05)  # in place, through .data: a gathered parameter
            if t == 8: m[0].weight.data = m[0].weight.data * 0.5  # a new tensor: a large parameter
            if t == 10:
                o.state[m[2].bias]['exp_avg'].zero_()
                o.state[m[0].bias]['exp_avg'].mul_(2)
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
    assert paths(ours) == {'compiled'} and ours.paths._scratch
    for a, b in zip(models[0].parameters(), models[1].parameters()): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

@slow
def test_a_callback_that_reads_a_number_out_of_a_tensor_is_not_baked_into_a_kernel():
    """The kernel is traced with fake tensors: `float(lr)` on the 0-d tensor that carries lr fails that trace (it is
    not frozen at its first value), and the chain runs under dynamo instead, following the schedule"""
    @callback(foreach=True)
    def sgd_float(p, *, lr): p.add_(p.grad, alpha=-float(lr))
    ps = [torch.ones(600, 600, requires_grad=True)]; ref = clone_params(ps)
    fast, slow = Optimizer(ps, [sgd_float], lr=0.1, compile=True), Optimizer(ref, [sgd_float], lr=0.1, foreach=False)
    for t in range(4):
        for o, qs in ((fast, ps), (slow, ref)):
            o.set_hyper('lr', 0.1 * (t + 1))
            for p in qs: p.grad = torch.ones_like(p)
            o.step()
    assert not ahead_of_time(fast) and fast.paths.kernel_error
    [b] = fast.plan()
    assert b.path == 'compiled' and b.why.startswith('compile=True; under torch.compile, not ahead of time (')
    torch.testing.assert_close(ps[0], ref[0], rtol=0, atol=0)
    assert ps[0][0, 0].item() == pytest.approx(1 - 0.1 * (1 + 2 + 3 + 4), abs=1e-6)  # every lr followed

@slow
def test_a_gradient_laid_out_differently_gets_its_own_kernel():
    """A kernel is built for the strides of the tensors it was traced with: a gradient that arrives channels-last (or
    transposed) is a new structure, with its own kernel, and the step is the same as the per-tensor path's"""
    torch.manual_seed(0)
    ps = [torch.randn(64, 32, 3, 3, requires_grad=True), torch.randn(300, 400, requires_grad=True)]; ref = clone_params(ps)
    fast, slow = optcb.Adam(ps, lr=1e-2, compile=True), optcb.Adam(ref, lr=1e-2, foreach=False)
    for t in range(6):
        gs = [torch.randn_like(p) for p in ps]
        if t >= 3: gs = [gs[0].contiguous(memory_format=torch.channels_last), gs[1].t().contiguous().t()]
        for o, qs in ((fast, ps), (slow, ref)):
            for p, g in zip(qs, gs): p.grad = g.clone(memory_format=torch.preserve_format)
            o.step()
    assert ahead_of_time(fast) and len(fast.paths._kernels) == 2
    perr, serr = max_errs(ps, ref, fast, slow)
    assert perr < 2e-6 and serr < 2e-6, (perr, serr)

@slow
def test_a_step_the_user_compiles_runs_the_chain_inside_their_graph():
    "Under the user's torch.compile no kernel of optcb's is built: dynamo traces the chain itself, with the same result"
    ps = make_params(torch.float32); ref = clone_params(ps)
    fast, slow = optcb.Adam(ps, lr=1e-2, compile=True), optcb.Adam(ref, lr=1e-2, foreach=False)
    step, g = torch.compile(fast.step), grad_stream(ps, 6, skip=())
    for t in range(6):
        for qs in (ps, ref):
            for p, gr in zip(qs, g(t, qs)): p.grad = gr.clone()
        step(); slow.step()
    perr, serr = max_errs(ps, ref, fast, slow)
    assert perr < 2e-6 and serr < 2e-6, (perr, serr)
    assert not fast.paths._kernels and fast.state[ps[0]]['step'] == 6

def test_parameters_moved_to_another_offset_keep_stepping_right():
    """A kernel's key has no storage offsets: parameters that are views of one buffer, moved to views at an unaligned
    offset (same shapes and strides) between steps, reuse the kernel and are stepped as the per-tensor path steps them"""
    torch.manual_seed(0)
    def views(offset):
        flat = torch.zeros(600 * 600 + 1000)
        return [flat[offset:offset + 600 * 600].view(600, 600), flat[offset + 600 * 600:offset + 600 * 600 + 500]]
    ps = [v.copy_(torch.randn(v.shape)).requires_grad_() for v in views(0)]; ref = clone_params(ps)
    fast, slow = optcb.Adam(ps, lr=1e-2, compile=True), optcb.Adam(ref, lr=1e-2, foreach=False)
    for t in range(5):
        if t == 2:
            for p, v in zip(ps, views(1)): p.data = v.copy_(p.detach())
        for p, q in zip(ps, ref): q.grad = torch.randn_like(q); p.grad = q.grad.clone()
        fast.step(); slow.step()
    assert [p.storage_offset() for p in ps] == [1, 360001] and len(fast.paths._kernels) == 1 and ahead_of_time(fast)
    perr, serr = max_errs(ps, ref, fast, slow)
    assert perr < 2e-6 and serr < 2e-6, (perr, serr)

@slow
def test_a_steps_compiled_buckets_share_one_kernel_call(monkeypatch):
    """Buckets of every param group (weights with weight decay, biases marked do_wd=False, many tiny tensors gathered, a
    second group with its own lr) are traced into one kernel, each with its own flags and hyperparameters, and stepped
    by one call per step, as the per-tensor path steps them"""
    torch.manual_seed(0)
    shapes = [(200, 100), (100,), (150, 120), (120,)] + [(3, 4)] * 72  # 64 tiny ones in the first group: gathered
    ps = [torch.randn(s, requires_grad=True) for s in shapes]; ref = clone_params(ps)
    groups = lambda qs: [{'params': qs[:-8]}, {'params': qs[-8:], 'lr': 5e-3}]  # the last 8 tiny: a group of their own
    fast = optcb.Adam(groups(ps), lr=1e-2, wd=0.1, compile=True)
    slow = optcb.Adam(groups(ref), lr=1e-2, wd=0.1, foreach=False)
    for o, qs in ((fast, ps), (slow, ref)):
        for i in (1, 3): o.state[qs[i]]['do_wd'] = False
    calls = []
    monkeypatch.setattr(optcb.paths._Kernel, '__call__', lambda self, parts, call=optcb.paths._Kernel.__call__:
                        calls.append(len(parts)) or call(self, parts))
    g = grad_stream(ps, 6, skip=())
    run(fast, ps, g, 6); run(slow, ref, g, 6)
    assert paths(fast) == {'compiled'} and len(fast.plan()) == 3
    # steps 2-6: the first group's buckets (gathered tiny tensors, the large weights, the biases) and the second's
    assert calls == [4] * 5 and len(fast.paths._kernels) == 1 and ahead_of_time(fast)
    perr, serr = max_errs(ps, ref, fast, slow)
    assert perr < 2e-6 and serr < 2e-6, (perr, serr)

@slow
def test_param_groups_of_different_dtypes_share_the_steps_kernel_and_16_bit_ones_run_their_own(monkeypatch):
    """float32 and float64 groups are parts of the step's one kernel call; a bfloat16 parameter (Kahan summation, on
    float32 working copies made for the step) is stepped by a call of its own; all equal the per-tensor path"""
    torch.manual_seed(0)
    shapes = [((30, 20), torch.float32), ((20,), torch.float32), ((40, 10), torch.float64), ((10,), torch.bfloat16)]
    ps = [torch.randn(s, dtype=d, requires_grad=True) for s, d in shapes]; ref = clone_params(ps)
    groups = lambda qs: [{'params': qs[:2]}, {'params': qs[2:], 'lr': 3e-3, 'wd': 0.}]
    fast = optcb.Adam(groups(ps), lr=1e-2, wd=0.1, compile=True)
    slow = optcb.Adam(groups(ref), lr=1e-2, wd=0.1, foreach=False)
    calls = []
    monkeypatch.setattr(optcb.paths._Kernel, '__call__', lambda self, parts, call=optcb.paths._Kernel.__call__:
                        calls.append(sorted(str(p[0].dtype) for p, _, _ in parts)) or call(self, parts))
    for t in range(6):
        for o, qs in ((fast, ps), (slow, ref)):
            gen = torch.Generator().manual_seed(t)
            for p in qs: p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
            o.step()
    # steps 2-6: the bfloat16 parameter's float32 working copy first, then the step's call with both other groups
    assert calls == [['torch.float32'], ['torch.float32', 'torch.float64']] * 5 and len(fast.paths._kernels) == 2
    for p, q in zip(ps, ref):
        tol = dict(rtol=0, atol=0) if p.dtype == torch.bfloat16 else dict(rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(p, q, **tol)
        for k, v in fast.state[p].items():
            if torch.is_tensor(v): torch.testing.assert_close(v, slow.state[q][k], **tol)
