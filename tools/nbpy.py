"""Convert nbdev notebooks to and from a plain-text "percent" form, so they can be edited as text.

    python tools/nbpy.py to-py nbs/03_optimizer.ipynb  # writes nbs/03_optimizer.pct.py
    python tools/nbpy.py to-nb nbs/03_optimizer.pct.py # writes nbs/03_optimizer.ipynb (outputs dropped)

Cells are separated by `# %%` lines; `# %% [markdown]` starts a markdown cell whose lines are
written with a leading `# `. The notebooks in nbs/ stay the source of the package; `.pct.py`
files are scratch copies and are git-ignored.
"""
import json, sys
from pathlib import Path

def to_py(nb_path):
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for cell in nb['cells']:
        src = ''.join(cell['source'])
        if cell['cell_type'] == 'markdown':
            out.append('# %% [markdown]\n' + '\n'.join(('# ' + l) if l else '#' for l in src.split('\n')))
        else: out.append('# %%\n' + src)
    dest = Path(str(nb_path).replace('.ipynb', '.pct.py'))
    dest.write_text('\n\n'.join(out) + '\n')
    return dest

def _cells(text):
    cells, cur = [], None
    for line in text.split('\n'):
        if line.startswith('# %%'):
            if cur is not None: cells.append(cur)
            cur = ['markdown' if '[markdown]' in line else 'code', []]
        elif cur is not None: cur[1].append(line)
    if cur is not None: cells.append(cur)
    for kind, lines in cells:
        while lines and not lines[-1].strip(): lines.pop()
        if kind == 'markdown': lines = [l[2:] if l.startswith('# ') else l[1:] if l.startswith('#') else l for l in lines]
        yield kind, '\n'.join(lines)

def to_nb(py_path):
    cells = []
    for i, (kind, src) in enumerate(_cells(Path(py_path).read_text())):
        lines = src.split('\n')
        source = [l + '\n' for l in lines[:-1]] + [lines[-1]]
        cell = dict(cell_type=kind, id=f'c{i:03d}', metadata={}, source=source)
        if kind == 'code': cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    nb = dict(cells=cells, metadata=dict(kernelspec=dict(display_name='python3', language='python', name='python3')),
              nbformat=4, nbformat_minor=5)
    dest = Path(str(py_path).replace('.pct.py', '.ipynb'))
    dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + '\n')
    return dest

if __name__ == '__main__':
    cmd, *paths = sys.argv[1:]
    for p in paths: print((to_py if cmd == 'to-py' else to_nb)(p))
