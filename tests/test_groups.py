"`optcb.param_groups`: timm's groups on timm models, accepted by every optimizer, and stepping as torch steps them"
import pytest, torch
from torch import nn
import optcb
from optcb.groups import param_groups, block_layers, no_decay_names
from _util import grad_stream

timm = pytest.importorskip('timm')
from timm.models import group_parameters
from timm.optim import create_optimizer_v2

TIMM_MODELS = {  # small versions (depth and width cut) of the families whose grouping differs
    'vit': ('vit_tiny_patch16_224', dict(depth=3)),
    'deit_distilled': ('deit_tiny_distilled_patch16_224', dict(depth=3)),
    'beit': ('beit_base_patch16_224', dict(depth=3, embed_dim=64, num_heads=2)),
    'resnet': ('resnet18', {}),
    'convnext': ('convnext_atto', {}),
}

def timm_model(key):
    name, kw = TIMM_MODELS[key]
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5, **kw)

def described(groups, names, keys=('weight_decay', 'lr_scale')):
    "Each group as its parameter names (in order) and the values of `keys`"
    return [([names[id(p)] for p in g['params']], *(g.get(k) for k in keys)) for g in groups]

@pytest.mark.parametrize('key', TIMM_MODELS)
def test_weight_decay_groups_equal_timms(key):
    "Biases, 1-D parameters and the model's no_weight_decay() names go undecayed: timm's groups, in timm's order"
    m = timm_model(key); names = {id(p): n for n, p in m.named_parameters()}
    theirs = create_optimizer_v2(m, 'adamw', lr=1e-3, weight_decay=0.05).param_groups
    ours = param_groups(m, wd=0.05)
    assert described(ours, names, ('weight_decay',)) == described(theirs, names, ('weight_decay',))
    undecayed = {n for g in ours if g['weight_decay'] == 0 for n in (names[id(p)] for p in g['params'])}
    assert {'cls_token', 'pos_embed'} & set(names.values()) <= undecayed  # listed by the model, though not 1-D

@pytest.mark.parametrize('key', ['vit', 'deit_distilled', 'beit'])
def test_a_timm_body_inside_fastais_model_keeps_its_declared_no_decay_names(key):
    """fastai's `vision_learner` puts the timm model in `nn.Sequential(TimmBody, head)`: the body's no_weight_decay()
    names still go undecayed, so the groups are timm's groups of the body, names prefixed, then the head's"""
    from fastai.vision.learner import create_timm_model
    name, kw = TIMM_MODELS[key]
    torch.manual_seed(0)
    wrapped, _ = create_timm_model(name, n_out=5, pretrained=False, **kw)
    body, names = wrapped[0].model, {id(p): n for n, p in wrapped.named_parameters()}
    assert not hasattr(wrapped, 'no_weight_decay') and callable(getattr(body, 'no_weight_decay', None))
    theirs = create_optimizer_v2(body, 'adamw', lr=1e-3, weight_decay=0.05).param_groups
    ours = param_groups(wrapped, wd=0.05)
    in_body = [([n for n in g_names if n.startswith('0.model.')], wd) for g_names, wd in described(ours, names, ('weight_decay',))]
    assert in_body == described(theirs, names, ('weight_decay',))
    undecayed = {names[id(p)] for g in ours if g['weight_decay'] == 0 for p in g['params']}
    assert {'0.model.cls_token', '0.model.pos_embed'} & set(names.values()) <= undecayed

def test_no_weight_decay_keywords_as_swins_reference_reads_them():
    """Swin's `no_weight_decay_keywords()`: any parameter whose name contains a keyword is undecayed, as in the rule of
    the Swin Transformer's reference code (1-D, `.bias`, a listed name, or a keyword in the name), written out here"""
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.relative_position_bias_table = nn.Linear(6, 18), nn.Parameter(torch.zeros(9, 2))
    class Swinish(nn.Module):
        def __init__(self):
            super().__init__()
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4, 6))
            self.blocks = nn.ModuleList([Attn(), Attn()]); self.head = nn.Linear(6, 3)
        def no_weight_decay(self): return {'absolute_pos_embed'}
        def no_weight_decay_keywords(self): return {'relative_position_bias_table'}
    def reference(model, skip, keywords):
        return {n for n, p in model.named_parameters()
                if p.ndim == 1 or n.endswith('.bias') or n in skip or any(k in n for k in keywords)}
    m = Swinish()
    expected = reference(m, m.no_weight_decay(), m.no_weight_decay_keywords())
    assert no_decay_names(m) == expected and 'blocks.1.relative_position_bias_table' in expected
    assert no_decay_names(nn.Sequential(m)) == {f'0.{n}' for n in expected}  # wrapped: read relative to the module
    decayed = {n for g in param_groups(m, wd=0.1) if g['weight_decay'] for n, p in m.named_parameters()
               if any(p is q for q in g['params'])}
    assert decayed == {'blocks.0.qkv.weight', 'blocks.1.qkv.weight', 'head.weight'}

@pytest.mark.parametrize('key', TIMM_MODELS)
def test_layer_decay_groups_equal_timms(key):
    m = timm_model(key); names = {id(p): n for n, p in m.named_parameters()}
    theirs = create_optimizer_v2(m, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.75).param_groups
    ours = param_groups(m, wd=0.05, layer_decay=0.75)
    assert described(ours, names) == described(theirs, names)
    assert len({g['lr_scale'] for g in ours}) >= 5

@pytest.mark.parametrize('key', ['beit', 'resnet', 'convnext'])
def test_numbered_blocks_find_the_layers_timm_models_declare(key):
    """The structural rule (numbered blocks; stem 0; a downsample with the block after it; head on top) agrees with the
    layers these timm models declare in group_matcher — so models that declare nothing get the same treatment"""
    m = timm_model(key)
    declared = group_parameters(m, m.group_matcher(coarse=False), reverse=True)
    assert block_layers(m) == declared and len(set(declared.values())) >= 5

def test_hugging_face_bert_blocks_and_no_decay_names():
    """A BERT built from a config: embeddings at layer 0, encoder.layer.i at i+1, pooler and classifier on top; the
    decayed names are those the Hugging Face Trainer decays"""
    transformers = pytest.importorskip('transformers')
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                  intermediate_size=32, num_labels=3)
    m = transformers.BertForSequenceClassification(cfg)
    ids = block_layers(m)
    for n, i in ids.items():
        if n.startswith('bert.embeddings.'): assert i == 0, n
        elif n.startswith('bert.encoder.layer.'): assert i == int(n.split('.')[3]) + 1, n
        else: assert n.startswith(('bert.pooler.', 'classifier.')) and i == 4, n
    decayed = {n for n, _ in m.named_parameters()} - no_decay_names(m)
    assert decayed == set(transformers.Trainer.get_decay_parameter_names(None, m))

def _model():
    torch.manual_seed(0)
    block = lambda: nn.Sequential(nn.Linear(8, 8), nn.GELU())
    return nn.Sequential(nn.Linear(6, 8), block(), block(), nn.LayerNorm(8), nn.Linear(8, 3)).double()

def _train(opt, model, steps=30):
    ps = [p for p in model.parameters()]
    grads = grad_stream(ps, steps, skip=())
    for t in range(steps):
        for p, g in zip(ps, grads(t, ps)): p.grad = g.clone()
        opt.step()

@pytest.mark.parametrize('cls', ['AdamW', 'Adam', 'SGD', 'RMSprop', 'Adagrad', 'Adamax', 'NAdam', 'RAdam', 'Adadelta'])
def test_torch_signature_classes_step_the_groups_as_torch_does(cls):
    "Layer-decayed learning rates and per-group weight decay: the same parameters as torch.optim's class, bit for bit"
    kw = {'momentum': 0.9} if cls == 'SGD' else {}
    m1, m2 = _model(), _model()
    ours = getattr(optcb.optim, cls)(param_groups(m1, wd=0.1, layer_decay=0.5, lr=1e-2), **kw)
    theirs = getattr(torch.optim, cls)(param_groups(m2, wd=0.1, layer_decay=0.5, lr=1e-2), foreach=False, **kw)
    _train(ours, m1); _train(theirs, m2)
    for (n, a), b in zip(m1.named_parameters(), m2.parameters()): assert torch.equal(a, b), n
    assert [g['lr'] for g in ours.param_groups] == [g['lr'] for g in theirs.param_groups]

@pytest.mark.parametrize('name', [e.name for e in optcb.REGISTRY.values()])
def test_every_optimizer_takes_the_groups_and_decays_only_where_they_say(name):
    """Both signatures: against the same optimizer with wd=0 everywhere, the no-decay parameters follow exactly the
    same path and every other one a different path; the groups' learning rates are kept"""
    entry = optcb.REGISTRY[name]
    builders = [entry.build] + ([entry.torch] if entry.torch else [])
    if 'wd' not in entry.chain.used:  # Rprop: no weight decay to leave out, and a group that sets one is refused
        with pytest.raises(TypeError, match="unknown hyperparameter 'weight_decay'"):
            entry.build(param_groups(_model(), wd=0.1))
        return
    for build in builders:
        m1, m2 = _model(), _model()
        groups = param_groups(m1, wd=0.1, layer_decay=0.5, lr=1e-3)
        o1, o2 = build(groups), build(param_groups(m2, wd=0., layer_decay=0.5, lr=1e-3))
        assert [g['lr'] for g in o1.param_groups] == [g['lr'] for g in groups]
        _train(o1, m1, 5); _train(o2, m2, 5)
        skip = no_decay_names(m1)
        for (n, a), b in zip(m1.named_parameters(), m2.parameters()):
            assert torch.equal(a, b) == (n in skip), (name, build, n)

def test_weight_decay_is_applied_by_either_name():
    "`weight_decay` in a fastai-signature group, `wd` in a torch-signature one: both decay that group, and only it"
    w1, w2 = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    for opt in (optcb.SGD([{'params': [w1], 'weight_decay': 0.5}, {'params': [w2]}], lr=0.1),
                optcb.optim.SGD([{'params': [w1], 'wd': 0.5}, {'params': [w2]}], lr=0.1)):
        w1.data.fill_(1); w2.data.fill_(1); w1.grad, w2.grad = torch.zeros(3), torch.zeros(3)
        opt.step()
        assert torch.allclose(w1, torch.full((3,), 0.95)) and torch.equal(w2, torch.ones(3))

def test_weight_decay_named_twice_is_refused_and_nothing_changes():
    m = _model(); opt = optcb.AdamW(param_groups(m, wd=0.1), lr=1e-3)
    before = [dict(g) for g in opt.param_groups]
    with pytest.raises(TypeError, match="param group 2 sets weight decay twice, as 'wd' and as 'weight_decay'"):
        opt.add_param_group({'params': [torch.zeros(2, requires_grad=True)], 'wd': 0.1, 'weight_decay': 0.2})
    assert opt.param_groups == before
    with pytest.raises(TypeError, match="unknown hyperparameter 'lr_scal'"):
        optcb.Adam([{'params': list(m.parameters()), 'lr_scal': 0.5}], lr=1e-3)

def test_a_learner_trains_on_the_groups():
    "As a fastai splitter: fit_one_cycle runs, the no-decay group keeps wd=0 and its zero-gradient members stay put"
    fastai_learner = pytest.importorskip('fastai.learner')
    import fastai.callback.schedule  # noqa: F401 (fit_one_cycle)
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    torch.manual_seed(0)
    x = torch.randn(64, 6); y = torch.randint(0, 3, (64,))
    ds = list(zip(x, y))
    dls = DataLoaders(DataLoader(ds, bs=16, shuffle=True), DataLoader(ds, bs=16))
    model = _model().float()
    learn = fastai_learner.Learner(dls, model, loss_func=nn.CrossEntropyLoss(), opt_func=optcb.AdamW,
                                   splitter=lambda m: param_groups(m, wd=0.1))
    learn.fit_one_cycle(2, 1e-2)
    assert [g['wd'] for g in learn.opt.param_groups] == [0., 0.1]
    assert learn.recorder.values and all(torch.isfinite(torch.tensor(v)).all() for v in learn.recorder.values)
