"The compiled path (flat buffers + torch.compile of the same callbacks) against the per-tensor reference"
import copy, pytest, torch
import optcb
from optcb import Optimizer, callback
from _util import make_params, clone_params, grad_stream, run, max_errs, paths

pytestmark = pytest.mark.skipif(not any(__import__('shutil').which(c) for c in ('g++', 'c++', 'clang++')), reason='torch.compile on CPU needs a C++ compiler')

def graphs(): return torch._dynamo.utils.counters['stats']['unique_graphs']

FASTAI = [(optcb.SGD, dict(lr=0.01, mom=0.9, wd=0.1)), (optcb.SGD, dict(lr=0.01, mom=0.9, nesterov=True, decouple_wd=False, wd=0.1)),
          (optcb.RMSProp, dict(lr=0.003, mom=0.9, centered=True)), (optcb.Adam, dict(lr=0.01)),
          (optcb.Adam, dict(lr=0.01, amsgrad=True, decouple_wd=False)), (optcb.Yogi, dict(lr=0.01, wd=0.1))]
TORCH = [(optcb.optim.SGD, dict(lr=0.01, momentum=0.9, dampening=0.2, weight_decay=0.1, maximize=True)),
         (optcb.optim.RMSprop, dict(lr=0.003, momentum=0.9, weight_decay=0.1)),
         (optcb.optim.AdamW, dict(lr=0.01, amsgrad=True))]

@pytest.mark.parametrize('make,kw', FASTAI + TORCH, ids=lambda x: getattr(x, '__qualname__', None) or str(x))
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 2e-6), (torch.float64, 1e-12)])
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

def test_schedules_do_not_recompile():
    ps = make_params(torch.float32)
    opt = optcb.Adam(ps, lr=1e-3, compile=True)
    for p in ps: p.grad = torch.randn_like(p)
    opt.step(); opt.step()  # the first step (no state yet) and the steady state: two graphs
    before = graphs()
    for t in range(20):
        opt.set_hypers(lr=1e-3 * (1 + t), mom=0.85 + t / 200, sqr_mom=0.99 - t / 1000, wd=0.01 * (t + 1))
        opt.step()
    assert graphs() == before and opt.state[ps[0]]['step'] == 22

def test_parameters_become_views_of_one_buffer_and_gradients_keep_their_values():
    ps = make_params(torch.float32); grads = [torch.randn_like(p) for p in ps]
    for p, g in zip(ps, grads): p.grad = g.clone()
    opt = optcb.Adam(ps, lr=1e-3, compile=True); opt.step()
    bases = {p.untyped_storage().data_ptr() for p in ps if p.numel()}
    assert len(bases) == 1  # one flat buffer
    assert all(torch.equal(p.grad, g) for p, g in zip(ps, grads))
    assert all(opt.state[p]['grad_avg']._base is not None for p in ps)  # state: views of flat buffers too

def test_zero_grad_in_place_and_backward_accumulate_into_the_flat_gradients():
    "A real training loop with zero_grad(set_to_none=False) — no copy per step — matches torch's fused AdamW"
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    ours = optcb.optim.AdamW(models[0].parameters(), lr=1e-2, fused=True)
    ref = torch.optim.AdamW(models[1].parameters(), lr=1e-2, foreach=False)
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    for _ in range(30):
        for m, o in zip(models, (ours, ref)):
            o.zero_grad(set_to_none=False)
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
    flat = ours.paths.flat_buffers()[0]
    assert all(p.grad is v for p, v in zip(flat.params, flat.gviews))  # backward accumulated into the flat buffer
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

def test_compile_needs_elementwise_callbacks():
    @callback(elementwise=False)
    def layerwise(p, *, lr): p.add_(p.grad / p.grad.norm(), alpha=-lr)
    with pytest.raises(ValueError, match='elementwise.*layerwise'):
        Optimizer(make_params(), [layerwise], lr=0.1, compile=True)
    assert paths(Optimizer(make_params(), [layerwise], lr=0.1)) == {'group'}

def test_a_failing_compiler_falls_back_with_a_warning(monkeypatch):
    ps = make_params(torch.float64); ref = clone_params(ps)
    opt = optcb.Adam(ps, lr=1e-2, compile=True)
    def broken(self): raise OSError('no C++ compiler')
    monkeypatch.setattr(optcb.Paths, 'compiled_chain', broken)
    g = grad_stream(ps, 5, skip=())
    with pytest.warns(UserWarning, match='torch.compile failed'):
        run(opt, ps, g, 5)
    slow = optcb.Adam(ref, lr=1e-2, foreach=False); run(slow, ref, g, 5)
    assert max_errs(ps, ref, opt, slow) == (0, 0)

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
           [(f'optim.{e.torch.__name__}', e.torch) for e in optcb.REGISTRY.values() if e.torch] + \
           [('optim.Adam(amsgrad)', lambda ps, **kw: optcb.optim.Adam(ps, amsgrad=True, **kw))]

@pytest.mark.parametrize('name,make', COMPILED, ids=[n for n, _ in COMPILED])
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
    perr, serr = max_errs(ps, ref, fast, slow)
    assert perr < 1e-12 and serr < 1e-12, (perr, serr)
