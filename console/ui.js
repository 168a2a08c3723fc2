// Small DOM helpers: elements built from data (text always set as text,
// never parsed as HTML, so a record body cannot inject markup), tables,
// forms whose errors are the API's own, and SVG line charts.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function formatBytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function formatTime(ms) {
  if (!ms) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function formatRetention(policy) {
  if (!policy) return "–";
  if (policy.age !== undefined) {
    const s = policy.age;
    if (s % 86400 === 0) return `${s / 86400} d`;
    if (s % 3600 === 0) return `${s / 3600} h`;
    return `${s} s`;
  }
  if (policy.infinite !== undefined) return "forever";
  return JSON.stringify(policy);
}

// A table: `columns` are [title, row => cell]; `rows` the data.
export function table(columns, rows, { empty = "Nothing here yet.", id } = {}) {
  if (!rows.length) return h("p", { class: "empty", id }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { id },
      h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", {}, title)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row)))))),
    ),
  );
}

// A form of text fields; `submit(values)` runs the request. An error
// answer is shown under the form as the server said it.
export function form(id, fields, label, submit) {
  const error = h("p", { class: "form-error", role: "alert" });
  const inputs = fields.map(([name, placeholder, type = "text"]) =>
    type === "textarea"
      ? h("textarea", { name, placeholder, "aria-label": placeholder, rows: 3 })
      : h("input", { name, placeholder, type, "aria-label": placeholder, autocomplete: "off" }),
  );
  const el = h(
    "form",
    {
      id,
      class: "inline-form",
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = "";
        const values = Object.fromEntries(inputs.map((i) => [i.name, i.value.trim()]));
        try {
          await submit(values);
          inputs.forEach((i) => (i.value = ""));
        } catch (err) {
          error.textContent = describe(err);
        }
      },
    },
    inputs,
    h("button", { type: "submit" }, label),
  );
  return h("div", { class: "form-block" }, el, error);
}

export function describe(err) {
  return err.code ? `${err.code}: ${err.message}` : String(err.message || err);
}

// A button that asks before it deletes.
export function deleteButton(what, run) {
  return h(
    "button",
    {
      class: "danger",
      "data-delete": what,
      onclick: async () => {
        if (!confirm(`Delete ${what}? This cannot be undone.`)) return;
        try {
          await run();
        } catch (err) {
          alert(describe(err));
        }
      },
    },
    "Delete",
  );
}

// The top of a chart's axis: 1, 2 or 5 times a power of ten, at least
// the largest value (and 1 when all are 0), so that its halves read well.
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

const COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c"];

// A line chart of `series` ({name: [[t, v], ...]}) with `unit` formatting
// the axis. Drawn as SVG scaled to its box.
export function chart(title, series, format = (v) => String(v), id) {
  const width = 600;
  const height = 190;
  // Room for the axis labels, large on narrow screens (style.css).
  const pad = { left: 100, right: 12, top: 16, bottom: 36 };
  const all = Object.values(series).flat();
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el);
    return el;
  };
  if (all.length) {
    const ts = all.map((p) => p[0]);
    const t0 = Math.min(...ts);
    const t1 = Math.max(...ts, t0 + 1);
    const max = niceMax(Math.max(...all.map((p) => p[1])));
    const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
    const y = (v) => height - pad.bottom - (v / max) * (height - pad.top - pad.bottom);
    for (const v of [0, max / 2, max]) {
      add("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" });
      add("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, format(v));
    }
    for (const t of [t0, t1]) {
      const label = new Date(t * 1000).toISOString().slice(11, 16);
      const anchor = t === t0 ? "start" : "end";
      add("text", { x: x(t), y: height - 4, "text-anchor": anchor, class: "axis" }, label);
    }
    Object.entries(series).forEach(([, points], i) => {
      const d = points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      add("polyline", { points: d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2 });
    });
  } else {
    add("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" }, "no data yet");
  }
  const legend = h(
    "div",
    { class: "legend" },
    Object.keys(series).map((name, i) =>
      h("span", {}, h("i", { style: `background:${COLORS[i % COLORS.length]}` }), name),
    ),
  );
  return h("figure", { class: "card chart-card", id }, h("figcaption", {}, title), svg, legend);
}

// A page's heading with a trail of links back up.
export function heading(trail, title, ...actions) {
  return h(
    "header",
    { class: "page-head" },
    h(
      "nav",
      { class: "trail", "aria-label": "breadcrumb" },
      trail.map(([label, href]) => [h("a", { href }, label), " / "]),
    ),
    h("div", { class: "title-row" }, h("h1", {}, title), h("div", { class: "actions" }, actions)),
  );
}

export function stat(label, value, id) {
  return h("div", { class: "stat", id }, h("span", { class: "stat-label" }, label), h("span", { class: "stat-value" }, value));
}
