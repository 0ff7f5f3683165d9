"""Every runner against the per-tensor runner, for every registry entry and every torch-signature class: the group
runner (`TensorList` over foreach kernels) and the compiled runner on many small tensors (gathered into one buffer per
kind where the chain is elementwise), over 12 steps in float64, parameters and state; and both inside float32 working
copies (bfloat16 parameters with Kahan summation, float32 ones with bfloat16 state): the group runner bit for bit, the
compiled one within a bfloat16 rounding. The cases come from the registry, so a new entry is checked here without a new line. (The compiled runner on a bucket's own tensors: tests/test_compiled.py; the recorded runner
of `differentiable=True`: tests/test_differentiable.py.)"""
import pytest, torch
import optcb
from _util import make_params, clone_params, grad_stream, run, max_errs, paths, sample, ahead_of_time

def _torch_classes():
    "The registry's torch-signature classes, each once, in registry order, with whether their chain compiles"
    return {e.torch: e.compiles for e in optcb.REGISTRY.values() if e.torch}

ALL = [(n, e.build, e.compiles) for n, e in optcb.REGISTRY.items()] + \
      [(f'optim.{c.__name__}', c, compiles) for c, compiles in _torch_classes().items()]

def grouped(make) -> bool:
    "Whether the chain may run on a group: none of its callbacks is declared to run one tensor at a time"
    return not make(make_params(), lr=1e-2).chain.per_tensor

GROUP = [(n, m) for n, m, _ in ALL if grouped(m)]
COMPILED = [(n, m) for n, m, compiles in ALL if compiles]

def uncompiled(name): return {'fused': False} if name.startswith('optim.') else {'compile': False}
def compiled(name): return {'fused': True} if name.startswith('optim.') else {'compile': True}

def test_the_cases_cover_the_registry():
    """Every entry and class is a case of the group runner unless its chain runs per tensor (Adafactor's, SOAP's,
    Shampoo's, PSGD-Kron's)"""
    left_out = {n for n, _, _ in ALL} - {n for n, _ in GROUP}
    assert left_out == {'adafactor', 'optim.Adafactor', 'soap', 'shampoo', 'kron'} and len(COMPILED) >= 35

@pytest.mark.parametrize('name,make', GROUP, ids=[n for n, _ in GROUP])
def test_the_group_runner_equals_the_per_tensor_runner(name, make):
    ps = make_params(torch.float64); ref = clone_params(ps)
    fast, slow = make(ps, lr=1e-2, foreach=True, **uncompiled(name)), make(ref, lr=1e-2, foreach=False)
    assert paths(fast) == {'group'} and paths(slow) == {'per-tensor'}
    g = grad_stream(ps, 12)  # one parameter misses every third step
    run(fast, ps, g, 12); run(slow, ref, g, 12)
    perr, serr = max_errs(ps, ref, fast, slow)
    assert perr < 1e-12 and serr < 1e-12, (perr, serr)

WORKING_COPIES = [(torch.bfloat16, dict(kahan_sum=True)), (torch.float32, dict(state_dtype=torch.bfloat16))]
COPIES = [(n, m, dtype, kw) for n, m in GROUP for dtype, kw in WORKING_COPIES]

@pytest.mark.parametrize('name,make,dtype,kw', sample(COPIES, 8, 9),
                         ids=[f"{n}-{'kahan' if 'kahan_sum' in kw else 'bf16-state'}" for n, _, _, kw in COPIES])
def test_the_group_runner_in_working_copies_equals_the_per_tensor_runner_in_them(name, make, dtype, kw):
    """Kahan summation and a state dtype wrap the bucket's runner: the group runner inside them gives the per-tensor
    runner's parameters, compensations and state bit for bit"""
    ps = make_params(dtype); ref = clone_params(ps)
    fast, slow = make(ps, lr=1e-2, foreach=True, **uncompiled(name), **kw), make(ref, lr=1e-2, foreach=False, **kw)
    assert paths(fast) == {'group'} and paths(slow) == {'per-tensor'}
    assert 'working copies' in fast.plan()[0].also[-1]
    g = grad_stream(ps, 12)
    run(fast, ps, g, 12); run(slow, ref, g, 12)
    assert all(torch.equal(a, b) for a, b in zip(ps, ref))
    for a, b in zip(ps, ref):
        mine, theirs = fast.state[a], slow.state[b]
        assert mine.keys() == theirs.keys()
        assert 'kahan_comp' in mine or 'kahan_sum' not in kw or not a.numel()
        for k, v in mine.items():
            assert (torch.equal(v, theirs[k]) and v.dtype == theirs[k].dtype if isinstance(v, torch.Tensor)
                    else v == theirs[k]), (k, v, theirs[k])

CCOPIES = [(n, m, dtype, kw) for n, m in COMPILED for dtype, kw in WORKING_COPIES]

@pytest.mark.parametrize('name,make,dtype,kw', sample(CCOPIES, 8, 9),
                         ids=[f"{n}-{'kahan' if 'kahan_sum' in kw else 'bf16-state'}" for n, _, _, kw in CCOPIES])
def test_the_compiled_runner_in_working_copies_equals_the_per_tensor_runner_in_them(name, make, dtype, kw):
    """The compiled runner inside float32 working copies against the per-tensor runner inside them: the compiled
    arithmetic rounds differently in float32's last bits, which a bfloat16 rounding may carry into a bfloat16
    tensor. Measured here: bfloat16 parameters equal, state within 1.5e-3 (Ranger's); float32 parameters within 3e-7,
    bfloat16 state equal"""
    ps = make_params(dtype); ref = clone_params(ps)
    fast, slow = make(ps, lr=1e-2, **compiled(name), **kw), make(ref, lr=1e-2, foreach=False, **kw)
    g = grad_stream(ps, 12)
    run(fast, ps, g, 12); run(slow, ref, g, 12)
    assert paths(fast) == {'compiled'} and 'working copies' in fast.plan()[0].also[-1]
    perr, serr = max_errs(ps, ref, fast, slow)
    if dtype == torch.bfloat16: assert perr <= 2**-8 and serr <= 2**-7, (perr, serr)  # a bfloat16 rounding
    else: assert perr < 1e-6 and serr <= 2**-8, (perr, serr)

SMALL = ((4, 3), (5,), (2, 2), (3,), (6,)) * 13  # 65 tiny tensors: at least `gather_min_count`

@pytest.mark.parametrize('name,make', sample(COMPILED, [n for n, _ in COMPILED].index('adam')),
                         ids=[n for n, _ in COMPILED])
def test_the_gathered_compiled_runner_equals_the_per_tensor_runner(name, make):
    ps = make_params(torch.float64, shapes=SMALL); ref = clone_params(ps)
    fast, slow = make(ps, lr=1e-2, **compiled(name)), make(ref, lr=1e-2, foreach=False)
    g = grad_stream(ps, 12, skip=())
    run(fast, ps, g, 1)  # the first step creates the state on the group path; from the second, gathered
    [b] = fast.plan()  # gathered where each value is stepped on its own; a per-layer norm (LAMB, LARC) needs its layer
    gathers = fast.chain.elementwise
    assert b.path == 'compiled' and (b.also[0].startswith('65 tensors under 16,384 values gathered') if gathers
                                     else b.also == ()), b
    run(slow, ref, g, 1)
    for t in range(1, 12):
        for opt, qs in ((fast, ps), (slow, ref)):
            for p, x in zip(qs, g(t, qs)): p.grad = x.clone()
            opt.step()
    perr, serr = max_errs(ps, ref, fast, slow)
    assert perr < 1e-12 and serr < 1e-12, (perr, serr)

@pytest.mark.parametrize('name,make', sample(COMPILED, [n for n, _ in COMPILED].index('larc')),
                         ids=[n for n, _ in COMPILED])
def test_compiled_state_keeps_the_dtypes_of_the_uncompiled_paths(name, make):
    """In float32, the state after compiled steps has the dtypes the per-tensor path gives it, and a schedule changing
    the learning rate every step builds no second kernel: numbers enter the kernel as 0-d float64 tensors, which would
    otherwise promote a 0-d state made of them and of norms (LARC's `local_lr`) to float64. Under dynamo (a chain
    that branches on a value, Ranger's lookahead) a branch taken for the first time is a graph of its own, so the count
    is checked where the kernel is built ahead of time"""
    ps = make_params(torch.float32); ref = clone_params(ps)
    fast, slow = make(ps, lr=1e-2, **compiled(name)), make(ref, lr=1e-2, foreach=False)
    g = grad_stream(ps, 6, skip=())
    for t in range(6):
        if t == 2: built = optcb.paths.kernels_built()  # the first step is uncompiled, the second builds the kernel
        for opt, qs in ((fast, ps), (slow, ref)):
            opt.param_groups[0]['lr'] = 1e-2 * (1 + t)
            for p, x in zip(qs, g(t, qs)): p.grad = x.float()
            opt.step()
    if ahead_of_time(fast): assert optcb.paths.kernels_built() == built
    dtypes = lambda opt, qs: [{k: v.dtype for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)} for p in qs]
    assert dtypes(fast, ps) == dtypes(slow, ref)
