"""Gradient release: each parameter stepped during backward and its gradient freed, equal to the ordinary step, in a
plain loop and in a fastai Learner; what cannot work with it refused with a clear error"""
import warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
import pytest, torch
from torch import nn
import optcb
from optcb import optimizers as O

def model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))

def batches(n=25, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]

class GradsSeen:
    "The gradients still held when backward returns"
    def __init__(self, m): self.m, self.held = m, []
    def __call__(self): self.held.append(sum(p.grad is not None for p in self.m.parameters()))

@pytest.mark.parametrize('make', [lambda ps: O.Adam(ps, lr=1e-2, wd=0.1), lambda ps: O.SGD(ps, lr=0.1, mom=0.9),
                                  lambda ps: optcb.optim.AdamW(ps, lr=1e-2), lambda ps: O.Lamb(ps, lr=1e-2),
                                  lambda ps: O.Muon(ps, lr=1e-2)], ids=['adam', 'sgd', 'torch-adamw', 'lamb', 'muon'])
def test_released_steps_equal_ordinary_steps_and_free_every_gradient(make):
    ms = [model(), model()]
    opts = [make(list(ms[0].parameters())).release_gradients(), make(list(ms[1].parameters()))]
    seen = GradsSeen(ms[0])
    for x, y in batches():
        for m, opt in zip(ms, opts):
            loss = nn.functional.cross_entropy(m(x), y)
            opt.zero_grad(); loss.backward()
            if m is ms[0]: seen()
            opt.step()
    assert seen.held == [0] * 25  # backward left no gradient behind
    assert all(torch.equal(p, q) for p, q in zip(*(m.parameters() for m in ms)))
    assert opts[0].releases_gradients and not opts[1].releases_gradients

def test_release_can_be_turned_off_and_parameters_without_gradient_are_not_stepped():
    m = model(); opt = O.Adam(list(m.parameters()), lr=1e-2, release_gradients=True)
    m[0].weight.requires_grad_(False)
    before = m[0].weight.detach().clone()
    x, y = batches(1)[0]
    nn.functional.cross_entropy(m(x), y).backward()
    assert torch.equal(m[0].weight, before) and 'grad_avg' not in opt.state[m[0].weight]
    assert 'grad_avg' in opt.state[m[-1].weight]
    opt.release_gradients(False)
    nn.functional.cross_entropy(m(x), y).backward()
    assert m[-1].weight.grad is not None  # kept for an ordinary step()

def test_release_refuses_skip_nonfinite():
    with pytest.raises(ValueError, match='skip_nonfinite'):
        optcb.Optimizer(list(model().parameters()), [optcb.sgd_step], lr=0.1, skip_nonfinite=True).release_gradients()

# -- in a fastai Learner
from fastai.learner import Learner
from fastai.data.core import DataLoaders
from fastai.torch_core import set_seed
from fastai.callback.training import GradientClip, GradientAccumulation
import fastai.callback.progress, fastai.callback.schedule  # noqa: F401 (no_bar, fit_one_cycle, lr_find)

def learner(tmp_path, **kw):
    set_seed(0, reproducible=True)
    xs, ys = zip(*batches(12))
    ds = list(zip(torch.cat(xs), torch.cat(ys)))
    dls = DataLoaders.from_dsets(ds[:160], ds[160:], bs=16, device='cpu')
    learn = Learner(dls, model(), loss_func=nn.CrossEntropyLoss(), path=tmp_path,
                    splitter=lambda m: [list(m[:3].parameters()), list(m[3:].parameters())], **kw)
    return learn

def quiet(learn, f, *a, **kw):
    with learn.no_bar(), learn.no_logging(): return getattr(learn, f)(*a, **kw)

def test_learner_with_released_gradients_equals_the_ordinary_learner(tmp_path):
    "fit_one_cycle with freeze and unfreeze, lr_find first, save/load with the optimizer: the same parameters"
    from functools import partial
    runs = []
    for release in (True, False):
        learn = learner(tmp_path, opt_func=partial(O.Adam, release_gradients=release))
        quiet(learn, 'lr_find', num_it=10, show_plot=False)
        learn.freeze(); quiet(learn, 'fit_one_cycle', 1, 1e-2)
        learn.unfreeze(); quiet(learn, 'fit_one_cycle', 1, 1e-2)
        learn.save('ckpt', with_opt=True); learn.load('ckpt', with_opt=True)
        quiet(learn, 'fit_one_cycle', 1, 1e-2)
        assert learn.opt.releases_gradients == release
        runs.append([p.detach().clone() for p in learn.model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs))

@pytest.mark.parametrize('cb,what', [(GradientClip(0.1), 'GradientClip'), (GradientAccumulation(32), 'GradientAccumulation')])
def test_learner_refuses_what_cannot_work_with_released_gradients(tmp_path, cb, what):
    from functools import partial
    learn = learner(tmp_path, opt_func=partial(O.Adam, release_gradients=True), cbs=[cb])
    before = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.raises(ValueError, match=f'{what}.*cannot work'): quiet(learn, 'fit', 1, 1e-2)
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))  # refused before any step

def test_release_works_when_backward_starts_from_a_tensor_subclass():
    "fastai's losses are TensorBase: its __torch_function__ runs backward with the overrides of other types turned off"
    from fastai.torch_core import TensorBase
    ms = [model(), model()]
    opts = [O.Adam(list(ms[0].parameters()), lr=1e-2, release_gradients=True), O.Adam(list(ms[1].parameters()), lr=1e-2)]
    for x, y in batches(3):
        for m, opt in zip(ms, opts):
            loss = TensorBase(nn.functional.cross_entropy(m(x), y))
            assert type(loss) is TensorBase and loss.grad_fn is not None
            opt.zero_grad(); loss.backward(); opt.step()
    assert all(torch.equal(p, q) for p, q in zip(*(m.parameters() for m in ms)))

def test_a_plain_loop_with_a_grad_scaler_is_refused_by_name():
    "GradScaler hands the step its scale (the optimizer says it supports amp scaling only while releasing): refused"
    m = model(); opt = O.Adam(m.parameters(), lr=1e-2).release_gradients()
    scaler = torch.amp.GradScaler('cpu', init_scale=1024.)
    (x, y), = batches(1)
    scaler.scale(nn.functional.cross_entropy(m(x), y)).backward()
    with pytest.raises(RuntimeError, match='a GradScaler cannot work with release_gradients'): scaler.step(opt)
    opt.release_gradients(False)  # ordinary steps: the scaler unscales and steps as usual again
    assert not opt._step_supports_amp_scaling
    before = [p.detach().clone() for p in m.parameters()]
    scaler = torch.amp.GradScaler('cpu', init_scale=1024.)
    opt.zero_grad(); scaler.scale(nn.functional.cross_entropy(m(x), y)).backward(); scaler.step(opt); scaler.update()
    assert all(p.grad is not None for p in m.parameters()) and not torch.equal(m[0].weight, before[0])

def test_gradient_accumulation_in_a_plain_loop_is_refused_before_a_parameter_is_stepped_twice():
    m = model(); opt = O.Adam(m.parameters(), lr=1e-2).release_gradients()
    (x, y), (x2, y2) = batches(2)
    for _ in range(3):  # one backward per step: fine
        opt.zero_grad(); nn.functional.cross_entropy(m(x), y).backward(); opt.step()
    nn.functional.cross_entropy(m(x), y).backward()  # the first backward of an accumulation steps at once ...
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(RuntimeError, match='gradients cannot be accumulated over several backward passes'):
        nn.functional.cross_entropy(m(x2), y2).backward()  # ... the second is refused
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))  # nothing stepped twice
    opt.step()
    nn.functional.cross_entropy(m(x2), y2).backward()  # after step(), the next backward steps again
    assert not all(torch.equal(p, b) for p, b in zip(m.parameters(), before))
