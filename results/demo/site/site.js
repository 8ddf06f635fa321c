// Sorting, the all-metrics toggle and the details panel of the leaderboard site (no dependencies).
"use strict";
const META = JSON.parse(document.getElementById("site-meta").textContent);

function sortBy(th) {
  const table = th.closest("table"), body = table.tBodies[0], i = th.cellIndex;
  const rows = Array.from(body.rows);
  const reported = rows.filter(r => r.classList.contains("reported"));  // never ranked: they stay last
  const measured = rows.filter(r => !r.classList.contains("reported"));
  const bestFirst = th.dataset.type === "text" || th.dataset.dir === "down" ? 1 : -1;
  const order = th.dataset.order ? -Number(th.dataset.order) : bestFirst;
  table.querySelectorAll("th").forEach(h => { delete h.dataset.order; h.removeAttribute("aria-sort"); });
  th.dataset.order = order;
  th.setAttribute("aria-sort", order > 0 ? "ascending" : "descending");
  const key = r => r.cells[i].dataset.v || "";
  measured.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === "" || y === "") return (x === "") - (y === "");  // empty cells last either way
    return order * (th.dataset.type === "text" ? x.localeCompare(y) : Number(x) - Number(y));
  });
  measured.concat(reported).forEach(r => body.appendChild(r));
}

function el(tag, text) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  return e;
}

function showDetails(id) {
  const m = META[id], box = document.getElementById("details-body");
  if (!m) return;
  box.replaceChildren(el("h3", m.title));
  const dl = el("dl");
  m.fields.forEach(([k, v]) => { dl.append(el("dt", k), el("dd", v)); });
  box.append(dl);
  if (m.runs && m.runs.rows.length) {
    const t = el("table"), head = el("tr");
    m.runs.columns.forEach(c => head.append(el("th", c)));
    t.append(head);
    m.runs.rows.forEach(r => { const tr = el("tr"); r.forEach(v => tr.append(el("td", String(v)))); t.append(tr); });
    box.append(el("h4", "runs"), t);
  }
  document.getElementById("details").hidden = false;
}

document.querySelectorAll("table.board th").forEach(th => th.addEventListener("click", () => sortBy(th)));
document.getElementById("all-metrics").addEventListener("change", e => {
  document.body.classList.toggle("all-metrics", e.target.checked);
  window.dispatchEvent(new Event("resize"));
});
document.addEventListener("click", e => {
  const cell = e.target.closest("td[data-meta]");
  if (cell) showDetails(cell.dataset.meta);
});
document.getElementById("details-close").addEventListener("click", () => {
  document.getElementById("details").hidden = true;
});
