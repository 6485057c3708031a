"""The catalogue pages' style sheet and script, served inline under a per-response nonce.

The pages load nothing from elsewhere; the Content-Security-Policy allows
only these two blocks (``script-src``/``style-src 'nonce-…'``). Without the
script the page still works: the filter box and the Show menu (which
states) are a GET form and the column headers are links that sort on the
server; with it, the table filters as you type and sorts in place.
"""

from __future__ import annotations

STYLE = """
:root { color-scheme: light dark; --line: #8884; --muted: #777; --accent: #2563eb; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; padding: 1.2rem 1.5rem;
       max-width: 110rem; }
h1 { font-size: 1.5rem; margin: 0 0 .2rem; }
header p, .muted { color: var(--muted); margin: .2rem 0 1rem; }
a { color: var(--accent); }
form.filter { display: flex; gap: .5rem; align-items: center; margin: 0 0 .8rem; }
form.filter input[type=search] { font: inherit; padding: .35rem .5rem; width: 28rem;
                                 max-width: 100%; border: 1px solid var(--line);
                                 border-radius: 4px; }
form.filter button, form.filter select { font: inherit; padding: .35rem .8rem; }
form.filter .muted { margin: 0; }
h2 { font-size: 1.1rem; margin: 0 0 .3rem; }
table#lists { width: auto; margin: 0 0 1.2rem; }
.health, .override { display: inline-block; padding: 0 .45rem; border-radius: 9px;
                     font-size: .85em; border: 1px solid var(--line); white-space: nowrap; }
.health-ok { background: #16a34a22; border-color: #16a34a88; }
.health-soon, .override { background: #ca8a0422; border-color: #ca8a0488; }
.health-expired, .health-none { background: #dc262622; border-color: #dc262688; }
p.override { display: block; border-radius: 4px; padding: .4rem .7rem; font-size: 1em;
             white-space: normal; }
[title] { text-decoration: underline dotted; cursor: help; }
dd ul { margin: 0; padding-left: 1.1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { position: sticky; top: 0; background: Canvas; white-space: nowrap; }
th a { color: inherit; text-decoration: none; }
th[aria-sort=ascending] a::after { content: " \\25B2"; }
th[aria-sort=descending] a::after { content: " \\25BC"; }
td.num { text-align: right; white-space: nowrap; }
td.dn { max-width: 18rem; overflow-wrap: anywhere; }
td.date { white-space: nowrap; }
tbody tr:hover { background: #8881; }
.state { display: inline-block; padding: 0 .45rem; border-radius: 9px; font-size: .85em;
         border: 1px solid var(--line); }
.state-available { background: #16a34a22; border-color: #16a34a88; }
.state-approved { background: #2563eb22; border-color: #2563eb88; }
.state-new { background: #ca8a0422; border-color: #ca8a0488; }
.state-refused, .state-revoked, .state-expired, .state-withdrawn {
  background: #dc262622; border-color: #dc262688; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .35rem 1.2rem; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
code { font-size: .9em; overflow-wrap: anywhere; }
"""

SCRIPT = """
"use strict";
(() => {
  const table = document.getElementById("images");
  const input = document.getElementById("filter");
  const shown = document.getElementById("shown");
  const empty = document.getElementById("empty");
  if (!table || !input || !table.tBodies.length) { return; }
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const words = (text) => text.toLowerCase().split(/\\s+/).filter(Boolean);
  const rowText = (row) => Array.from(row.cells, (c) => c.textContent).join(" ").toLowerCase();
  const filter = () => {
    const wanted = words(input.value);
    let count = 0;
    for (const row of rows) {
      const text = rowText(row);
      const match = wanted.every((w) => text.includes(w));
      row.hidden = !match;
      if (match) { count += 1; }
    }
    shown.textContent = String(count);
    empty.hidden = count !== 0;
  };
  input.addEventListener("input", filter);
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach((th, index) => {
    const a = th.querySelector("a");
    if (!a) { return; }
    a.addEventListener("click", (event) => {
      event.preventDefault();
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      headers.forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const numeric = th.dataset.type === "number";
      const key = (row) => {
        const cell = row.cells[index];
        const value = cell.dataset.key ?? cell.textContent.trim();
        return numeric ? Number(value) : value.toLowerCase();
      };
      rows.sort((x, y) => {
        const a = key(x);
        const b = key(y);
        const order = numeric ? a - b : String(a).localeCompare(String(b));
        return ascending ? order : -order;
      });
      for (const row of rows) { body.appendChild(row); }
    });
  });
  filter();
})();
"""
