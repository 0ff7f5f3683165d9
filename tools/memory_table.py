"""Peak memory per parameter of a training step, measured: each configuration trains a few steps in a fresh process and
reports its peak resident memory (VmHWM) above what the process held (VmRSS) before the model was built, divided by the number of
parameters. The batch is tiny (the activations are a rounding error next to 20M parameters), and glibc is told to map
every allocation over 128 KiB on its own (MALLOC_MMAP_THRESHOLD_), so freed tensors leave the resident set at once.

    .venv/bin/python tools/memory_table.py [--json F]             # ResNet-34 and a 6-layer transformer, every configuration
    .venv/bin/python tools/memory_table.py --only '8-bit' --json F  # the configurations named so, into F's other rows
    .venv/bin/python tools/memory_table.py --accuracy [--json F]  # accuracy of the precision options on the digits default

Bytes per parameter, for reference: float32 parameters 4, their gradients 4, Adam's two moments 8 (float32) or 4
(bfloat16), 2.03 (8-bit: a byte per value and a float32 scale per 256) or 1.06 (4-bit: half a byte, a scale per 128);
bfloat16 parameters 2 and gradients 2, a Kahan compensation 2."""
import json, os, subprocess, sys

CONFIGS = {
    'torch AdamW fused, float32': "torch.optim.AdamW(ps, lr=1e-3, fused=True)",
    'optcb Adam, float32': "optcb.Adam(ps, lr=1e-3)",
    'optcb Adam, float32, bfloat16 state': "optcb.Adam(ps, lr=1e-3, state_dtype=torch.bfloat16)",
    'optcb Adam, float32, gradient release': "optcb.Adam(ps, lr=1e-3, release_gradients=True)",
    'optcb Adam, bfloat16 + Kahan': "optcb.Adam(ps, lr=1e-3)",
    'optcb Adam, bfloat16 + Kahan, gradient release': "optcb.Adam(ps, lr=1e-3, release_gradients=True)",
    'optcb Adam, bfloat16, no Kahan': "optcb.Adam(ps, lr=1e-3, kahan_sum=False)",
    'optcb Adam, float32, compile=False': "optcb.Adam(ps, lr=1e-3, compile=False)",
    'optcb Adam, bfloat16 + Kahan, compile=False': "optcb.Adam(ps, lr=1e-3, compile=False)",
    'optcb Adam, bfloat16 + Kahan, gradient release, compile=False':
        "optcb.Adam(ps, lr=1e-3, compile=False, release_gradients=True)",
    'torch-optimi AdamW, bfloat16 + Kahan': "optimi.AdamW(ps, lr=1e-3, kahan_sum=True)",
    'torch-optimi AdamW, bfloat16 + Kahan, gradient release': "optimi.AdamW(ps, lr=1e-3, kahan_sum=True, gradient_release=True)",
    'optcb Adam, float32, 8-bit state': "optcb.Adam(ps, lr=1e-3, state_bits=8)",
    'optcb Adam, float32, 4-bit state': "optcb.Adam(ps, lr=1e-3, state_bits=4)",
    'optcb Adam, float32, 8-bit state, gradient release':
        "optcb.Adam(ps, lr=1e-3, state_bits=8, release_gradients=True)",
    'optcb Adam, float32, 8-bit state, compile=False': "optcb.Adam(ps, lr=1e-3, state_bits=8, compile=False)",
    'optcb Adam, float32, 4-bit state, compile=False': "optcb.Adam(ps, lr=1e-3, state_bits=4, compile=False)",
    'torchao AdamW8bit, float32': "torchao.optim.AdamW8bit(ps, lr=1e-3)",
    'torchao AdamW4bit, float32': "torchao.optim.AdamW4bit(ps, lr=1e-3)",
    'bitsandbytes AdamW8bit, float32': "bitsandbytes.optim.AdamW8bit(ps, lr=1e-3)",
}

CHILD = r'''
import sys, torch, optcb
torch.manual_seed(0); torch.set_num_threads(1)
model_name, make, bf16 = sys.argv[1], sys.argv[2], sys.argv[3] == '1'
def status(key):
    "A line of /proc/self/status in bytes: VmRSS (resident now) or VmHWM (the resident high-water mark)"
    line = next(l for l in open('/proc/self/status') if l.startswith(key + ':'))
    return int(line.split()[1]) * 1024
import optimi, torchvision
if 'torchao' in make: import torchao.optim
if 'bitsandbytes' in make: import bitsandbytes
base = status('VmRSS')  # resident before the model exists (imports done)
if bf16: torch.set_default_dtype(torch.bfloat16)  # parameters made in bfloat16: no float32 copy at any time
if model_name == 'resnet34':
    m = torchvision.models.resnet34(); x = torch.randn(2, 3, 32, 32)
else:
    layer = torch.nn.TransformerEncoderLayer(512, 8, 2048, dropout=0., batch_first=True)
    m = torch.nn.Sequential(torch.nn.TransformerEncoder(layer, 6), torch.nn.Flatten(), torch.nn.Linear(512 * 4, 10))
    x = torch.randn(1, 4, 512)
torch.set_default_dtype(torch.float32)
y, loss_fn = torch.tensor([1] * len(x)), torch.nn.functional.cross_entropy
ps = [p for p in m.parameters()]
n = sum(p.numel() for p in ps)
opt = eval(make)
if 'gradient_release=True' in make: optimi.prepare_for_gradient_release(m, opt)
for _ in range(3):
    loss = loss_fn(m(x).float(), y)
    loss.backward()
    opt.step(); opt.zero_grad()
print(n, status('VmHWM') - base)
'''

def measure(model, make, bf16):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='131072', OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, '-c', CHILD, model, make, '1' if bf16 else '0'], capture_output=True,
                         text=True, env=env, timeout=600)
    if out.returncode: raise RuntimeError(out.stderr[-2000:])
    n, peak = map(int, out.stdout.split()[-2:])
    return n, peak

ACCURACY = {  # opt_func (optcb.Adam's keywords) and whether the model and its inputs are bfloat16
    'optcb Adam, float32': ({}, False),
    'optcb Adam, float32, bfloat16 state': (dict(state_dtype='bfloat16'), False),
    'optcb Adam, float32, gradient release': (dict(release_gradients=True), False),
    'optcb Adam, bfloat16 + Kahan': ({}, True),
    'optcb Adam, bfloat16 + Kahan, gradient release': (dict(release_gradients=True), True),
    'optcb Adam, bfloat16, no Kahan': (dict(kahan_sum=False), True),
    'optcb Adam, float32, 8-bit state': (dict(state_bits=8), False),
    'optcb Adam, float32, 4-bit state': (dict(state_bits=4), False),
}

def accuracy(seeds=(42, 43, 44), only=''):
    "`optcb compare`'s default (digits, small CNN, 3 one-cycle epochs at 3e-3) per configuration: accuracy per seed"
    import functools, torch, optcb
    from fastai.callback.core import Callback
    from fastai.torch_core import set_seed
    from optcb.compare import digits_folder, make_dls, make_learner, DIGITS
    class BFloat16(Callback):
        "Inputs in bfloat16 for a bfloat16 model; predictions back in float32 for the loss and the metric"
        def before_batch(self): self.learn.xb = tuple(x.bfloat16() for x in self.xb)
        def after_pred(self): self.learn.pred = self.pred.float()
    res = {}
    for name, (kw, bf16) in ACCURACY.items():
        if only not in name: continue
        kw = {k: getattr(torch, v) if k == 'state_dtype' else v for k, v in kw.items()}
        for seed in seeds:
            set_seed(seed, reproducible=True)
            learn = make_learner(make_dls(digits_folder(), DIGITS), DIGITS, functools.partial(optcb.Adam, **kw),
                                 cbs=[BFloat16()] if bf16 else [])
            if bf16: learn.model.bfloat16()
            with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3, 3e-3)
            res.setdefault(name, []).append(float(learn.recorder.values[-1][2]))
        print(f"{name:50} accuracy {' '.join(f'{a:.4f}' for a in res[name])}", flush=True)
    return res

def main():
    out = sys.argv[sys.argv.index('--json') + 1] if '--json' in sys.argv else None
    only = sys.argv[sys.argv.index('--only') + 1] if '--only' in sys.argv else ''
    rows = json.load(open(out)) if only and out and os.path.exists(out) else {}  # --only: the other rows kept
    if '--accuracy' in sys.argv:
        rows.update(accuracy(only=only))
        if out: json.dump(rows, open(out, 'w'), indent=1)
        return rows
    for model in ('resnet34', 'transformer'):
        for name, make in CONFIGS.items():
            if only not in name: continue
            n, peak = measure(model, make, 'bfloat16' in name)
            rows.setdefault(name, {})[model] = peak / n
            print(f"{model:12} {name:55} {n / 1e6:5.1f}M params  {peak / n:5.1f} bytes/param", flush=True)
    print('\n| configuration | ResNet-34 | transformer |\n|---|---:|---:|')
    for name, r in rows.items(): print(f"| {name} | {r['resnet34']:.1f} | {r['transformer']:.1f} |")
    if out: json.dump(rows, open(out, 'w'), indent=1)

if __name__ == '__main__': main()
