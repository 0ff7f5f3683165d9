"The docs site builds offline from the notebooks; every exported function and class is documented on its page"
import importlib, inspect, json, re, subprocess, sys
from pathlib import Path
import pytest
import optcb
from _util import slow

pytestmark = slow  # builds the whole site

ROOT = Path(__file__).resolve().parent.parent

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')
    subprocess.run([sys.executable, str(ROOT / 'tools' / 'build_docs.py'), '--out', str(out)], check=True, cwd=ROOT, timeout=600)
    return out

def test_every_notebook_has_a_page_and_the_pages_link_each_other(site):
    # nbdev's rule for a page's name: the notebook's without its leading number (`03a_` too)
    names = {('index' if p.stem == 'index' else re.sub(r'^\d+[a-zA-Z0-9]*_', '', p.stem.lower()))
             for p in (ROOT / 'nbs').glob('*.ipynb')}
    assert {p.stem for p in site.glob('*.html')} == names
    for name in names:
        page = (site / f'{name}.html').read_text()
        assert all(f'href="{n}.html"' in page for n in names)  # navigation to every page
        assert not re.search(r'(src|href)="https?://[^"]*\.(js|css|woff2?|png|svg)', page)  # nothing loaded from a CDN
    assert '<math' in (site / 'tutorial.html').read_text() and 'data:image/png;base64' in (site / 'tutorial.html').read_text()

def test_every_link_between_pages_reaches_a_page(site):
    "A link in the prose to another page (`[checkpoints](checkpoints.html)`) names a page the site has"
    pages = {p.name for p in site.glob('*.html')}
    broken = sorted({(p.name, h) for p in site.glob('*.html')
                     for h in re.findall(r'href="([\w-]+\.html)(?:#[^"]*)?"', p.read_text()) if h not in pages})
    assert broken == []

def test_every_exported_function_and_class_is_documented(site):
    pages = json.loads((site / 'pages.json').read_text())
    for p in pages:
        if not p['module']: continue
        mod = importlib.import_module(p['module'])
        html = (site / f"{p['name']}.html").read_text()
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or getattr(obj, '__module__', None) != mod.__name__: continue
            assert inspect.getdoc(obj), f'{p["module"]}.{name} has no docstring'
            assert f'id="{name}"' in html, f'{p["module"]}.{name} is not documented on {p["name"]}.html'

def test_search_index_finds_api_entries(site):
    index = json.loads((site / 'search_index.js').read_text().removeprefix('const SEARCH_INDEX = ').rstrip(';'))
    assert any(e['url'] == 'optimizers.html#Adam' for e in index) and any(e['url'] == 'optimizer.html#Optimizer' for e in index)

def test_the_landing_page_carries_the_readme(site):
    "What optcb is, the two commands, the examples, the optimizer table: a site reader needs no README"
    page, readme = (site / 'index.html').read_text(), (ROOT / 'README.md').read_text()
    for heading in re.findall(r'^## (.+)$', readme, re.M):
        assert re.sub(r'`([^`]+)`', r'<code>\1</code>', heading) in page, heading
    assert all(f'<code>{name}</code>' in page for name in optcb.REGISTRY)
    assert all(f'href="{p}.html"' in page for p in ('tutorial', 'guide', 'comparison', 'benchmarks', 'paths'))

def test_the_benchmarks_page_carries_benchmarks_md(site):
    "The tables and the five figures of BENCHMARKS.md, figures inlined, on a page of the site"
    page, text = (site / 'benchmarks.html').read_text(), (ROOT / 'BENCHMARKS.md').read_text()
    for heading in re.findall(r'^## (.+)$', text, re.M):
        assert re.sub(r'`([^`]+)`', r'<code>\1</code>', heading) in page, heading
    assert page.count('src="data:image/png;base64,') == 5
    import csv
    adam = next(r for r in csv.DictReader(open(ROOT / 'bench' / 'reference' / 'compare-digits' / 'summary.csv'))
                if r['optimizer'] == 'adam')
    assert f"{float(adam['accuracy']):.4f}" in page  # the comparison's table

def test_signatures_fit_their_box(site):
    "A long signature is laid out one parameter per line, so that no API entry scrolls sideways"
    import html as H
    sigs = [H.unescape(re.sub(r'<[^>]+>', '', s)) for page in site.glob('*.html')
            for s in re.findall(r'<pre class="sig">(.*?)</pre>', page.read_text(), re.S)]
    assert len(sigs) > 100 and any(s.startswith('class Optimizer(\n') for s in sigs)
    assert [s for s in sigs if any(len(line) > 100 for line in s.splitlines())] == []

def test_each_callback_is_shown_once_its_source_being_its_entry(site):
    "An `#| exports` cell shows its code: each callback's source, docstring inside, is its entry (anchor, source link)"
    import html as H
    page = (site / 'callbacks.html').read_text()
    text = H.unescape(re.sub(r'<[^>]+>', '', page))
    names = [n for n in optcb.callbacks.__all__ if inspect.isfunction(getattr(optcb.callbacks, n))]
    assert len(names) > 40
    for name in names:
        first = inspect.getdoc(getattr(optcb.callbacks, name)).splitlines()[0]
        assert page.count(f'id="{name}"') == 1, name
        assert text.count(first) == 1, (name, text.count(first))  # not its source and an API entry repeating it
        entry = page[page.index(f'id="{name}"'):].split('</div>', 1)[0]
        assert 'class="src"' in entry and '<pre class="code">' in entry and f'class="nf">{name}<' in entry

def test_tables_sit_in_a_box_of_the_pages_width(site):
    "A wide table (the landing page's optimizers) wraps its cells, breaks long names, and scrolls only inside its box"
    css = (site / 'style.css').read_text()
    assert re.search(r'td,th\{[^}]*overflow-wrap:break-word', css) and re.search(r'\.wide\{overflow-x:auto', css)
    for page in site.glob('*.html'):
        s = page.read_text()
        assert s.count('<table') == s.count('<div class="wide"><table'), page.name
    index = (site / 'index.html').read_text()
    assert '<td>torch.<wbr>optim.<wbr>SGD<wbr>(nesterov=True) <wbr>(bit for bit)</td>' in index
