"The group path (TensorList, foreach kernels) gives the same parameters and state as the per-tensor reference path"
import pytest, torch
import optcb
from _util import make_params, clone_params, grad_stream, run, max_errs, paths

FASTAI = [(optcb.SGD, dict(lr=0.01)), (optcb.SGD, dict(lr=0.01, mom=0.9, decouple_wd=False, wd=0.1)),
          (optcb.SGD, dict(lr=0.01, mom=0.9, nesterov=True, wd=0.1)),
          (optcb.RMSProp, dict(lr=0.003, mom=0.9, wd=0.1)), (optcb.RMSProp, dict(lr=0.003, centered=True)),
          (optcb.Adam, dict(lr=0.01)), (optcb.Adam, dict(lr=0.01, amsgrad=True, decouple_wd=False)),
          (optcb.AdamW, dict(lr=0.01, wd=0.1)), (optcb.Yogi, dict(lr=0.01, wd=0.1))]
TORCH = [(optcb.optim.SGD, dict(lr=0.01, momentum=0.9, dampening=0.2, weight_decay=0.1, maximize=True)),
         (optcb.optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True)),
         (optcb.optim.RMSprop, dict(lr=0.003, momentum=0.9, centered=True, weight_decay=0.1)),
         (optcb.optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1, maximize=True)),
         (optcb.optim.AdamW, dict(lr=0.01))]

@pytest.mark.parametrize('make,kw', FASTAI + TORCH, ids=lambda x: getattr(x, '__qualname__', None) or str(x))
def test_group_path_equals_per_tensor_path(make, kw):
    ps = make_params(torch.float64); ref_ps = clone_params(ps)
    two_groups = lambda qs: [{'params': qs[:4]}, {'params': qs[4:]}]
    fast, slow = make(two_groups(ps), foreach=True, **kw), make(two_groups(ref_ps), foreach=False, **kw)
    assert paths(fast) == {'group'} and paths(slow) == {'per-tensor'}
    fast.state[ps[0]]['do_wd'] = slow.state[ref_ps[0]]['do_wd'] = False  # a per-parameter flag inside a group
    grads = grad_stream(ps, 60, skip=((1, 2), (3, 3)))  # two parameters that miss steps: different step counts
    run(fast, ps, grads, 60); run(slow, ref_ps, grads, 60)
    perr, serr = max_errs(ps, ref_ps, fast, slow)
    assert perr == 0 and serr == 0, (perr, serr)  # same kernels, same order: bit for bit

def test_group_path_handles_mixed_dtypes_and_late_parameters():
    "A group mixing float32 and float64, and a parameter whose first gradient arrives late (no state yet)"
    ps = [torch.randn(3, dtype=torch.float64, requires_grad=True), torch.randn(4, requires_grad=True),
          torch.randn(2, requires_grad=True)]
    ref = clone_params(ps)
    a, b = optcb.Adam(ps, lr=0.01, foreach=True), optcb.Adam(ref, lr=0.01, foreach=False)
    late = lambda t, qs: [g if not (i == 2 and t < 10) else None for i, g in enumerate(grad_stream(qs, 30)(t, qs))]
    run(a, ps, late, 30); run(b, ref, late, 30)
    assert a.state[ps[2]]['step'] == 20 and a.state[ps[0]]['step'] == 30
    assert max_errs(ps, ref, a, b) == (0, 0)

def test_the_group_path_in_chunks_equals_one_chunk_and_the_per_tensor_path():
    "A bucket split into chunks of a few values (bounded temporaries) steps exactly as the whole bucket at once"
    ps, ref, whole = make_params(), make_params(), make_params()
    a = optcb.Adam(ps, lr=1e-2, foreach=True, compile=False); a.paths.group_chunk = 7  # a chunk per tensor or two
    b = optcb.Adam(ref, lr=1e-2, foreach=False)
    c = optcb.Adam(whole, lr=1e-2, foreach=True, compile=False); c.paths.group_chunk = 10**9
    g = grad_stream(ps, 30)
    for opt, qs in ((a, ps), (b, ref), (c, whole)): run(opt, qs, g, 30)
    assert max_errs(ps, ref, a, b) == (0., 0.) and max_errs(ps, whole, a, c) == (0., 0.)

@pytest.mark.parametrize('compile', [False, True])
def test_a_flag_no_callback_reads_does_not_split_a_bucket(compile):
    "fastai marks norm layers `force_train` (for freezing); no callback reads it, so it must not cost a bucket"
    torch.manual_seed(0)
    ps = [torch.randn(5, requires_grad=True) for _ in range(4)]
    qs = clone_params(ps)
    opt = optcb.Adam(ps, lr=1e-2, wd=0.1, compile=compile)
    ref = optcb.Adam(qs, lr=1e-2, wd=0.1, foreach=False)
    for o, xs in ((opt, ps), (ref, qs)):
        for x in xs[:2]: o.state[x].update(do_wd=False)  # read by weight_decay: a bucket of their own
        o.state[xs[0]]['force_train'] = True  # read by none
    for t in range(5):
        g = [torch.randn(5) for _ in ps]
        for xs, o in ((ps, opt), (qs, ref)):
            for x, gi in zip(xs, g): x.grad = gi.clone()
            o.step()
    assert sorted(b.params for b in opt.plan()) == [2, 2]
    for a, b in zip(ps, qs): torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert opt.state[ps[0]]['force_train'] is True and 'force_train' not in opt.state[ps[1]]
    @optcb.callback()
    def fastai_step(p, lr, **kw): pass  # fastai's form: **kwargs, so it may read any state
    fastai_style = optcb.Optimizer(ps, [fastai_step], lr=1e-2)
    fastai_style.state[ps[0]]['force_train'] = True
    assert len(fastai_style.paths.buckets(ps, [fastai_style.state[p] for p in ps])) == 2
