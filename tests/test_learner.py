"optcb optimizers as a fastai Learner's opt_func: schedules, lr_find, discriminative lrs, freezing, checkpoints, wd on norm/bias"
import warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
import random, numpy as np, pytest, torch
from torch import nn
from functools import partial
from fastai.learner import Learner
from fastai.data.core import DataLoaders
from fastai.callback.core import Callback
from fastai.torch_core import set_seed
import fastai.optimizer as fo
from fastai.callback.schedule import *  # fit_one_cycle, lr_find
import optcb
from _util import slow

def dls(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g); y = (x[:, :3].sum(1) > 0).long()
    ds = list(zip(x, y))
    return DataLoaders.from_dsets(ds[:192], ds[192:], bs=32, device='cpu')

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        # no bias before the batch norm: its gradient would be rounding noise, amplified by Adam's normalisation
        self.body = nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 2)
    def forward(self, x): return self.head(self.body(x))

def splitter(m): return [list(m.body.parameters()), list(m.head.parameters())]

def learner(opt_func, seed=0, **kw):
    set_seed(seed, reproducible=True)
    learn = Learner(dls(), Net(), loss_func=nn.CrossEntropyLoss(), opt_func=opt_func, splitter=splitter, **kw)
    learn.recorder.train_metrics = False
    return learn

class Snoop(Callback):
    "What the optimizer holds when each batch's step runs"
    order = 100
    def before_fit(self): self.seen = []
    def after_backward(self): self.seen.append([(h['lr'], h.get('mom')) for h in self.opt.hypers])

def quiet_fit(learn, *args, **kw):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(*args, **kw)

@pytest.mark.parametrize('opt_func', [optcb.Adam, partial(optcb.SGD, mom=0.9), partial(optcb.RMSProp, mom=0.9), optcb.Yogi])
def test_fit_one_cycle_schedules_lr_and_mom_inside_the_optimizer(opt_func):
    learn = learner(opt_func); snoop = Snoop()
    learn.add_cb(snoop)
    quiet_fit(learn, 2, 1e-2)
    lrs = np.array([s[-1][0] for s in snoop.seen]); moms = np.array([s[-1][1] for s in snoop.seen])
    pct = np.arange(len(lrs)) / len(lrs)
    # fastai's one cycle, written out: lr warms up (cosine) from lr/25 to lr over the first 25% of the batches, then
    # anneals to lr/1e5; mom goes from 0.95 down to 0.85 and back
    cos = lambda a, b, x: a + (b - a) * (1 - np.cos(np.pi * x)) / 2
    warm = pct < 0.25
    exp_lr = np.where(warm, cos(1e-2 / 25, 1e-2, pct / 0.25), cos(1e-2, 1e-2 / 1e5, (pct - 0.25) / 0.75))
    exp_mom = np.where(warm, cos(0.95, 0.85, pct / 0.25), cos(0.85, 0.95, (pct - 0.25) / 0.75))
    assert np.allclose(lrs, exp_lr, rtol=1e-9) and np.allclose(moms, exp_mom, rtol=1e-9)
    # and the Recorder logged the values the optimizer held
    assert np.allclose(learn.recorder.hps['lr'], lrs) and np.allclose(learn.recorder.hps['mom'], moms)

def test_same_losses_as_fastai_adam():
    runs = []
    for opt_func in [optcb.Adam, fo.Adam]:
        learn = learner(opt_func); quiet_fit(learn, 2, 1e-2)
        runs.append((np.array(learn.recorder.losses), [p.detach().clone() for p in learn.model.parameters()]))
    assert np.allclose(runs[0][0], runs[1][0], rtol=1e-6, atol=0)
    # float32 rounding differs a little: optcb's moment update is torch's lerp, fastai's a multiply-add
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(runs[0][1], runs[1][1]))

@slow
def test_lr_find_runs_and_restores_the_model(tmp_path):
    learn = learner(optcb.Adam, path=tmp_path)  # lr_find saves the weights under path/models: not in the repository
    before = [p.detach().clone() for p in learn.model.parameters()]
    with learn.no_bar(): res = learn.lr_find(show_plot=False)
    ref = learner(fo.Adam, path=tmp_path)
    with ref.no_bar(): expected = ref.lr_find(show_plot=False)
    assert res.valley == pytest.approx(expected.valley, rel=1e-3)  # the same losses as fastai's own Adam, so the same lr
    assert [float(l) for l in learn.recorder.losses] == pytest.approx([float(l) for l in ref.recorder.losses], rel=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))

def test_discriminative_learning_rates_reach_their_groups():
    learn = learner(optcb.Adam); snoop = Snoop(); learn.add_cb(snoop)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, lr=slice(1e-4, 1e-2))
    assert [h[0] for h in snoop.seen[0]] == pytest.approx([1e-4, 1e-2])
    assert learn.opt.param_groups[0]['params'] == list(learn.model.body.parameters())

def test_freeze_keeps_batchnorm_trainable_and_unfreeze_trains_all():
    learn = learner(optcb.Adam)  # train_bn=True by default: fastai marks norm params force_train
    learn.freeze()
    body = learn.model.body
    assert not body[0].weight.requires_grad and body[1].weight.requires_grad and learn.model.head.weight.requires_grad
    w0 = body[0].weight.detach().clone()
    quiet_fit(learn, 1, 1e-2)
    assert torch.equal(w0, body[0].weight.detach())  # frozen weights do not move
    learn.unfreeze(); assert all(p.requires_grad for p in learn.model.parameters())
    learn2 = learner(optcb.Adam, train_bn=False); learn2.freeze()
    assert not learn2.model.body[1].weight.requires_grad

def test_wd_bn_bias_false_leaves_norm_and_bias_undecayed():
    learn = learner(partial(optcb.SGD, mom=0.), wd=0.5)  # wd_bn_bias=False is fastai's default
    learn.create_opt()
    bn_bias = [learn.model.body[1].weight, learn.model.body[1].bias, learn.model.head.bias]
    assert all(learn.opt.state[p].get('do_wd') is False for p in bn_bias)
    assert 'do_wd' not in learn.opt.state[learn.model.body[0].weight] and 'do_wd' not in learn.opt.state[learn.model.head.weight]
    before = {id(p): p.detach().clone() for p in learn.model.parameters()}
    for p in learn.model.parameters(): p.grad = torch.zeros_like(p)  # only weight decay moves anything
    learn.opt.set_hypers(lr=0.1, wd=0.5); learn.opt.step()
    for p in learn.model.parameters():
        expected = before[id(p)] if any(p is q for q in bn_bias) else before[id(p)] * (1 - 0.1 * 0.5)
        assert torch.allclose(p.detach(), expected)

def test_save_and_load_with_opt_continue_identically(tmp_path):
    learn = learner(optcb.Adam, path=tmp_path)
    quiet_fit(learn, 1, 1e-2)
    learn.save('ckpt', with_opt=True)
    learn.dls.train.rng = random.Random(1); quiet_fit(learn, 1, 1e-2)
    straight = [p.detach().clone() for p in learn.model.parameters()]
    learn2 = learner(optcb.Adam, path=tmp_path)
    with torch.no_grad():
        for p in learn2.model.parameters(): p.mul_(0.5)  # so that load must overwrite the weights
    learn2.load('ckpt', with_opt=True)
    assert learn2.opt.state[learn2.model.head.weight]['step'] == 6
    learn2.dls.train.rng = random.Random(1); quiet_fit(learn2, 1, 1e-2)
    assert all(torch.equal(a, b) for a, b in zip(straight, learn2.model.parameters()))
