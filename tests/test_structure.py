"The project's structure: one registry that everything listing optimizers derives from, a light core, no silent fallback"
import importlib.util, re, subprocess, sys, tomllib
from pathlib import Path
import pytest, torch
import optcb
from optcb import REGISTRY, Optimizer, callback, count_loops, FRACTION
from _util import make_params, grad_stream, run, paths, slow

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ('fastai', 'torchvision', 'matplotlib', 'sklearn')

# -- the registry: every list of optimizers is derived from it
def test_readme_table_is_the_registry():
    sys.path.insert(0, str(ROOT / 'tools'))
    import sync_readme
    readme = (ROOT / 'README.md').read_text()
    for name, body in sync_readme.generated().items():
        assert sync_readme.block(name, body) in readme, f"README's {name} table is stale: run python tools/sync_readme.py"
    assert all(f"| `{name}` |" in optcb.registry.markdown_table() for name in REGISTRY)
    assert all(f"| `{name}` |" in readme for name in REGISTRY)

def test_benchmarks_md_is_generated_from_the_reference_measurements():
    "BENCHMARKS.md is what tools/benchmarks.py writes from bench/reference/, and every figure it shows is there"
    sys.path.insert(0, str(ROOT / 'tools'))
    import benchmarks
    text = (ROOT / 'BENCHMARKS.md').read_text()
    assert text == benchmarks.render(), 'BENCHMARKS.md is stale: run python tools/benchmarks.py'
    figures = re.findall(r'\]\((bench/reference/[^)]+\.png)\)', text)
    assert len(figures) == 5 and all((ROOT / f).stat().st_size > 10_000 for f in figures)

def test_the_landing_page_and_the_benchmarks_page_show_their_files():
    for nb, name in [('index', 'README.md'), ('17_benchmarks', 'BENCHMARKS.md')]:
        assert f"page('{name}')" in (ROOT / 'nbs' / f'{nb}.ipynb').read_text()

def test_readme_is_a_landing_page():
    "About 8 KB: what optcb is, the two commands, the examples, the table, and where to read on"
    readme = (ROOT / 'README.md').read_text()
    assert len(readme.encode()) <= 8_400, len(readme.encode())
    assert re.findall(r'^## (.+)$', readme, re.M) == ['What it is', 'Optimizers', 'Where to read on', 'Development']

def test_no_session_or_issue_numbers_in_the_documents():
    "The project's documents describe the project, not its history: no 'session 9' or 'issue 11' in them"
    docs = [ROOT / 'README.md', ROOT / 'BENCHMARKS.md', *sorted((ROOT / 'nbs').glob('*.ipynb'))]
    found = [f'{d.name}: {m[0]}' for d in docs for m in re.finditer(r'\b(?:session|issue)s? \d+', d.read_text(), re.I)]
    assert found == [], found

def test_compare_knows_every_registry_entry():
    C = pytest.importorskip('optcb.compare')
    for name, e in REGISTRY.items():
        c = C.contender(name)
        assert (c.name, c.opt_func, c.lr, c.fit_kwargs) == (name, e.fastai, e.lr, e.fit_kwargs)

@pytest.mark.parametrize('cmd', ['compare', 'bench'])
def test_cli_help_lists_every_optimizer_and_data_set(cmd):
    from optcb.cli import parser
    help = parser(cmd).format_help()
    listed = re.search(r'optimizers:\n(.*?)(\n\n|$)', help, re.S).group(1)
    assert sorted(n.strip() for n in listed.replace('\n', ' ').split(',')) == sorted(REGISTRY)
    if cmd == 'compare':
        from optcb.compare import DATASETS
        assert all(f"  {d}: " in help for d in DATASETS)

def test_bench_builds_every_registry_entry_next_to_its_references():
    import optcb.bench as B
    for name in REGISTRY:
        cs = B.contenders(name, include_torch_compile=False)
        spec = REGISTRY[name].bench_spec()
        torch_modes = spec.torch[2] if spec.torch else ()
        assert 'optcb per-tensor' in cs and ('torch for-loop' in cs) == bool(spec.torch)
        assert ('torch fused' in cs) == ('fused' in torch_modes) != ('torch fused AdamW (yardstick)' in cs)
        assert ('fastai ' + spec.fastai[0] in cs) if spec.fastai else not any(k.startswith('fastai') for k in cs)
        assert ('optcb group (foreach)' in cs) == (not REGISTRY[name].chain.per_tensor)  # SOAP, Adafactor: per tensor
        assert all(label in cs for label, module, _, _ in spec.peers if importlib.util.find_spec(module))
    for name in ('adam', 'lamb'):  # every built-in chain compiles, LAMB's per-layer norms included
        cs = B.contenders(name, include_torch_compile=False)
        assert {'optcb default (compiled)', 'optcb default, Learner loop'} <= cs.keys()
        assert any(n.startswith('torch fused') and n.endswith(', Learner loop') for n in cs)
        assert ('optcb adam default (yardstick)' in cs) == (name != 'adam')

def test_bench_resnet34_shapes_are_torchvisions():
    tv = pytest.importorskip('torchvision')
    import optcb.bench as B
    assert B.resnet34_shapes() == [tuple(p.shape) for p in tv.models.resnet34().parameters()]

def test_every_torch_signature_class_of_optcb_optim_is_in_the_registry():
    classes = {c for n in optcb.optim.__all__ if isinstance(c := getattr(optcb.optim, n), type)} - {optcb.optim.TorchOptimizer}
    # not opt_funcs for a whole model: Muon takes 2-D parameters only (the registry's 'muon' is optcb.Muon, Muon + AdamW),
    # SparseAdam sparse gradients only, LBFGS a closure that evaluates the whole batch
    exempt = {optcb.optim.AdamW, optcb.optim.Muon, optcb.optim.SparseAdam, optcb.optim.LBFGS}
    assert classes - exempt <= {e.torch for e in REGISTRY.values()}

# one chain per optimizer: where fastai's and torch's algorithms agree, the two signatures run the same callbacks in
# the same order (each class's `chain_for` calls its fastai twin's chain function); where they differ, by one callback
# (RMSprop's momentum differs in two: torch's on the scaled gradient, inside its step, and its step count)
from optcb import optim as T
SAME_CHAIN = [(optcb.Adam, dict(decouple_wd=False), T.Adam, {}), (optcb.Adam, dict(amsgrad=True, decouple_wd=False),
              T.Adam, dict(amsgrad=True)), (optcb.AdamW, {}, T.AdamW, {}), (optcb.Adagrad, {}, T.Adagrad, {}),
              (optcb.Adamax, {}, T.Adamax, {}), (optcb.NAdam, dict(decouple_wd=False), T.NAdam, {}),
              (optcb.RAdam, {}, T.RAdam, dict(decoupled_weight_decay=True)), (optcb.ASGD, {}, T.ASGD, {}),
              (optcb.Adafactor, {}, T.Adafactor, {}), (optcb.SGD, dict(mom=0.9, decouple_wd=False), T.SGD, dict(momentum=0.9)),
              (optcb.Adadelta, {}, T.Adadelta, {}), (optcb.Rprop, {}, T.Rprop, {}),
              (optcb.SGDScheduleFree, {}, T.SGDScheduleFree, {}), (optcb.AdamWScheduleFree, {}, T.AdamWScheduleFree, {})]
DIFFERS_BY = {T.SGD: ('average_grad', 'sgd_momentum'), T.RAdam: ('radam_step', 'torch_radam_step'),
              T.Adadelta: (None, 'step_stat'), T.Rprop: (None, 'step_stat')}

@pytest.mark.parametrize('ours,kw,theirs,tkw', SAME_CHAIN, ids=lambda x: getattr(x, '__qualname__', ''))
def test_both_signatures_run_one_chain_in_one_order(ours, kw, theirs, tkw):
    w = torch.zeros(3, requires_grad=True)
    a = [cb.name.split('(')[0] for cb in ours([w], **{'lr': 1e-3, **kw}).chain]
    b = [cb.name.split('(')[0] for cb in theirs([w], **tkw).chain]
    was, now = DIFFERS_BY.get(theirs, (None, None))
    if was: a = [now if n == was else n for n in a]
    elif now: b.remove(now)
    assert a == b

# -- a light core
def test_core_dependencies_are_torch_fastcore_and_numpy():
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    assert sorted(re.split(r'[<>=\[ ]', d)[0] for d in project['dependencies']) == ['fastcore', 'numpy', 'torch']
    extra = ' '.join(project['optional-dependencies']['fastai'])
    assert all(p in extra for p in ('fastai', 'torchvision', 'matplotlib', 'scikit-learn'))

@slow
def test_building_and_stepping_every_optimizer_imports_no_heavy_package():
    code = f"""
import sys, torch, optcb
ps = [torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
for e in optcb.REGISTRY.values():
    for make in [e.build] + ([e.torch] if e.torch else []):
        opt = make(ps)
        for _ in range(2):
            for p in ps: p.grad = torch.randn_like(p)
            opt.step()
import optcb.cli, optcb.bench
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'

def test_compare_without_the_extra_names_it():
    code = """
import sys, builtins
real = builtins.__import__
def no_fastai(name, *a, **k):
    if name.split('.')[0] == 'fastai': raise ImportError(f"No module named {name!r}")
    return real(name, *a, **k)
builtins.__import__ = no_fastai
from optcb.cli import main
sys.exit(main(['compare', '--epochs', '1']))
"""
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 2 and "pip install 'optcb[fastai]'" in r.stderr, r.stderr

# -- the group path takes torch's foreach kernels: no silent fallback to a per-tensor loop
def _steady_state_loops(opt, ps):
    g = grad_stream(ps, 4, skip=())
    run(opt, ps, g, 2)  # the first steps create state (zeros_like, full_like: one loop each by design)
    with count_loops() as n: run(opt, ps, lambda t, qs: g(t + 2, qs), 2)
    return n

BUILDERS = [(name, e.build) for name, e in REGISTRY.items() if e.compiles] + \
           [(f"optim.{e.torch.__name__}", e.torch) for e in REGISTRY.values() if e.torch and e.compiles]

@pytest.mark.parametrize('name,make', BUILDERS, ids=[n for n, _ in BUILDERS])
def test_group_path_never_falls_back_in_float32(name, make):
    ps = make_params(torch.float32)
    opt = make(ps, foreach=True)
    assert paths(opt) == {'group'}
    n = _steady_state_loops(opt, ps)
    assert not [k for k in n if k[1] == 'fallback'], n
    # loops by design where torch has no kernel: only where the maths needs it, listed here so that a new one shows
    allowed = {'radam': set(), 'optim.RAdam': {'rtruediv'}, 'lamb': {'eq', 'logical_or', 'where', 'clamp'},
               'larc': {'clamp'}, 'ranger': set(), 'rprop': {'gt', 'lt', 'eq', 'where'},
               'optim.Rprop': {'gt', 'lt', 'eq', 'where'}, 'cadamw': {'clone', 'mean'}, 'clion': {'clone', 'mean'},
               # the per-tensor inner products and L1 norms they pool, in float64 as their authors add them
               **{n: {'flatten', 'dot', 'double', 'sum'}
                  for n in ('prodigy', 'dadapt_adam', 'optim.Prodigy', 'optim.DAdaptAdam')}}
    assert {k[0] for k in n} <= allowed.get(name, set()), n

def test_a_kernel_that_is_bypassed_is_counted_as_a_fallback():
    from optcb import TensorList
    with count_loops() as n: TensorList([torch.ones(2), torch.ones(3)]).mul_(torch.tensor([2.]))
    assert n == {('mul', 'fallback'): 1}

# -- plan(): which path, and why, in one public place
def test_plan_says_which_path_each_bucket_takes_and_why(monkeypatch):
    big = [torch.zeros(2**18, requires_grad=True), torch.zeros(10, requires_grad=True)]
    assert [(b.path, b.why) for b in optcb.Adam(big, lr=1e-3, foreach=False).plan()] == [('per-tensor', 'foreach=False')] * 2
    assert [(b.path, b.why) for b in optcb.Adam(big, lr=1e-3, compile=False).plan()] == [('group', 'compile=False')]
    lamb = optcb.Lamb(big, lr=1e-3, compile=True).plan()  # per-layer norms compile too
    assert lamb[0].path == 'compiled' and optcb.REGISTRY['lamb'].compiles
    @optcb.callback(foreach=False)
    def branches(p, *, lr): pass
    bs = optcb.Optimizer(big, [branches], lr=1e-3).plan()
    assert {b.path for b in bs} == {'per-tensor'} and 'branches' in bs[0].why
    [b] = optcb.Adam(big, lr=1e-3, compile=True).plan()
    assert (b.path, b.why, b.params, b.numel, b.dtype) == ('compiled', 'compile=True', 2, 2**18 + 10, 'float32')
    monkeypatch.setenv('OPTCB_COMPILE', '1')  # the default rule (compile=None): by the bucket's size
    [b] = optcb.Adam(big, lr=1e-3).plan()
    assert (b.path, b.why) == ('compiled', '262,154 values in the step >= compile_min_numel=65,536')
    [b] = optcb.Adam(big[1:], lr=1e-3).plan()
    assert (b.path, b.why) == ('group', '10 values in the step < compile_min_numel=65,536')
    # the step's size decides for all its buckets: a bucket of 10 values is compiled beside a large one, whether it
    # differs in a flag or is a param group of its own
    opt = optcb.Adam(big, lr=1e-3); opt.state[big[1]]['do_wd'] = False
    assert [(b.numel, b.path) for b in opt.plan()] == [(2**18, 'compiled'), (10, 'compiled')]
    opt = optcb.Adam([{'params': big[:1]}, {'params': big[1:], 'wd': 0.}], lr=1e-3)
    assert [(b.group, b.numel, b.path) for b in opt.plan()] == [(0, 2**18, 'compiled'), (1, 10, 'compiled')]
    big[0].grad = torch.zeros_like(big[0])  # the plan of the next step: only what has a gradient is stepped
    assert [(b.group, b.numel) for b in opt.plan()] == [(0, 2**18)]
    assert optcb.Paths(opt.chain).decide(big[1:], [{}]) == ('group', '10 values < compile_min_numel=65,536')

@slow
def test_plan_says_what_else_each_step_does(monkeypatch):
    """`also`: a compiled bucket's first step on the group path, then its many small tensors gathered (as the step does
    them: the gathered buffers exist after it); float32 working copies; with gradient release, per tensor"""
    monkeypatch.setenv('OPTCB_COMPILE', '1')
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(100)) for _ in range(70)] + [torch.nn.Parameter(torch.randn(300, 300))]
    for p in ps: p.grad = torch.randn_like(p)
    opt = optcb.Adam(ps, lr=1e-3)
    [b] = opt.plan()
    assert (b.path, b.also) == ('compiled', ('its first step runs on the group path: it creates the state',))
    built = optcb.paths.kernels_built()
    opt.step()
    assert optcb.paths.kernels_built() == built  # as it said: no kernel yet
    [b] = opt.plan()
    assert b.path == 'compiled' and len(b.also) == 1 and b.also[0].startswith('70 tensors under 16,384 values gathered')
    opt.step()
    assert optcb.paths.kernels_built() == built + 1
    w16 = torch.nn.Parameter(torch.randn(10).bfloat16())
    [b] = optcb.Adam([w16], lr=1e-3).plan()
    assert b.also == ('the callbacks run in float32 on working copies (Kahan summation)',)
    [b] = optcb.Adam(ps[:1], lr=1e-3, state_dtype=torch.bfloat16).plan()
    assert b.also == ('the callbacks run in float32 on working copies (state in torch.bfloat16)',)
    [b] = optcb.Adam(ps, lr=1e-3, release_gradients=True).plan()
    assert (b.path, b.why, b.also) == ('per-tensor', 'release_gradients: stepped during backward', ())

def test_the_step_runs_the_runners_plan_names(monkeypatch):
    """`plan()` and the step read one list of routes: before each of three steps, the runners the plan names (a
    compiled bucket's first step, then its kernel call; the group path; per tensor; a complex parameter's real view;
    float32 working copies around a 16-bit parameter's runner) are the ones the step then calls, bucket by bucket"""
    monkeypatch.setenv('OPTCB_COMPILE', '1')
    torch.manual_seed(0)
    big, small, each = torch.randn(2**17), torch.randn(10), torch.randn(7)
    z, half = torch.randn(5, dtype=torch.complex64), torch.randn(6).bfloat16()
    ps = [torch.nn.Parameter(t) for t in (big, small, each, z, half)]
    opt = optcb.optim.AdamW([{'params': ps[:2]}, {'params': ps[2:3], 'foreach': False},
                             {'params': ps[3:4]}, {'params': ps[4:], 'fused': False}], lr=1e-3)
    opt.set_precision(kahan_sum=None)  # Kahan summation wherever a parameter is 16-bit
    ran = []
    def spy(cls, name):
        real = getattr(cls, name)
        def run(self, *a, **kw):
            params = next(x for x in a if isinstance(x, list))
            ran.append((name, len(params)))
            return real(self, *a, **kw)
        monkeypatch.setattr(cls, name, run)
    for name in ('_run_each', '_run_group', '_run_first', '_run_compiled'): spy(optcb.Paths, name)
    spy(Optimizer, '_step_complex'); spy(Optimizer, '_step_in_working_copies')
    def expected(b):
        if b.why.startswith('complex'): return [('_step_complex', 1), ('_run_each', 1)]
        first = any('first step' in a for a in b.also)  # the group runner, called by the first step's
        inner = {'per-tensor': ['_run_each'] * b.params, 'group': ['_run_group'],
                 'compiled': ['_run_first', '_run_group'] if first else ['_run_compiled']}[b.path]
        inner = [(n, 1 if n == '_run_each' else b.params) for n in inner]
        return [('_step_in_working_copies', b.params), *inner] if any('working copies' in a for a in b.also) else inner
    for t in range(3):
        for p in ps: p.grad = torch.randn_like(p)
        plan, ran[:] = opt.plan(), []
        opt.step()
        assert ran == [x for b in plan for x in expected(b)], (t, plan, ran)
    assert {b.path for b in plan} == {'compiled', 'group', 'per-tensor'} and len(plan) == 4

# -- callbacks declare the ranges of their own hyperparameters
def test_a_callback_declares_the_range_of_its_own_hyperparameter():
    @callback(blend=0.5, ranges=dict(blend=FRACTION))
    def blend_step(p, *, lr, blend): p.add_(p.grad, alpha=-lr * blend)
    ps = make_params()
    with pytest.raises(ValueError, match=r'invalid blend=1.5 .*\[0, 1\]'): Optimizer(ps, [blend_step], lr=0.1, blend=1.5)
    opt = Optimizer(ps, [blend_step], lr=0.1)
    with pytest.raises(ValueError, match='invalid blend=-1'): opt.set_hyper('blend', -1)
    assert not {'nu_1', 'trust_coeff', 'k', 'beta', 'momentum_decay', 'lr_decay'} & set(optcb.chain.RANGES)
    with pytest.raises(ValueError, match='invalid nu_1=2'): optcb.QHAdam(ps, lr=0.1, nu_1=2)

def test_package_and_notebook_code_lines_fit_in_120_characters():
    "Long lines scroll in the docs and in diffs; nbdev writes `__all__` and `_modidx.py` itself"
    long = [f"{f.name}:{i}" for f in (ROOT / 'optcb').glob('*.py') if f.name != '_modidx.py'
            for i, line in enumerate(f.read_text().splitlines(), 1) if len(line) > 120 and not line.startswith('__all__')]
    import json
    for nb in (ROOT / 'nbs').glob('*.ipynb'):
        for c in json.loads(nb.read_text())['cells']:
            if c['cell_type'] == 'code':
                long += [f"{nb.name}:{c['id']}" for line in ''.join(c['source']).splitlines() if len(line) > 120]
    assert long == []

def test_code_the_docs_show_fits_in_100_characters():
    "The docs show a code cell unless it is exported with `export` or hidden (nbdev-docs' rule, tools/build_docs.py)"
    sys.path.insert(0, str(ROOT / 'tools'))
    import json, build_docs
    assert build_docs.shows_source({'exports': True}) and build_docs.shows_source({})
    assert not any(map(build_docs.shows_source, ({'export': True}, {'exporti': True}, {'hide': True}, {'echo:': 'false'})))
    long, shown = [], 0
    for nb in (ROOT / 'nbs').glob('*.ipynb'):
        for c in json.loads(nb.read_text())['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] != 'code' or not build_docs.shows_source(build_docs.directives(src)): continue
            shown += 1
            long += [f"{nb.name}:{c['id']}: {line}" for line in build_docs.strip_directives(src).splitlines() if len(line) > 100]
    assert shown > 50 and long == [], '\n'.join(long)

@slow
def test_the_readmes_example_trains_a_model_in_both_worlds():
    "The README's first example, run as written (offline data, no weights to download): fastai and a plain loop train"
    block = next(b for b in re.findall(r'```python\n(.*?)```', (ROOT / 'README.md').read_text(), re.S)
                 if 'vision_learner' in b)
    torch.manual_seed(0)
    ns = {}
    from fastai.callback.progress import ProgressCallback
    exec(compile(block.replace('learn.fit_one_cycle(3, 3e-3)', 'learn.remove_cb(ProgressCallback); learn.fit_one_cycle(3, 3e-3)'),
                 'README.md', 'exec'), ns)
    assert ns['learn'].recorder.values[-1][2] > 0.9  # validation accuracy after three epochs
    assert isinstance(ns['opt'], torch.optim.Optimizer) and ns['loss'].item() < 0.01  # y = Σx is linear: learnt

def _package_imports():
    """Each optcb module's imports of the package's modules (at the top or inside a function, where a cycle hides), and
    the private names it takes from one"""
    import ast
    root, graph, private = Path(optcb.__file__).parent, {}, []
    for f in sorted(root.glob('*.py')):
        mod = 'optcb' if f.stem == '__init__' else f'optcb.{f.stem}'
        deps = graph.setdefault(mod, set())
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import): deps |= {a.name for a in node.names if a.name.split('.')[0] == 'optcb'}
            if not isinstance(node, ast.ImportFrom): continue
            base = 'optcb' + (f'.{node.module}' if node.module else '') if node.level else node.module or ''
            if base.split('.')[0] != 'optcb': continue
            for a in node.names:
                if base == 'optcb' and (root / f'{a.name}.py').exists(): deps.add(f'optcb.{a.name}')  # from . import optim
                else:
                    deps.add(base)
                    if a.name.startswith('_'): private.append(f"{mod} takes {a.name} from {base}")
    return graph, private

def test_the_package_imports_form_no_cycle_and_take_no_private_name():
    graph, private = _package_imports()
    assert graph['optcb.optimizer'] >= {'optcb.chain', 'optcb.paths'}, "the import graph was not read"
    assert private == []
    def cycle(mod, path):
        if mod in path: return path[path.index(mod):] + [mod]
        return next((c for dep in sorted(graph.get(mod, ())) if (c := cycle(dep, path + [mod]))), None)
    assert [c for mod in graph if (c := cycle(mod, []))] == []
