/* Sortable tables for the mimic leaderboard. Loaded as an external file: the pages' CSP forbids inline script.
   A cell sorts by its data-sort attribute when present (the raw number behind "0.12 [0.05, 0.20]"),
   else by its text; numbers sort numerically and before text, empty cells last. */
(function () {
  "use strict";

  function sortKey(cell) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (raw === "") { return { rank: 2, value: "" }; }
    var number = Number(raw);
    if (!isNaN(number) && isFinite(number)) { return { rank: 0, value: number }; }
    return { rank: 1, value: raw.toLowerCase() };
  }

  function compare(a, b) {
    if (a.rank !== b.rank) { return a.rank - b.rank; }
    if (a.value < b.value) { return -1; }
    if (a.value > b.value) { return 1; }
    return 0;
  }

  function sortTable(table, index, header) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    rows.sort(function (r1, r2) {
      var a = sortKey(r1.cells[index]);
      var b = sortKey(r2.cells[index]);
      if (a.rank === 2 || b.rank === 2) { return a.rank - b.rank; }  /* empty cells stay last either way */
      return ascending ? compare(a, b) : compare(b, a);
    });
    Array.prototype.forEach.call(header.parentNode.cells, function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    rows.forEach(function (row) { body.appendChild(row); });
  }

  function init() {
    var tables = document.querySelectorAll("table.sortable");
    Array.prototype.forEach.call(tables, function (table) {
      if (!table.tHead || !table.tBodies.length) { return; }
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
        header.classList.add("sort-header");
        header.setAttribute("tabindex", "0");
        header.setAttribute("title", "sort by this column");
        header.addEventListener("click", function () { sortTable(table, index, header); });
        header.addEventListener("keydown", function (event) {
          if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortTable(table, index, header); }
        });
      });
    });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
}());
