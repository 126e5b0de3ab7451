// Builds elements from data with textContent only: tenant data never becomes markup.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function table(headers, rows, numeric = []) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { class: numeric.includes(i) ? "num" : "" }, h)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell, i) =>
      el("td", { class: numeric.includes(i) ? "num" : "" }, cell))))));
}

export function progressBar(fraction, big = false) {
  const percent = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return el("span", { class: big ? "progress big" : "progress", role: "progressbar",
                      "aria-valuenow": percent.toFixed(0), "aria-valuemin": "0", "aria-valuemax": "100" },
    bar(percent));
}

function bar(percent) {
  // CSSOM, not a style attribute: the page's Content-Security-Policy refuses inline style attributes.
  const fill = document.createElement("div");
  fill.style.width = `${percent.toFixed(1)}%`;
  return fill;
}

export const fmt = (value, digits = 4) =>
  value === null || value === undefined ? "" : typeof value === "number" ? (Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(digits)) : String(value);
