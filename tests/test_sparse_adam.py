"optcb.optim.SparseAdam against torch.optim.SparseAdam on embeddings with sparse gradients: every bit, state, checkpoints"
import copy, pytest, torch
import optcb
from _util import torch_optim_db

def embeddings(dtype, seed=0):
    torch.manual_seed(seed)
    return [torch.nn.Embedding(30, 5, sparse=True).to(dtype), torch.nn.Embedding(12, 3, sparse=True).to(dtype)]

def batches(steps, seed=1):
    "Index batches with repeated indices (the gradient must be coalesced) and rows left untouched for many steps"
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 10 if t % 2 else 30, (16,), generator=g), torch.randint(0, 12, (6,), generator=g),
             torch.randn(16, 5, generator=g), torch.randn(6, 3, generator=g)) for t in range(steps)]

def train(opt, embs, data):
    for i1, i2, w1, w2 in data:
        opt.zero_grad()
        ((embs[0](i1) * w1.to(embs[0].weight.dtype)).sum() + (embs[1](i2) ** 2 * w2.to(embs[1].weight.dtype)).sum()).backward()
        opt.step()

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('kw', [{}, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), dict(maximize=True)], ids=str)
def test_equal_to_torch(kw, dtype):
    ours_m, theirs_m = embeddings(dtype), embeddings(dtype)
    groups = lambda es: [{'params': es[0].parameters()}, {'params': es[1].parameters(), 'lr': 0.05}]
    ours, theirs = optcb.optim.SparseAdam(groups(ours_m), **kw), torch.optim.SparseAdam(groups(theirs_m), **kw)
    data = batches(40)
    train(ours, ours_m, data); train(theirs, theirs_m, data)
    for a, b in zip(ours_m, theirs_m): assert torch.equal(a.weight, b.weight)
    sa, sb = ours.state_dict()['state'], theirs.state_dict()['state']
    assert sa.keys() == sb.keys()
    for i in sb:
        assert sa[i]['step'] == sb[i]['step'] and type(sa[i]['step']) is type(sb[i]['step'])
        for k in ('exp_avg', 'exp_avg_sq'): assert torch.equal(sa[i][k], sb[i][k]), k
    untouched = embeddings(dtype)[0].weight[10:]  # rows 10..29 are only touched every other step
    assert not torch.equal(ours_m[0].weight[10:], untouched)

def test_checkpoints_go_both_ways():
    (a_m, b_m), data = (embeddings(torch.float32), embeddings(torch.float32)), batches(30)
    a, b = optcb.optim.SparseAdam(a_m[0].parameters()), torch.optim.SparseAdam(b_m[0].parameters())
    first, second = [(i1, torch.zeros(0, dtype=torch.long), w1, torch.zeros(0, 3)) for i1, _, w1, _ in data[:15]], \
                    [(i1, torch.zeros(0, dtype=torch.long), w1, torch.zeros(0, 3)) for i1, _, w1, _ in data[15:]]
    train(a, a_m, first); train(b, b_m, first)
    a2, b2 = torch.optim.SparseAdam(a_m[0].parameters()), optcb.optim.SparseAdam(b_m[0].parameters())
    a2.load_state_dict(copy.deepcopy(a.state_dict())); b2.load_state_dict(copy.deepcopy(b.state_dict()))
    train(a2, a_m, second); train(b2, b_m, second)
    assert torch.equal(a_m[0].weight, b_m[0].weight)

def test_the_one_place_sparse_gradients_are_accepted():
    emb = torch.nn.Embedding(5, 2, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match='Optimizer does not support sparse gradients'):
        optcb.Adam(emb.parameters(), lr=1e-3).step()
    dense = torch.nn.Linear(2, 2); dense(torch.ones(1, 2)).sum().backward()
    with pytest.raises(RuntimeError, match='SparseAdam does not support dense gradients'):
        optcb.optim.SparseAdam(dense.parameters()).step()

@pytest.mark.parametrize('compile', [False, True])
def test_a_gradient_refused_in_a_later_group_leaves_every_group_unstepped(compile):
    "The kind of every gradient is checked before any param group is stepped, on the uncompiled and compiled paths"
    dense, emb = torch.nn.Linear(300, 300), torch.nn.Embedding(5, 2, sparse=True)
    opt = optcb.Adam([{'params': dense.parameters()}, {'params': emb.parameters()}], lr=1e-3, compile=compile)
    for _ in range(3):  # the compiled path builds its kernel on the second step
        dense(torch.ones(1, 300)).sum().backward()
        opt.step(); opt.zero_grad()
    before = [t.clone() for t in (*dense.parameters(), *opt.state[dense.weight].values()) if torch.is_tensor(t)]
    dense(torch.ones(1, 300)).sum().backward(); emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match='Optimizer does not support sparse gradients'):
        opt.step()
    after = [t for t in (*dense.parameters(), *opt.state[dense.weight].values()) if torch.is_tensor(t)]
    assert len(before) == 4 and all(torch.equal(a, b) for a, b in zip(after, before))
    assert opt.state[dense.weight]['step'] == 3

def test_construction_errors_are_torchs():
    from test_torch_error_inputs import outcome
    info = next(i for i in torch_optim_db() if i.optim_cls.__name__ == 'SparseAdam')
    cases = [e for e in info.optim_error_inputs_func(device='cpu', dtype=torch.float32)
             if e.error_on.name == 'CONSTRUCTION_ERROR']
    assert len(cases) >= 3
    for case in cases:
        assert isinstance(outcome(optcb.optim.SparseAdam, case), case.error_type), case.optimizer_error_input.desc

def test_param_groups_given_as_generators_keep_their_parameters():
    "A group's `params` may be a generator (model.parameters()): read once, all of them kept (a bug found here)"
    m = torch.nn.Linear(3, 2)
    for opt in (optcb.Adam([{'params': m.parameters()}], lr=1e-3), optcb.optim.SGD([{'params': m.parameters()}])):
        assert opt.param_groups[0]['params'] == list(m.parameters())
