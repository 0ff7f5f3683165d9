"""Schedule-free AdamW and SGD: equal to the authors' `schedulefree` package (train and eval points, every bit), the
train/eval modes of the Optimizer, checkpoints across modes, and the fastai Learner glue that switches them"""
import warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
import copy, io, random, subprocess, sys
import pytest, torch
import optcb
from optcb import optimizers as O
from _util import make_params, clone_params, grad_stream, run, max_errs, rel_err, STEPS, slow

schedulefree = pytest.importorskip('schedulefree')

CASES = {
    'AdamWScheduleFree': [dict(), dict(lr=1e-2, weight_decay=0.1), dict(lr=1e-2, warmup_steps=20, r=0.5),
                          dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_lr_power=0.),
                          dict(lr=0., warmup_steps=5)],
    'SGDScheduleFree': [dict(lr=0.1), dict(lr=0.05, weight_decay=0.1), dict(lr=0.05, momentum=0.5, warmup_steps=20),
                        dict(lr=0.05, r=1., weight_lr_power=1.)],
}
STATE = {}  # optcb.optim's classes keep the package's names in `state` (exp_avg_sq, z)

def groups(ps):
    "Three groups, the second with its own learning rate"
    return [{'params': ps[:2]}, {'params': ps[2:4], 'lr': 0.03}, {'params': ps[4:]}]

def both(name, kw, dtype, foreach):
    ps = make_params(dtype); ref = clone_params(ps)
    ours = getattr(optcb.optim, name)(groups(ps), foreach=foreach, **kw)
    theirs = getattr(schedulefree, name)(groups(ref), foreach=foreach, **kw)
    theirs.train()  # the package starts in eval mode and refuses to step before train()
    return ps, ref, ours, theirs

@pytest.mark.parametrize('name,kw', [(n, kw) for n, cs in CASES.items() for kw in cs], ids=str)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('foreach', [True, False])
def test_equal_to_the_schedulefree_package_train_and_eval_points(name, kw, dtype, foreach):
    """120 steps, every parameter stepped every time (the package counts steps per group); every 30 steps both go to
    eval mode and back: parameters (y in training, x in eval) and state equal to the last bit"""
    ps, ref, ours, theirs = both(name, kw, dtype, foreach)
    start = clone_params(ps)
    g = grad_stream(ps, STEPS, skip=())
    for t in range(STEPS):
        for p, q, gr in zip(ps, ref, g(t, ps)): p.grad, q.grad = gr.clone(), gr.clone()
        ours.step(); theirs.step()
        if t % 30 == 29:
            ours.eval(); theirs.eval()
            assert all(torch.equal(p, q) for p, q in zip(ps, ref)), f"eval point differs at step {t + 1}"
            ours.train(); theirs.train()
    assert max_errs(ps, ref, ours, theirs, STATE, extra=('step', 'lr_max', 'weight_sum')) == (0., 0.)
    lrs = [g['lr'] for g in ours.param_groups for _ in g['params']]
    # a group at lr 0 has every weight 0 and does not move (the package's ZeroDivisionError case); the others do
    assert [not torch.equal(p, s) for p, s in zip(ps, start)] == [lr > 0 and p.numel() > 0 for p, lr in zip(ps, lrs)]

@pytest.mark.parametrize('name', ['AdamWScheduleFree', 'SGDScheduleFree'])
def test_state_dict_names_are_the_packages(name):
    ps, ref, ours, theirs = both(name, {}, torch.float64, False)
    g = grad_stream(ps, 3, skip=()); run(ours, ps, g, 3); run(theirs, ref, g, 3)
    theirs_keys = set(theirs.state_dict()['state'][0])
    assert theirs_keys <= set(ours.state_dict()['state'][0])
    assert ours.state_dict()['param_groups'][0]['train_mode'] is True

# -- the fastai signature, every path, checkpoints
FASTAI = {'sfadamw': dict(lr=1e-2, wd=0.1, warmup=10), 'sfsgd': dict(lr=0.05, wd=0.1, warmup=10, r=0.5)}

@pytest.mark.parametrize('name', FASTAI)
def test_fastai_signature_equals_the_torch_signature(name):
    e = optcb.REGISTRY[name]
    ps = make_params(); ref = clone_params(ps)
    kw = FASTAI[name]
    a = e.fastai(ps, **kw)
    tkw = dict(lr=kw['lr'], weight_decay=kw['wd'], warmup_steps=kw['warmup'], r=kw.get('r', 0.))
    b = e.torch(ref, **tkw)
    g = grad_stream(ps, 60); run(a, ps, g, 60); run(b, ref, g, 60)
    a.eval(); b.eval()
    fastai_names = {v: k for k, v in e.torch.state_names.items()}  # the torch-signature class's names -> fastai's
    assert max_errs(ps, ref, a, b, fastai_names) == (0., 0.)

@pytest.mark.parametrize('name', FASTAI)
def test_group_path_equals_per_tensor_path_with_a_parameter_that_skips_steps(name):
    build = optcb.REGISTRY[name].fastai
    ps = make_params(); ref = clone_params(ps)
    a, b = build([ps[:3], ps[3:]], foreach=True, **FASTAI[name]), build([ref[:3], ref[3:]], foreach=False, **FASTAI[name])
    g = grad_stream(ps, 40, skip=((1, 3),)); run(a, ps, g, 40); run(b, ref, g, 40)
    assert a.state[ps[1]]['step'] < a.state[ps[0]]['step']  # its own count: 26 of 40
    a.eval(); b.eval()
    assert max_errs(ps, ref, a, b) == (0, 0)

@slow
@pytest.mark.parametrize('name', FASTAI)
def test_compiled_path_equals_per_tensor_path_under_a_schedule(name):
    "float64, the learning rate changing every step (lr_max moves): within 1e-12, and at the eval point too"
    build = optcb.REGISTRY[name].fastai
    ps = make_params(); ref = clone_params(ps)
    a, b = build(ps, compile=True, **FASTAI[name]), build(ref, foreach=False, **FASTAI[name])
    g = grad_stream(ps, 25, skip=())
    for t in range(25):
        for o in (a, b): o.set_hyper('lr', FASTAI[name]['lr'] * (1 + 0.01 * t))
        for p, q, gr in zip(ps, ref, g(t, ps)): p.grad, q.grad = gr.clone(), gr.clone()
        a.step(); b.step()
    assert {x.path for x in a.plan()} == {'compiled'}
    a.eval(); b.eval()
    perr, serr = max_errs(ps, ref, a, b)
    assert perr < 1e-12 and serr < 1e-12, (perr, serr)

@pytest.mark.parametrize('name', FASTAI)
@pytest.mark.parametrize('saved_in', ['train', 'eval'])
def test_checkpoint_resume_is_exact_in_either_mode(name, saved_in):
    """20 steps, eval, save model and optimizer, (train again if saved in train mode); a fresh optimizer over the saved
    parameters resumes: 20 more steps and the eval point equal an uninterrupted run's, every bit"""
    build = optcb.REGISTRY[name].fastai
    ps, ref = make_params(), make_params()
    a, b = build(ps, **FASTAI[name]), build(ref, **FASTAI[name])
    g = grad_stream(ps, 40)
    run(a, ps, g, 20); a.eval(); a.train(); run(a, ps, lambda t, qs: g(t + 20, qs), 20); a.eval()
    run(b, ref, g, 20); b.eval()
    if saved_in == 'train': b.train()
    buf = io.BytesIO(); torch.save({'model': [p.detach() for p in ref], 'opt': b.state_dict()}, buf); buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    fresh = make_params(seed=5)
    with torch.no_grad():
        for p, v in zip(fresh, ck['model']): p.copy_(v)
    b2 = build(fresh, **FASTAI[name]); b2.load_state_dict(ck['opt'])
    assert b2.training == (saved_in == 'train')
    b2.train(); run(b2, fresh, lambda t, qs: g(t + 20, qs), 20); b2.eval()
    assert all(torch.equal(p, q) for p, q in zip(ps, fresh))

# -- the modes
def trained(name='sfadamw', steps=30):
    ps = make_params()
    opt = optcb.REGISTRY[name].fastai(ps, **FASTAI[name])
    run(opt, ps, grad_stream(ps, steps), steps)
    return ps, opt

def test_eval_gives_the_average_and_train_gives_back_y():
    "x = (y − (1 − mom)·z)/mom, computed independently; train() returns to y within float64 rounding"
    ps, opt = trained()
    y = [p.detach().clone() for p in ps]
    opt.eval()
    for p, yp in zip(ps, y):
        if not p.numel(): continue
        z = opt.state[p]['z']
        assert rel_err(p, (yp - 0.1 * z) / 0.9) < 1e-12
    opt.train()
    assert max(rel_err(p, yp) for p, yp in zip(ps, y)) < 1e-14

def test_a_step_in_eval_mode_is_refused_and_changes_nothing():
    ps, opt = trained()
    opt.eval()
    before = copy.deepcopy(opt.state_dict()); x = [p.detach().clone() for p in ps]
    for p in ps: p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match=r'eval mode.*opt\.train\(\)'): opt.step()
    assert all(torch.equal(p, q) for p, q in zip(ps, x))
    assert repr(opt.state_dict()) == repr(before)

def test_switching_twice_to_the_same_mode_moves_nothing():
    ps, opt = trained()
    opt.eval(); x = [p.detach().clone() for p in ps]
    opt.eval()
    assert all(torch.equal(p, q) for p, q in zip(ps, x))
    opt.train(); y = [p.detach().clone() for p in ps]
    opt.train()
    assert all(torch.equal(p, q) for p, q in zip(ps, y))

def test_other_optimizers_have_one_point_train_and_eval_are_no_ops():
    ps = make_params()
    opt = optcb.Adam(ps, lr=1e-2)
    run(opt, ps, grad_stream(ps, 5), 5)
    before = [p.detach().clone() for p in ps]
    assert opt.eval() is opt and opt.training
    assert all(torch.equal(p, q) for p, q in zip(ps, before))
    assert 'train_mode' not in opt.param_groups[0]
    run(opt, ps, grad_stream(ps, 5), 5)  # and it still steps

def test_momentum_must_be_strictly_between_0_and_1():
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match=r'mom=0.*\(0'): O.SGDScheduleFree(w, mom=0.)
    with pytest.raises(ValueError, match='mom=1'): optcb.optim.AdamWScheduleFree(w, betas=(1., 0.999))
    with pytest.raises(ValueError, match='warmup'): optcb.optim.SGDScheduleFree(w, warmup_steps=-1)

def test_a_group_added_in_eval_mode_starts_in_eval_mode():
    ps, opt = trained()
    opt.eval()
    opt.add_param_group({'params': [torch.zeros(3, requires_grad=True)]})
    assert not opt.training and opt.param_groups[-1]['train_mode'] is False
    opt.train()
    assert opt.training

# -- the fastai Learner: switched automatically
from fastai.learner import Learner
from fastai.data.core import DataLoaders
from fastai.callback.core import Callback
from fastai.torch_core import set_seed
import fastai.callback.progress, fastai.callback.schedule  # noqa: F401 (no_bar, lr_find)
from torch import nn

def dls(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g); y = (x[:, :3].sum(1) > 0).long()
    ds = list(zip(x, y))
    return DataLoaders.from_dsets(ds[:192], ds[192:], bs=32, device='cpu')

def learner(tmp_path, opt_func=optcb.AdamWScheduleFree, seed=0):
    set_seed(seed, reproducible=True)
    learn = Learner(dls(), nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)),
                    loss_func=nn.CrossEntropyLoss(), opt_func=opt_func, path=tmp_path)
    learn.recorder.train_metrics = False
    return learn

class Modes(Callback):
    "The optimizer's mode at every training and every validation batch"
    order = 100
    def before_fit(self): self.train_modes, self.valid_modes = [], []
    def after_batch(self): (self.train_modes if self.training else self.valid_modes).append(self.opt.training)

def quiet(learn, f, *args, **kw):
    with learn.no_bar(), learn.no_logging(): return getattr(learn, f)(*args, **kw)

def test_learner_trains_at_y_validates_at_x_and_ends_at_x(tmp_path):
    learn = learner(tmp_path)
    assert 'optimizer_modes' in [cb.name for cb in learn.cbs]  # a default callback: nothing to add
    learn.add_cb(Modes())
    quiet(learn, 'fit', 3, 1e-2)
    assert learn.modes.train_modes == [True] * 18 and learn.modes.valid_modes == [False] * 6
    assert not learn.opt.training
    final = learn.recorder.values[-1][1]  # the last epoch's validation loss, at x
    assert _loss_at_current(learn) == pytest.approx(final, rel=1e-6)
    learn.opt.train()  # at y the loss differs: the switching matters
    assert _loss_at_current(learn) != pytest.approx(final, rel=1e-6)
    assert quiet(learn, 'validate')[0] == pytest.approx(final, rel=1e-6)  # validate switched back to x
    assert not learn.opt.training

def _loss_at_current(learn):
    "The validation loss at the parameters as they are, without the Learner's events (so without switching)"
    learn.model.eval()
    with torch.no_grad():
        xb, yb = zip(*list(learn.dls.valid))
        return learn.loss_func(learn.model(torch.cat(xb)), torch.cat(yb)).item()

def test_learner_save_load_and_predict_use_x_and_resume_exactly(tmp_path):
    learn = learner(tmp_path)
    quiet(learn, 'fit', 2, 1e-2)
    x = [p.detach().clone() for p in learn.model.parameters()]
    learn.save('ckpt', with_opt=True)
    assert all(torch.equal(a, b) for a, b in zip(x, torch.load(tmp_path / 'models/ckpt.pth')['model'].values()))
    learn.dls.train.rng = random.Random(1); quiet(learn, 'fit', 1, 1e-2)
    straight = [p.detach().clone() for p in learn.model.parameters()]
    # a fresh learner from the checkpoint: parameters at x, optimizer in eval mode; fit's train() moves it to y
    learn2 = learner(tmp_path, seed=3)
    learn2.load('ckpt', with_opt=True)
    assert all(torch.equal(a, b) for a, b in zip(x, learn2.model.parameters())) and not learn2.opt.training
    learn2.dls.train.rng = random.Random(1); quiet(learn2, 'fit', 1, 1e-2)
    assert all(torch.equal(a, b) for a, b in zip(straight, learn2.model.parameters()))
    # predict runs at x even if the optimizer was left at y
    learn2.opt.train()
    quiet(learn2, 'predict', torch.randn(8))
    assert not learn2.opt.training
    assert all(torch.equal(a, b) for a, b in zip(straight, learn2.model.parameters()))

def test_lr_find_leaves_model_and_optimizer_as_they_were(tmp_path):
    learn = learner(tmp_path)
    quiet(learn, 'fit', 1, 1e-2)
    before = [p.detach().clone() for p in learn.model.parameters()]
    sd = copy.deepcopy(learn.opt.state_dict())
    quiet(learn, 'lr_find', num_it=20, show_plot=False)
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))
    after = learn.opt.state_dict()  # (fastai leaves the group's lr as lr_find set it, for every optimizer)
    assert repr(after['state']) == repr(sd['state']) and not learn.opt.training

@slow
@pytest.mark.parametrize('first,second', [('optcb', 'fastai.learner'), ('fastai.learner', 'optcb')])
def test_the_learner_glue_is_registered_whichever_is_imported_first(first, second):
    code = (f"import {first}, {second}; from fastai.learner import defaults; "
            "print([c.__name__ for c in defaults.callbacks].count('OptimizerModes'))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-1:] == ['1'], out.stderr[-2000:]

@slow
def test_importing_optcb_imports_no_fastai():
    code = "import sys, optcb; optcb.optim.AdamWScheduleFree([__import__('torch').zeros(2, requires_grad=True)]); " \
           "print(any(m.split('.')[0] == 'fastai' for m in sys.modules))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-1:] == ['False'], out.stderr[-2000:]
