"""Build the documentation site from the notebooks, offline and without Quarto.

    python tools/build_docs.py            # from the repository root, with the project installed: writes docs/

Each notebook in nbs/ is executed (outputs, plots) and becomes one page. Cells are shown as `nbdev-docs` shows
them: an `#| export` (or `exporti`) cell's source is left out and the page documents the names it defines instead
(signature, docstring and a link to the source, as nbdev's show_doc would); an `#| exports` cell is exported and
shown, each definition's source (docstring included) being its entry, with an anchor and a source link, so that a
callback is shown once; `#| hide` cells are left out. Maths is rendered to MathML (latex2mathml), code is highlighted
with Pygments, tables wrap to the page's width, and the pages share a sidebar and a search box backed by a local
index: nothing is loaded from a CDN. `nbdev-docs` (Quarto) stays configured to write to docs/ as well.
"""
import argparse, ast, html, importlib, inspect, json, os, re, shutil
from pathlib import Path

import markdown
from latex2mathml.converter import convert as tex2mathml
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer
from fastcore.nbio import read_nb
from execnb.shell import CaptureShell

ROOT = Path(__file__).resolve().parent.parent
DIRECTIVE = re.compile(r'^\s*#\|\s*(.*)$')

def page_name(nb: Path) -> str: return "index" if nb.stem == "index" else re.sub(r"^\d+[a-zA-Z0-9]*_", "", nb.stem.lower())  # nbdev's rule

def directives(src: str) -> dict:
    out = {}
    for line in src.splitlines():
        m = DIRECTIVE.match(line)
        if m:
            k, *v = m.group(1).split(maxsplit=1)
            out[k] = v[0] if v else True
    return out

def shows_source(d: dict) -> bool:
    "Whether the page shows a cell's code, by its directives: nbdev-docs' rule (and quarto's `#| echo: false`)"
    return not {'hide', 'default_exp', 'export', 'exporti'} & set(d) and d.get('echo:') != 'false'

def strip_directives(src: str) -> str: return '\n'.join(l for l in src.splitlines() if not DIRECTIVE.match(l)).strip('\n')

# -- markdown with maths: protect code spans, turn $$…$$ and $…$ into MathML, then render
def render_md(text: str) -> str:
    keep = []
    def stash(s): keep.append(s); return f'\x00{len(keep) - 1}\x00'
    text = re.sub(r'```.*?```', lambda m: stash(m.group(0)), text, flags=re.S)
    text = re.sub(r'`[^`\n]+`', lambda m: stash(m.group(0)), text)
    text = re.sub(r'\$\$(.+?)\$\$', lambda m: stash(tex2mathml(m.group(1).strip(), display='block')), text, flags=re.S)
    text = re.sub(r'(?<![\\$])\$([^$\n]+?)\$', lambda m: stash(tex2mathml(m.group(1).strip())), text)
    text = re.sub('\x00(\\d+)\x00', lambda m: keep[int(m.group(1))] if keep[int(m.group(1))].startswith('`') else m.group(0), text)
    out = markdown.markdown(text, extensions=['tables', 'fenced_code'])
    return re.sub('\x00(\\d+)\x00', lambda m: keep[int(m.group(1))], out)

def code_html(src: str) -> str: return highlight(src, PythonLexer(), HtmlFormatter(nowrap=True))

# -- API entries for the names an exported cell defines
def defined_names(src: str) -> list[str]:
    try: tree = ast.parse(strip_directives(src))
    except SyntaxError: return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith('_')]

SOURCE = 'https://github.com/optcb/optcb/blob/main/'

def source_link(obj) -> str:
    "A link to where `obj` is defined in the repository, as nbdev's `[source]`"
    try: file, line = inspect.getsourcefile(inspect.unwrap(obj)), inspect.getsourcelines(inspect.unwrap(obj))[1]
    except (TypeError, OSError): return ''
    rel = Path(file).resolve().relative_to(ROOT) if Path(file).resolve().is_relative_to(ROOT) else None
    return f' <a class="src" href="{SOURCE}{rel.as_posix()}#L{line}">source</a>' if rel else ''

def signature(obj) -> str:
    """`obj`'s signature with its annotations as written: under `from __future__ import annotations` they are strings,
    which `inspect` shows quoted ('int'), or as ForwardRef('int') for a NamedTuple's fields"""
    sig = re.sub(r"ForwardRef\('([^']*)'\)", r"\1", str(inspect.signature(obj)))
    return re.sub(r"(: |-> )'([^']*)'", r"\1\2", sig)

def wrap_signature(head: str, sig: str, width=100) -> str:
    "`head + sig`, one parameter per line when it is wider than `width` (a signature box should not scroll)"
    if len(head) + len(sig) <= width: return head + sig
    parts, depth, quote, cur = [], 0, None, ''
    inner, ret = sig[1:sig.rindex(')')], sig[sig.rindex(')') + 1:]
    for ch in inner:
        if quote: quote = None if ch == quote else quote
        elif ch in '\'"': quote = ch
        elif ch in '([{': depth += 1
        elif ch in ')]}': depth -= 1
        elif ch == ',' and depth == 0: parts.append(cur.strip()); cur = ''; continue
        cur += ch
    parts.append(cur.strip())
    def fit(x):  # a default too long to show (a table of ranges) is elided
        if len(x) + 5 <= width or '=' not in x: return x
        name = x.partition('=')[0].rstrip()
        return f"{name}{' = ' if ':' in name else '='}…"
    return head + '(\n' + ''.join(f'    {fit(x)},\n' for x in parts if x) + ')' + ret

def entry_head(name: str, obj) -> str:
    "An entry's opening: its anchor, its name and a link to its source"
    link = source_link(obj) if obj is not None else ''
    return f'<div class="api" id="{name}"><h4><a href="#{name}">{html.escape(name)}</a>{link}</h4>'

def api_entry(mod, name: str) -> str:
    obj = getattr(mod, name, None)
    if obj is None: return ''
    try: sig = wrap_signature(f"{'class' if inspect.isclass(obj) else 'def'} {name}", signature(obj))
    except (TypeError, ValueError): sig = name
    doc = inspect.getdoc(obj) or ''
    parts = [entry_head(name, obj), f'<pre class="sig">{code_html(sig)}</pre>', f'<div class="doc">{render_md(doc)}</div>']
    if inspect.isclass(obj):
        for m, f in vars(obj).items():
            if not m.startswith('_') and callable(f) and inspect.getdoc(f):
                try: msig = wrap_signature(m, signature(f))
                except (TypeError, ValueError): msig = m
                parts.append(f'<div class="method"><pre class="sig">{code_html(msig)}</pre>{render_md(inspect.getdoc(f))}</div>')
    return '\n'.join(parts) + '</div>'

def split_definitions(code: str) -> list[tuple[str | None, str]]:
    """`code` cut before each public top-level function or class (its decorators and the comments above it go with
    it): `(name, source)` for those, `(None, source)` for what lies between"""
    try: tree = ast.parse(code)
    except SyntaxError: return [(None, code)]
    lines, out, start = code.splitlines(), [], 0
    def add(name, a, b):
        chunk = '\n'.join(lines[a:b]).strip('\n')
        if not chunk: return
        if name is None and out and out[-1][0] is None: out[-1] = (None, out[-1][1] + '\n\n' + chunk)
        else: out.append((name, chunk))
    for node in tree.body:
        public = isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith('_')
        if public:
            first = min([node.lineno] + [x.lineno for x in node.decorator_list]) - 1
            ahead = first  # comment lines directly above belong to the definition
            while ahead > start and lines[ahead - 1].lstrip().startswith('#'): ahead -= 1
            add(None, start, ahead); add(node.name, ahead, node.end_lineno); start = node.end_lineno
    add(None, start, len(lines))
    return out

def source_entry(mod, name: str, chunk: str) -> str:
    "An entry that is the definition's own source (its docstring inside), with an anchor and a link to the source"
    return entry_head(name, getattr(mod, name, None)) + f'<pre class="code">{code_html(chunk)}</pre></div>'

# -- outputs
def output_html(out) -> str:
    kind = out.get('output_type')
    if kind == 'stream': return f'<pre class="out">{html.escape("".join(out.get("text", "")))}</pre>'
    if kind == 'error': return f'<pre class="out err">{html.escape(out.get("ename", "") + ": " + out.get("evalue", ""))}</pre>'
    data = out.get('data', {})
    if 'image/png' in data:
        png = data['image/png'] if isinstance(data['image/png'], str) else ''.join(data['image/png'])
        return f'<img class="plot" src="data:image/png;base64,{png.strip()}" alt="figure">'
    if 'text/html' in data: return '<div class="out">' + ''.join(data['text/html']) + '</div>'
    if 'text/markdown' in data: return render_md(''.join(data['text/markdown']))
    if 'text/plain' in data: return f'<pre class="out">{html.escape("".join(data["text/plain"]))}</pre>'
    return ''

def build_page(nb_path: Path, execute=True):
    nb = read_nb(nb_path)
    if execute:
        cwd = os.getcwd(); os.chdir(nb_path.parent)
        try: CaptureShell(path=nb_path.parent).run_all(nb, exc_stop=True)
        finally: os.chdir(cwd)
    module = None
    for c in nb.cells:
        d = directives(c.source) if c.cell_type == 'code' else {}
        if 'default_exp' in d: module = importlib.import_module(f"optcb.{d['default_exp']}")
    title, body, sections, documented = nb_path.stem, [], [], []
    for c in nb.cells:
        if c.cell_type == 'markdown':
            src = c.source
            m = re.match(r'^#\s+(.+)$', src.strip().splitlines()[0]) if src.strip() else None
            if m and title == nb_path.stem: title = m.group(1).strip()
            for h in re.findall(r'^#{2,3}\s+(.+)$', src, flags=re.M): sections.append(h)
            body.append(render_md(src))
            continue
        d = directives(c.source)
        if 'hide' in d or 'default_exp' in d: continue
        code = strip_directives(c.source) if shows_source(d) else ''
        exported = {'export', 'exports'} & set(d) and module is not None
        if code and exported:  # an `#| exports` cell: each definition's source, docstring included, is its entry
            for name, chunk in split_definitions(code):
                if name: body.append(source_entry(module, name, chunk)); documented.append(name)
                else: body.append(f'<pre class="code">{code_html(chunk)}</pre>')
        elif code: body.append(f'<pre class="code">{code_html(code)}</pre>')
        body.extend(output_html(o) for o in c.get('outputs', []))
        if exported and not code:
            for n in defined_names(c.source):
                body.append(api_entry(module, n)); documented.append(n)
    text = re.sub(r'<[^>]+>', ' ', '\n'.join(body))
    return dict(name=page_name(nb_path), title=title, html='\n'.join(body), sections=sections, documented=documented,
                module=module.__name__ if module else None, text=re.sub(r'\s+', ' ', text))

CSS = """
body{margin:0;font:16px/1.55 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d2330;display:flex}
nav{width:250px;min-height:100vh;background:#f4f6fa;border-right:1px solid #dde2ea;padding:18px;box-sizing:border-box;position:sticky;top:0;align-self:flex-start}
nav h1{font-size:20px;margin:0 0 12px} nav a{display:block;color:#1f4f9c;text-decoration:none;padding:3px 0} nav a.cur{font-weight:700}
#q{width:100%;padding:6px;margin:6px 0 10px;box-sizing:border-box;border:1px solid #c3cad6;border-radius:4px}
#hits a{font-size:14px} main{max-width:980px;padding:24px 40px;box-sizing:border-box;flex:1}
pre{background:#f6f8fb;border:1px solid #e3e7ee;border-radius:5px;padding:10px 12px;overflow-x:auto;font-size:14px}
pre.out{background:#fff;border-left:3px solid #9fb3d1} pre.err{border-left-color:#c0392b}
table{border-collapse:collapse;width:100%;font-size:13.5px} main img{max-width:100%} th{background:#eef2f8}
td,th{border:1px solid #d5dbe5;padding:4px 6px;overflow-wrap:break-word;vertical-align:top} td code,th code{font-size:12.5px}
.wide{overflow-x:auto;margin:10px 0;background-repeat:no-repeat;background-attachment:local,local,scroll,scroll;
 background-image:linear-gradient(to right,#fff 30%,#fff0),linear-gradient(to left,#fff 30%,#fff0),
  radial-gradient(farthest-side at 0 50%,#0003,#0000),radial-gradient(farthest-side at 100% 50%,#0003,#0000);
 background-position:0 0,100% 0,0 0,100% 0;background-size:40px 100%,40px 100%,14px 100%,14px 100%}
.api{border-top:2px solid #d5dbe5;margin:18px 0;padding-top:6px} .api h4{margin:4px 0;font-family:monospace;font-size:17px}
.api h4 a{color:#1d2330;text-decoration:none} .api h4 a.src{font:13px system-ui,sans-serif;color:#1f4f9c;margin-left:10px} .method{margin-left:18px} img.plot{max-width:100%} blockquote{color:#555;border-left:3px solid #c3cad6;margin:0;padding-left:12px}
math[display=block]{margin:10px 0}
"""

SEARCH_JS = """
const box=document.getElementById('q'), hits=document.getElementById('hits');
box.addEventListener('input',()=>{const ws=box.value.toLowerCase().split(/\\s+/).filter(w=>w);hits.innerHTML='';
 if(!ws.length)return; for(const e of SEARCH_INDEX){const t=(e.title+' '+e.text).toLowerCase();
 if(ws.every(w=>t.includes(w))){const a=document.createElement('a');a.href=e.url;a.textContent=e.title;hits.appendChild(a);}}});
"""

def wrap_tables(body: str) -> str:
    """Each table in a box of the page's width: its cells wrap, also after a dot and before a parenthesis in a name
    (`torch.optim.SGD(nesterov=True)`), and a table still too wide scrolls in its box, shadowed at the edge"""
    breakable = lambda t: re.sub(r'(?<=[A-Za-z_\]])\.(?=[A-Za-z_])', '.<wbr>', t).replace('(', '<wbr>(')
    cells = lambda m: ''.join(t if t.startswith('<') else breakable(t) for t in re.split(r'(<[^>]+>)', m.group(0)))
    body = re.sub(r'<td>.*?</td>', cells, body, flags=re.S)
    return re.sub(r'</table>', '</table></div>', re.sub(r'<table\b', '<div class="wide"><table', body))

def page_html(p, pages) -> str:
    links = ''.join(f'<a href="{q["name"]}.html" class="{"cur" if q is p else ""}">{html.escape(q["title"])}</a>' for q in pages)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(p['title'])} — optcb</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="stylesheet" href="style.css"></head><body>
<nav><h1>optcb</h1><input id="q" placeholder="Search the docs…" aria-label="search"><div id="hits"></div>{links}</nav>
<main>{wrap_tables(p['html'])}</main><script src="search_index.js"></script><script src="search.js"></script></body></html>"""

def build(out: Path, execute=True) -> list[dict]:
    nbs = sorted((ROOT / 'nbs').glob('*.ipynb'), key=lambda p: (p.stem != 'index', p.stem))
    pages = [build_page(nb, execute) for nb in nbs]
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / 'style.css').write_text(CSS + HtmlFormatter().get_style_defs('pre'))
    (out / 'search.js').write_text(SEARCH_JS)
    index = []
    for p in pages:
        index.append(dict(url=f"{p['name']}.html", title=p['title'], text=p['text'][:20000]))
        for n in p['documented']: index.append(dict(url=f"{p['name']}.html#{n}", title=f"{n} ({p['title']})", text=n))
        (out / f"{p['name']}.html").write_text(page_html(p, pages))
    (out / 'search_index.js').write_text('const SEARCH_INDEX = ' + json.dumps(index) + ';')
    (out / 'pages.json').write_text(json.dumps([{k: p[k] for k in ('name', 'title', 'module', 'documented')} for p in pages], indent=1))
    return pages

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT / 'docs'))
    ap.add_argument('--no-execute', action='store_true', help='use the outputs stored in the notebooks')
    args = ap.parse_args()
    pages = build(Path(args.out), execute=not args.no_execute)
    print(f"wrote {len(pages)} pages to {args.out}: " + ', '.join(p['name'] + '.html' for p in pages))
