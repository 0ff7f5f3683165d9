"""Largest relative errors reached by optcb against torch.optim and fastai over the test grids.

    .venv/bin/python tools/equality_report.py

Runs the torch cases of tests/test_torch_equality.py and tests/test_optimizers_against_references.py, and the fastai cases of
tests/test_fastai_equality.py, and prints, per optimizer and
dtype, the largest relative error over parameters and over state (max |a − b| / max |b| per tensor)."""
import sys, warnings
from collections import defaultdict
from pathlib import Path
warnings.filterwarnings('ignore')
sys.path.insert(0, str(Path(__file__).parent.parent / 'tests'))
import torch, fastai.optimizer as fo, optcb
import test_torch_equality as T, test_optimizers_against_references as M, test_fastai_equality as F
from _util import make_params, clone_params, grad_stream, run, max_errs, against_torch, STEPS

worst = defaultdict(lambda: [0., 0.])
def note(key, perr, serr): w = worst[key]; w[0], w[1] = max(w[0], perr), max(w[1], serr)
for dtype in [torch.float64, torch.float32]:
    for foreach in [True, False]:
        for name, kw, extra in T.CASES + M.CASES:
            r = against_torch(name, kw, extra, dtype, foreach=foreach)
            note(('torch.optim', name, str(dtype)), r.perr, r.serr)
        for name, kw in F.CASES:
            kw = {'lr': 0.01, **kw}
            ps = make_params(dtype); ref = clone_params(ps)
            a = getattr(optcb, name)([ps[:3], ps[3:]], foreach=foreach, **kw); b = getattr(fo, name)([ref[:3], ref[3:]], **kw)
            for o in (a, b): o.set_hyper('lr', [kw['lr'] / 2, kw['lr']])
            g = grad_stream(ps, STEPS); run(a, ps, g, STEPS); run(b, ref, g, STEPS)
            note(('fastai', name, str(dtype)), *max_errs(ps, ref, a, b))
    for kw in M.RADAM_TORCH: note(('torch.optim', 'RAdam', str(dtype)), *(lambda r: (r.perr, r.serr))(against_torch('RAdam', kw, dict(lr=5e-3), dtype)))
    for kw in M.NADAM: note(('torch.optim', 'NAdam', str(dtype)), *(lambda r: (r.perr, r.serr))(against_torch('NAdam', kw, dict(lr=1e-2), dtype)))
print(f"{'reference':12} {'optimizer':9} {'dtype':14} {'params':>9} {'state':>9}")
for (ref, name, dtype), (p, s) in sorted(worst.items()):
    print(f"{ref:12} {name:9} {dtype:14} {p:9.1e} {s:9.1e}")
