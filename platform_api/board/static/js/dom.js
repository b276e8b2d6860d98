// Building elements without innerHTML: every text from the API is a text node, so a
// device named "<script>" in a ledger is shown, never run.

/**
 * h("td", {class: "num", data: {kpi: "oee"}, onclick: f}, "74.8%", child, ...)
 * Attributes: class, data (dataset), title, href, hidden, style, on* (listeners);
 * others are set as attributes. Children: strings, numbers, nodes, arrays, null.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "data") for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    else if (key === "style") el.setAttribute("style", value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** A bilingual label: 中文 with the English smaller beside it. */
export function label(zh, en) {
  return h("span", { class: "label" }, zh, en ? h("small", { lang: "en" }, en) : null);
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A link inside the board (hash routes). */
export function link(href, ...children) {
  return h("a", { href }, ...children);
}
