// Sorting and filtering for the sweep report; no libraries, works from file://.
"use strict";

// Click a header of a .sortable table: sort its rows by that column (numbers by data-value), again to reverse.
function sortBy(table, column, descending) {
  const body = table.tBodies[0];
  const key = (row) => {
    const cell = row.cells[column];
    const text = cell ? (cell.dataset.value ?? cell.textContent).trim() : "";
    const number = Number.parseFloat(text);
    return Number.isNaN(number) ? text : number;
  };
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return descending ? -order : order;
  });
  rows.forEach((row) => body.appendChild(row));
}

document.querySelectorAll("table.sortable").forEach((table) => {
  const header = table.tHead ? table.tHead.rows[0] : null;
  if (!header) return;
  Array.from(header.cells).forEach((th, column) => {
    th.classList.add("sort");
    th.title = "sort by this column";
    th.addEventListener("click", () => {
      const descending = th.dataset.order !== "desc";
      Array.from(header.cells).forEach((other) => delete other.dataset.order);
      th.dataset.order = descending ? "desc" : "asc";
      sortBy(table, column, descending);
    });
  });
});

// A search box with data-filter="SELECTOR": hides the matching blocks whose data-text lacks every typed word.
document.querySelectorAll("input[data-filter]").forEach((input) => {
  input.addEventListener("input", () => {
    const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    document.querySelectorAll(input.dataset.filter).forEach((block) => {
      const text = (block.dataset.text || block.textContent).toLowerCase();
      block.hidden = !words.every((w) => text.includes(w));
    });
  });
});

// The per-image page: show or hide the caption's boxes over the image.
const boxes = document.getElementById("show-boxes");
if (boxes) {
  boxes.addEventListener("change", () => {
    document.getElementById("frame").classList.toggle("no-boxes", !boxes.checked);
  });
}
