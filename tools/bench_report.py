"""Turn `optcb bench --json` files into the markdown tables of BENCHMARKS.md.

    python tools/bench_report.py adam2.json [adam1.json ...] > tables.md"""
import json, sys

COLS = ['median ms', 'IQR ms', '× ref', 'first 2 steps', 'state MB', 'step alloc MB']

for path in sys.argv[1:]:
    d = json.load(open(path))
    print(f"\n### {d.get('opt', 'adam')}, {d['threads']} thread{'s' if d['threads'] > 1 else ''} (`{path.split('/')[-1]}`)\n")
    for set_name, r in d['results'].items():
        if set_name == 'end_to_end':
            print('\nEnd to end (digits default, second `fit_one_cycle` epoch):\n')
            print('| optimizer | epoch s | inside `opt.step` ms | share of epoch |\n|---|---|---|---|')
            for n, e in r.items(): print(f"| {n} | {e['epoch_s']:.2f} | {e['step_s'] * 1e3:.1f} | {e['share'] * 100:.1f}% |")
            continue
        m = r['_meta']
        print(f"**{set_name}** — {m['tensors']} tensors, {m['values'] / 1e6:.1f}M values, {m['rounds']} interleaved rounds, "
              f"graphs compiled while timing: {m['graphs_compiled_while_timing']}, reference: {m['reference']}\n")
        print('| contender | ' + ' | '.join(COLS) + ' |\n|---|' + '---|' * len(COLS))
        for n, f in r.items():
            if n == '_meta': continue
            print(f"| {n} | {f['median_ms']:.2f} | {f['q1_ms']:.2f}–{f['q3_ms']:.2f} | **{f['ratio_to_fused']:.2f}** | "
                  f"{f['first_two_steps_s']:.1f} s | {f['state_mb']:.0f} | {f['step_alloc_mb']:.1f} |")
        print()
