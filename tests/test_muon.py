"optcb.optim.Muon against torch.optim.Muon: torch's own test configurations bit for bit, its error cases, checkpoints"
import copy, pytest, torch
import optcb
from _util import grad_stream, run, clone_params, torch_optim_db

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
