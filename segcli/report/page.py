"""The HTML page around the report: inline CSS and script, escaping, number cells.

Everything is in one string; nothing is fetched.  Tables work without JavaScript; the script only
adds sorting (click a column header) and a filter box to tables of class ``sortable``.  Each
number cell carries the exact value in ``data-v`` (``repr`` of the float, empty for NaN) next to
the rounded text, so a reader can always recover the CSV's value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape

__all__ = ["cell", "esc", "fmt", "page", "table"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2329;
 margin:0 auto;max-width:1200px;padding:0 18px 60px}
h1{font-size:22px;margin:22px 0 4px}h2{font-size:18px;margin:30px 0 8px;border-bottom:1px solid #dde}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d8dce3;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f1f3f7;font-weight:600}td:first-child,th:first-child{text-align:left}
table.sortable th{cursor:pointer}table.sortable th.asc::after{content:" \\25B2"}
table.sortable th.desc::after{content:" \\25BC"}
.meta td{text-align:left;white-space:normal}.meta th{text-align:left}
.wrap{overflow-x:auto}.muted{color:#667}.gap{background:#fff4d6;border:1px solid #e8c96a;
 padding:8px 10px;margin:6px 0;display:inline-block}
.case{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start;border-top:1px solid #eee;padding:10px 0}
.case img{max-width:100%;height:auto;image-rendering:pixelated}.plots{display:flex;flex-wrap:wrap;gap:8px}
.plots svg{height:auto;max-width:100%}.finding{margin:8px 0}.finding b{display:block}
.better{color:#17803d}.worse{color:#b3261e}input.filter{margin:4px 0;padding:4px 6px;width:260px}
nav a{margin-right:12px}.pair{display:flex;gap:6px;flex:1 1 100%}.pair>div{flex:1 1 0;min-width:0}
"""

_JS = """
(function(){
  function key(td){var v=td.getAttribute('data-v');
    if(v===null){return td.textContent.trim().toLowerCase();}
    return v===''?NaN:parseFloat(v);}
  function sortBy(table,col,th){
    var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
    var asc=!th.classList.contains('asc');
    Array.prototype.forEach.call(th.parentNode.children,function(h){h.classList.remove('asc','desc');});
    th.classList.add(asc?'asc':'desc');
    rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
      var xn=(typeof x==='number'&&isNaN(x)),yn=(typeof y==='number'&&isNaN(y));
      if(xn||yn){return xn===yn?0:(xn?1:-1);}
      if(x<y){return asc?-1:1;}if(x>y){return asc?1:-1;}return 0;});
    var frag=document.createDocumentFragment();rows.forEach(function(r){frag.appendChild(r);});
    body.appendChild(frag);}
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(table){
    var head=table.tHead.rows[table.tHead.rows.length-1];
    Array.prototype.forEach.call(head.cells,function(th,i){
      th.addEventListener('click',function(){sortBy(table,i,th);});});
    if(table.hasAttribute('data-filter')){
      var box=document.createElement('input');box.type='search';box.className='filter';
      box.placeholder='filter rows (e.g. a case name)';
      box.addEventListener('input',function(){var q=box.value.toLowerCase();
        Array.prototype.forEach.call(table.tBodies[0].rows,function(r){
          r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});});
      table.parentNode.insertBefore(box,table);}
  });
})();
"""


def esc(text: object) -> str:
    """HTML-escape any value's ``str`` (quotes too: safe in attributes)."""
    return escape(str(text), quote=True)


def fmt(value: float, digits: int = 4) -> str:
    """Display text of a number: ``n/a`` for NaN, integers plain, else ``digits`` significant."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}"


def cell(value: float, digits: int = 4) -> str:
    """A ``<td>`` with the rounded text and the exact value in ``data-v``."""
    exact = "" if math.isnan(value) else repr(float(value))
    return f'<td data-v="{exact}">{fmt(value, digits)}</td>'


def table(
    header: Sequence[str],
    rows: Iterable[str],
    table_id: str = "",
    sortable: bool = False,
    filterable: bool = False,
    css: str = "",
) -> str:
    """A table; ``header`` cells are escaped here, ``rows`` are ready ``<tr>`` strings."""
    classes = " ".join(c for c in (css, "sortable" if sortable else "") if c)
    attrs = (f' id="{esc(table_id)}"' if table_id else "") + (
        f' class="{classes}"' if classes else ""
    )
    attrs += " data-filter" if filterable else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    return (
        f'<div class="wrap"><table{attrs}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def page(title: str, body: str) -> str:
    """The whole document: head with inline CSS, ``body`` (ready HTML), inline script."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="generator" content="segcli"><title>{esc(title)}</title>'
        f"<style>{_CSS}</style></head><body>{body}<script>{_JS}</script></body></html>\n"
    )
