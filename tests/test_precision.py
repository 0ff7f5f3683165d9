"""Low precision: Kahan-compensated 16-bit parameters (against a float32 run and torch-optimi's Kahan summation), state
kept in another dtype, checkpoints keeping the dtypes, every path, and bad combinations refused at construction"""
import copy, io, pytest, torch
import optcb
from optcb import optimizers as O

SHAPES = [(64, 32), (32,), (16, 64)]

def problem(steps, seed=0):
    "A start representable in bfloat16 (no rounding before the first step) and a gradient per step and parameter"
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=g).bfloat16().float() for s in SHAPES]
    noise = [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(steps)]
    return init, noise

def train(make, dtype, steps=300, seed=0):
    "A pull towards half the start plus noise, so that the parameters' errors feed back into their gradients"
    init, noise = problem(steps, seed)
    ps = [t.clone().to(dtype).requires_grad_() for t in init]
    opt = make(ps)
    for t in range(steps):
        for p, n, i in zip(ps, noise[t], init): p.grad = (0.1 * (p.detach().float() - 0.5 * i) + n).to(dtype)
        opt.step()
    return [p.detach().float() for p in ps], opt, init

def displacement_error(ps, ref, init):
    "How far the parameters are from the float32 run's, relative to how far that run moved"
    return max(((p - r).norm() / (r - i).norm()).item() for p, r, i in zip(ps, ref, init))

ADAMW = dict(lr=1e-3, weight_decay=0.01)

def test_kahan_summation_follows_the_float32_run_as_closely_as_torch_optimi():
    """AdamW on bfloat16 parameters, 300 steps of 1e-3: plain bfloat16 loses most updates (each under half an ulp);
    with Kahan summation the parameters follow the float32 run, at least as closely as torch-optimi's"""
    optimi = pytest.importorskip('optimi')
    ref, _, init = train(lambda ps: optcb.optim.AdamW(ps, **ADAMW), torch.float32)
    plain = displacement_error(train(lambda ps: optcb.optim.AdamW(ps, **ADAMW), torch.bfloat16)[0], ref, init)
    ours, opt, _ = train(lambda ps: optcb.optim.AdamW(ps, kahan_sum=True, **ADAMW), torch.bfloat16)
    theirs = displacement_error(train(lambda ps: optimi.AdamW(ps, kahan_sum=True, **ADAMW), torch.bfloat16)[0],
                                ref, init)
    ours = displacement_error(ours, ref, init)
    assert plain > 0.9 and ours < 0.1 and ours <= theirs * 1.05, (plain, ours, theirs)
    st = opt.state[opt.param_groups[0]['params'][0]]
    assert st['kahan_comp'].dtype == st['exp_avg'].dtype == st['exp_avg_sq'].dtype == torch.bfloat16

def test_kahan_summation_with_sgd_momentum():
    optimi = pytest.importorskip('optimi')
    kw = dict(lr=3e-3, momentum=0.9, weight_decay=1e-3)
    ref, _, init = train(lambda ps: optcb.optim.SGD(ps, **kw), torch.float32)
    plain = displacement_error(train(lambda ps: optcb.optim.SGD(ps, **kw), torch.bfloat16)[0], ref, init)
    ours = displacement_error(train(lambda ps: optcb.optim.SGD(ps, kahan_sum=True, **kw), torch.bfloat16)[0],
                              ref, init)
    theirs = displacement_error(train(lambda ps: optimi.SGD(ps, dampening=False, kahan_sum=True, **kw),
                                      torch.bfloat16)[0], ref, init)
    assert ours < 0.5 * plain and ours <= theirs * 1.05, (plain, ours, theirs)

def test_fastai_signature_compensates_16_bit_parameters_by_default():
    _, opt, _ = train(lambda ps: O.Adam(ps, lr=1e-3), torch.bfloat16, steps=3)
    assert all('kahan_comp' in opt.state[p] for p in opt.param_groups[0]['params'])
    _, opt, _ = train(lambda ps: O.Adam(ps, lr=1e-3, kahan_sum=False), torch.bfloat16, steps=3)
    assert not any('kahan_comp' in opt.state[p] for p in opt.param_groups[0]['params'])
    _, opt, _ = train(lambda ps: O.Adam(ps, lr=1e-3), torch.float32, steps=3)  # nothing to compensate
    assert not any('kahan_comp' in opt.state[p] for p in opt.param_groups[0]['params'])
    la = O.ranger([torch.zeros(3, dtype=torch.bfloat16, requires_grad=True)], lr=1e-3, state_dtype=torch.bfloat16)
    assert la.state_dtype == torch.bfloat16 and la.kahan_sum is None  # Lookahead keeps its inner optimizer's

def test_torch_signature_stays_equal_to_torch_on_16_bit_parameters():
    "Off by default in the drop-ins: bfloat16 AdamW equals torch.optim.AdamW's for-loop to the last bit"
    a, _, _ = train(lambda ps: optcb.optim.AdamW(ps, **ADAMW), torch.bfloat16, steps=50)
    b, _, _ = train(lambda ps: torch.optim.AdamW(ps, foreach=False, **ADAMW), torch.bfloat16, steps=50)
    assert all(torch.equal(x, y) for x, y in zip(a, b))

def test_state_dtype_halves_adams_state_and_stays_close_to_float32_state():
    ref, full, init = train(lambda ps: optcb.optim.AdamW(ps, **ADAMW), torch.float32)
    ps, half, _ = train(lambda ps: optcb.optim.AdamW(ps, state_dtype=torch.bfloat16, **ADAMW), torch.float32)
    assert displacement_error(ps, ref, init) < 0.02
    tensors = lambda opt: [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.dim()]
    assert sum(v.nbytes for v in tensors(half)) * 2 == sum(v.nbytes for v in tensors(full))
    assert {v.dtype for v in tensors(half)} == {torch.bfloat16}
    assert {s['step'].dtype for s in half.state.values()} == {torch.float32}  # torch's 0-d step, whatever the state's

@pytest.mark.parametrize('kw', [dict(kahan_sum=True), dict(kahan_sum=True, state_dtype=torch.bfloat16),
                                dict(state_dtype=torch.bfloat16)], ids=str)
def test_group_path_equals_per_tensor_path(kw):
    dtype = torch.bfloat16 if kw.get('kahan_sum') else torch.float32
    a, oa, _ = train(lambda ps: O.Adam(ps, lr=1e-3, foreach=True, **kw), dtype, steps=40)
    b, ob, _ = train(lambda ps: O.Adam(ps, lr=1e-3, foreach=False, **kw), dtype, steps=40)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    for p, q in zip(oa.param_groups[0]['params'], ob.param_groups[0]['params']):
        for k, v in oa.state[p].items():
            if isinstance(v, torch.Tensor): assert torch.equal(v, ob.state[q][k]) and v.dtype == ob.state[q][k].dtype, k

def test_compiled_path_with_kahan_summation_stays_within_rounding():
    a, _, init = train(lambda ps: O.Adam(ps, lr=1e-3, compile=True, kahan_sum=True), torch.bfloat16, steps=30)
    b, _, _ = train(lambda ps: O.Adam(ps, lr=1e-3, foreach=False, kahan_sum=True), torch.bfloat16, steps=30)
    assert displacement_error(a, b, init) < 0.05

@pytest.mark.parametrize('kw', [dict(kahan_sum=True, state_dtype=torch.bfloat16), dict(state_dtype=torch.float16)],
                         ids=str)
def test_checkpoint_resume_is_exact_and_keeps_the_dtypes(kw):
    dtype = torch.bfloat16 if kw.get('kahan_sum') else torch.float32
    straight, _, _ = train(lambda ps: optcb.optim.AdamW(ps, **ADAMW, **kw), dtype, steps=40)
    init, noise = problem(40)
    ps = [t.clone().to(dtype).requires_grad_() for t in init]
    opt = optcb.optim.AdamW(ps, **ADAMW, **kw)
    def steps(opt, ts):
        for t in ts:
            for p, n, i in zip(ps, noise[t], init): p.grad = (0.1 * (p.detach().float() - 0.5 * i) + n).to(dtype)
            opt.step()
    steps(opt, range(20))
    buf = io.BytesIO(); torch.save(opt.state_dict(), buf); buf.seek(0)
    opt2 = optcb.optim.AdamW(ps, **ADAMW, **kw); opt2.load_state_dict(torch.load(buf, weights_only=True))
    for p in ps:
        assert {k: v.dtype for k, v in opt2.state[p].items() if k != 'step'} == \
               {k: v.dtype for k, v in opt.state[p].items() if k != 'step'}
    steps(opt2, range(20, 40))
    assert all(torch.equal(p.detach().float(), q) for p, q in zip(ps, straight))

def test_bad_combinations_are_refused_at_construction():
    w32, w16 = torch.zeros(3, requires_grad=True), torch.zeros(3, dtype=torch.bfloat16, requires_grad=True)
    with pytest.raises(ValueError, match=r'kahan_sum=True, but parameter 0 is torch.float32'):
        optcb.optim.AdamW([w32], kahan_sum=True)
    with pytest.raises(ValueError, match='parameter 1 is torch.float32'): O.Adam([w16, w32], lr=1e-3, kahan_sum=True)
    with pytest.raises(TypeError, match='state_dtype must be a floating-point'): O.Adam([w16], lr=1e-3,
                                                                                      state_dtype=torch.int8)
    with pytest.raises(TypeError, match='state_dtype must be a floating-point'): optcb.optim.SGD([w32],
                                                                                               state_dtype='bf16')
    with pytest.raises(TypeError, match='kahan_sum must be None, True or False'): O.SGD([w16], lr=0.1, kahan_sum=1)
    assert O.Adam([w16, w32], lr=1e-3).kahan_sum is None  # the default compensates only the 16-bit one
