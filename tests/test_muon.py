"optcb.optim.Muon against torch.optim.Muon: torch's own test configurations bit for bit, its error cases, checkpoints"
import copy, pytest, torch
import optcb
from _util import grad_stream, run, clone_params, torch_optim_db, slow

def matrices(dtype=torch.float32, seed=0, shapes=((6, 4), (4, 6), (5, 5), (3, 8))):
    "Weight matrices, wide, tall and square, as Muon is built for"
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]

def configs():
    info = next(i for i in torch_optim_db() if i.optim_cls.__name__ == 'Muon')
    return [i.kwargs for i in info.optim_inputs_func(device='cpu')]

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_equal_to_torch_on_torchs_test_configurations(dtype):
    "Every configuration of torch's tests (tensor lr, ns_steps, coefficients, lr adjustments): 40 steps, every bit"
    cases = configs()
    assert len(cases) >= 8
    for kw in cases:
        ps = matrices(dtype); ref = clone_params(ps); start = clone_params(ps)
        groups = lambda qs: [{'params': qs[:2]}, {'params': qs[2:], 'lr': 0.02, 'momentum': 0.9}]
        a, b = optcb.optim.Muon(groups(ps), **copy.deepcopy(kw)), torch.optim.Muon(groups(ref), **copy.deepcopy(kw))
        g = grad_stream(ps, 40, skip=((1, 3),))
        run(a, ps, g, 40); run(b, ref, g, 40)
        for p, q, s in zip(ps, ref, start):
            assert torch.equal(p, q), kw
            assert not torch.equal(p, s)
        for p, q in zip(ps, ref):
            assert torch.equal(a.state[p]['momentum_buffer'], b.state[q]['momentum_buffer']), kw

def test_construction_errors_are_torchs():
    info = next(i for i in torch_optim_db() if i.optim_cls.__name__ == 'Muon')
    from test_torch_error_inputs import outcome
    cases = [e for e in info.optim_error_inputs_func(device='cpu', dtype=torch.float32)
             if e.error_on.name == 'CONSTRUCTION_ERROR']
    assert {c.optimizer_error_input.desc for c in cases} >= {'only support 2D parameters', 'unsupported adjust_lr_fn'}
    for case in cases:
        assert isinstance(outcome(optcb.optim.Muon, case), case.error_type), case.optimizer_error_input.desc

def test_checkpoints_go_both_ways():
    "torch.optim.Muon resumes from optcb's state dict and optcb from torch's, continuing exactly"
    ps = matrices(); ref = clone_params(ps)
    a, b = optcb.optim.Muon(ps, lr=0.02), torch.optim.Muon(ref, lr=0.02)
    g = grad_stream(ps, 30); run(a, ps, g, 15); run(b, ref, g, 15)
    a2, b2 = torch.optim.Muon(ps, lr=0.02), optcb.optim.Muon(ref, lr=0.02)
    a2.load_state_dict(copy.deepcopy(a.state_dict())); b2.load_state_dict(copy.deepcopy(b.state_dict()))
    later = lambda t, qs: g(t + 15, qs)
    run(a2, ps, later, 15); run(b2, ref, later, 15)
    assert all(torch.equal(p, q) for p, q in zip(ps, ref))

def test_the_iteration_orthogonalises():
    "Newton–Schulz maps a random matrix near an orthogonal one: singular values in (0.5, 1.5), as Muon's authors say"
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(3))
    s = torch.linalg.svdvals(optcb.callbacks.newton_schulz(x).float())
    assert s.min() > 0.5 and s.max() < 1.5 and torch.linalg.svdvals(x).max() / torch.linalg.svdvals(x).min() > 2

# -- optcb.Muon: a whole model, Muon on the hidden matrices, AdamW on the rest
def model_params(seed=0):
    "A small network's parameters in model order: stem conv, its bias, two hidden convs of one shape, a linear, a head"
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 3, 3, 3), (8,), (8, 8, 3, 3), (8,), (8, 8, 3, 3), (8,), (16, 72), (16,), (10, 16), (10,)]
    return [(torch.randn(s, generator=g) * 0.3).requires_grad_() for s in shapes]

HIDDEN = [False, False, True, False, True, False, True, False, False, False]

def reference_pair(ps, lr, mom, sqr_mom, eps, wd):
    """torch.optim.Muon (RMS-matched lr) on 2-D copies of the hidden parameters (kernels flattened), torch.optim.AdamW
    on the others: the independent reference"""
    mats = [p.detach().reshape(p.size(0), -1).clone().requires_grad_() for p, h in zip(ps, HIDDEN) if h]
    rest = [p.detach().clone().requires_grad_() for p, h in zip(ps, HIDDEN) if not h]
    muon = torch.optim.Muon(mats, lr=lr, momentum=mom, weight_decay=wd, adjust_lr_fn='match_rms_adamw')
    adamw = torch.optim.AdamW(rest, lr=lr, betas=(mom, sqr_mom), eps=eps, weight_decay=wd, foreach=False)
    return mats, rest, muon, adamw

@pytest.mark.parametrize('foreach', [True, False])
def test_whole_model_muon_equals_torch_muon_plus_adamw(foreach):
    "60 steps: the hidden matrices as torch.optim.Muon moves them (the two same-shape kernels as one batch), the rest as AdamW"
    ps = model_params()
    opt = optcb.Muon(ps, lr=0.01, foreach=foreach)
    assert [opt.state[p]['muon'] for p in ps] == HIDDEN
    mats, rest, muon, adamw = reference_pair(ps, 0.01, 0.95, 0.95, 1e-8, 0.1)
    g = grad_stream(ps, 60, skip=())
    for t in range(60):
        grads = g(t, ps)
        for p, gr in zip(ps, grads): p.grad = gr.float()
        opt.step()
        hid = [gr for gr, h in zip(grads, HIDDEN) if h]
        for q, gr in zip(mats, hid): q.grad = gr.float().reshape(q.shape)
        for q, gr in zip(rest, [gr for gr, h in zip(grads, HIDDEN) if not h]): q.grad = gr.float()
        muon.step(); adamw.step()
    assert all(torch.equal(p.reshape(q.shape), q) for p, q in zip([p for p, h in zip(ps, HIDDEN) if h], mats))
    assert all(torch.equal(p, q) for p, q in zip([p for p, h in zip(ps, HIDDEN) if not h], rest))
    if foreach: assert sorted(b.params for b in opt.plan()) == [1, 1, 1, 1, 1, 2, 3]  # one bucket per shape

def test_which_parameters_muon_steps():
    "Matrices and kernels but the first and last; not vectors, nor a ViT's class token and position embedding"
    shapes = [(1, 1, 32), (1, 17, 32), (32, 3, 4, 4), (96, 32), (32,), (32, 32), (128, 32), (32, 128), (10, 32)]
    ps = [torch.zeros(s) for s in shapes]
    assert optcb.muon_hidden(ps) == [False, False, False, True, False, True, True, True, False]
    w = [torch.zeros(4, 4, requires_grad=True), torch.zeros(4, requires_grad=True)]
    opt = optcb.Muon(w, lr=1e-3, hidden=lambda p: p.dim() == 2)
    assert [opt.state[p]['muon'] for p in w] == [True, False]
    opt = optcb.Muon(w, lr=1e-3, hidden=[])
    assert [opt.state[p]['muon'] for p in w] == [False, False]
    with pytest.raises(ValueError, match=r'parameter 1 of shape \(4,\)'): optcb.Muon(w, lr=1e-3, hidden=w)

def test_flags_survive_clear_state_and_checkpoints():
    import io
    ps, ref = model_params(), model_params()
    a, b = optcb.Muon(ps, lr=0.01), optcb.Muon(ref, lr=0.01)
    g = grad_stream(ps, 40, skip=())
    run(a, ps, g, 40); run(b, ref, g, 20)
    buf = io.BytesIO(); torch.save(b.state_dict(), buf); buf.seek(0)
    b2 = optcb.Muon(ref, lr=0.01, hidden=[])  # built with other flags: the checkpoint's win
    b2.load_state_dict(torch.load(buf, weights_only=True))
    assert [b2.state[p]['muon'] for p in ref] == HIDDEN
    run(b2, ref, lambda t, qs: g(t + 20, qs), 20)
    assert all(torch.equal(p, q) for p, q in zip(ps, ref))
    a.clear_state()
    assert [a.state[p] for p in ps] == [{'muon': h} for h in HIDDEN]

@slow
def test_whole_model_muon_trains_a_cnn_under_fit_one_cycle(tmp_path):
    "A fastai Learner with opt_func=optcb.Muon: fit_one_cycle cycles mom, the loss falls, lr_find runs"
    from fastai.learner import Learner
    from fastai.data.core import DataLoaders
    from fastai.callback.schedule import fit_one_cycle  # noqa: F401
    import fastai.callback.progress  # noqa: F401
    from torch import nn
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 8, 8, generator=g); y = (x.mean((1, 2, 3)) > 0).long()
    ds = list(zip(x, y))
    torch.manual_seed(0)
    dls = DataLoaders.from_dsets(ds[:192], ds[192:], bs=32, device='cpu')
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2))
    learn = Learner(dls, model, loss_func=nn.CrossEntropyLoss(), opt_func=optcb.Muon, path=tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.lr_find(num_it=20, show_plot=False)
        learn.fit_one_cycle(8, 3e-2)
    flags = [learn.opt.state[p]['muon'] for p in model.parameters()]
    assert flags == [False, False, True, False, True, False, False, False]
    with torch.no_grad(): acc = (model(x[192:]).argmax(1) == y[192:]).float().mean().item()
    assert acc > 0.8, acc  # from 0.5: Adam reaches 0.875-0.9 here
    assert learn.opt.state[model[2].weight]['momentum_buffer'].shape == (8, 8, 3, 3)
    assert 'grad_avg' in learn.opt.state[model[0].weight] and 'momentum_buffer' not in learn.opt.state[model[0].weight]
