"""The repository's markdown files (README.md, BENCHMARKS.md) as pages of the docs site: the docs notebooks
`index` and `benchmarks` show them through `page`, so that a file and its page cannot drift apart.

Figures are inlined, links to a notebook or to one of these files become links to its page, and links to the repository's other files point
to the repository, so that the site needs nothing beside it."""
import base64, re
from pathlib import Path

REPO = 'https://github.com/optcb/optcb/blob/main/'
PAGES = {'README.md': 'index.html', 'BENCHMARKS.md': 'benchmarks.html'}  # the files with a page of their own
ROOT = Path(__file__).resolve().parents[1]

def _inline_png(m) -> str: return f'![{m[1]}](data:image/png;base64,{base64.b64encode((ROOT / m[2]).read_bytes()).decode()})'

def page(name: str) -> str:
    "The markdown file `name` of the repository as a page's markdown: less its title (the page has one), comments dropped"
    text = (ROOT / name).read_text().split('\n', 1)[1]
    text = re.sub(r'<!--.*?-->\n?', '', text)
    text = re.sub(r'!\[([^\]]*)\]\(([^)]+\.png)\)', _inline_png, text)
    text = re.sub(r'\]\(nbs/(?:\d+[a-zA-Z0-9]*_)?([^)/]+)\.ipynb\)', r'](\1.html)', text)
    text = re.sub(r'\]\((' + '|'.join(map(re.escape, PAGES)) + r')\)', lambda m: f']({PAGES[m[1]]})', text)
    return re.sub(r'\]\((?!https?:|data:|#|[\w-]+\.html)([^)]+)\)', lambda m: f']({REPO}{m[1]})', text)
