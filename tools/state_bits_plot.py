"""The figure of BENCHMARKS.md's "Accuracy of quantized state": one panel per optimizer, its validation loss and
accuracy per epoch (the mean over the seeds) with float32, bfloat16, 8-bit and 4-bit state, from the `optcb compare`
runs in bench/reference/state-bits-s<seed>/ (`tools/benchmarks.py --measure state_bits` makes them, then this).

    .venv/bin/python tools/state_bits_plot.py   # writes bench/reference/state-bits.png"""
import json, statistics, sys
from pathlib import Path
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt

REF = Path(__file__).resolve().parent.parent / 'bench' / 'reference'
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks import STATE_OPTS, STORES, STATE_SEEDS

def main():
    runs = [{r['optimizer']: r for r in json.loads((REF / f'state-bits-s{s}' / 'results.json').read_text())['results']}
            for s in STATE_SEEDS]
    fig, axes = plt.subplots(2, len(STATE_OPTS), figsize=(3.2 * len(STATE_OPTS), 5.5), sharex=True)
    styles = {'32': ('k', '-'), 'bf16': ('tab:blue', '--'), '8': ('tab:green', '-.'), '4': ('tab:red', ':')}
    for j, o in enumerate(STATE_OPTS):
        for st in STORES:
            epochs = [run[f'{o}@{st}']['epochs'] for run in runs]
            for i, what in enumerate(('valid_loss', 'accuracy')):
                ys = [statistics.mean(e[k][what] for e in epochs) for k in range(len(epochs[0]))]
                color, line = styles[st]
                axes[i, j].plot(range(1, len(ys) + 1), ys, line, color=color, marker='o', label=f'@{st}')
        axes[0, j].set_title(o); axes[1, j].set_xlabel('epoch')
    axes[0, 0].set_ylabel('validation loss'); axes[1, 0].set_ylabel('validation accuracy')
    axes[0, -1].legend(title='state')
    for ax in axes.flat: ax.grid(alpha=0.3); ax.set_xticks(range(1, 4))
    fig.suptitle(f'digits, fit_one_cycle(3): the mean of seeds {", ".join(map(str, STATE_SEEDS))}')
    fig.tight_layout(); fig.savefig(REF / 'state-bits.png', dpi=110)

if __name__ == '__main__': main()
