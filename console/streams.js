// The overview (charts, basins), a basin (its streams, collections and
// consumers), and a stream (its records, newest first, and a live tail).

import { api, follow, decodeBase64, encodeBase64Text, seriesOf } from "./api.js";
import { h, table, form, deleteButton, chart, heading, stat, formatBytes, formatTime, formatRetention, describe } from "./ui.js";

const enc = encodeURIComponent;
const hourAgo = () => Math.floor(Date.now() / 1000) - 3600;

// Per-minute figures summed across basins, as per-second rates.
function sumSeries(answers, name) {
  const total = new Map();
  for (const answer of answers) {
    for (const [t, v] of seriesOf(answer)[name] || []) total.set(t, (total.get(t) || 0) + v / 60);
  }
  return [...total.entries()].sort((a, b) => a[0] - b[0]);
}

// The `q`-quantile of each minute's acknowledgement-latency histogram.
function latencyQuantile(answer, q) {
  const buckets = (answer.values || []).map((m) => m.accumulation);
  if (!buckets.length) return [];
  return buckets[0].values.map(([t], i) => {
    const counts = buckets.map((b) => b.values[i][1]);
    const total = counts.reduce((a, b) => a + b, 0);
    if (!total) return [t, 0];
    let seen = 0;
    for (let j = 0; j < buckets.length; j++) {
      seen += counts[j];
      if (seen >= q * total) {
        const le = Number(buckets[j].name);
        return [t, Number.isFinite(le) ? le * 1000 : 5000];
      }
    }
    return [t, 0];
  });
}

// The figures behind the overview's charts. A token without the metrics
// permissions gets the page without them; a basin that went away (the
// history remembers it for a while) is left out.
async function overviewCharts(basinNames) {
  const start = hourAgo();
  const settled = (promises) => Promise.allSettled(promises).then((all) => all.filter((r) => r.status === "fulfilled").map((r) => r.value));
  try {
    const active = await api("GET", "/v1/metrics", { query: { set: "active-basins", start } });
    const live = (active.values[0]?.label.values || []).filter((b) => basinNames.includes(b));
    const per = (set) => settled(live.map((b) => api("GET", `/v1/metrics/${enc(b)}`, { query: { set, start } })));
    const [appends, reads, latency] = await Promise.all([
      per("append-throughput"),
      per("read-throughput"),
      api("GET", "/v1/metrics", { query: { set: "ack-latency", start } }),
    ]);
    const rate = (v) => `${formatBytes(Math.round(v))}/s`;
    return h(
      "section",
      { class: "charts" },
      chart("Throughput, last hour", { appended: sumSeries(appends, "append-throughput"), read: sumSeries(reads, "read-throughput") }, rate, "throughput-chart"),
      chart("Acknowledgement latency, last hour", { p50: latencyQuantile(latency, 0.5), p99: latencyQuantile(latency, 0.99) }, (v) => `${v < 1 ? v.toFixed(2) : v < 10 ? v.toFixed(1) : Math.round(v)} ms`, "latency-chart"),
    );
  } catch (err) {
    return h("p", { class: "muted", id: "charts-unavailable" }, `No charts: ${describe(err)}`);
  }
}

// A note under a list the server cut short.
const more = (page) => (page.has_more ? h("p", { class: "muted" }, "More not shown: the first page only.") : "");

export async function overview(root) {
  const basins = await api("GET", "/v1/basins");
  const charts = await overviewCharts(basins.basins.map((b) => b.name));
  root.replaceChildren(
    heading([], "Overview"),
    charts,
    h("h2", {}, "Basins"),
    table(
      [
        ["Name", (b) => h("a", { href: `#/b/${enc(b.name)}` }, b.name)],
        ["State", (b) => b.state || "active"],
        ["", (b) => deleteButton(`basin ${b.name}`, async () => { await api("DELETE", `/v1/basins/${enc(b.name)}`); location.reload(); })],
      ],
      basins.basins,
      { id: "basins", empty: "No basins yet: create one below." },
    ),
    more(basins),
    form("create-basin", [["basin", "new basin name (8–48 chars: a-z, 0-9, -)"]], "Create basin", async ({ basin }) => {
      await api("POST", "/v1/basins", { body: { basin } });
      location.hash = `#/b/${enc(basin)}`;
    }),
  );
}

export async function basin(root, { basin }) {
  const [streams, collections, consumers] = await Promise.all([
    api("GET", "/v1/streams", { basin }),
    api("GET", "/v1/collections", { basin }),
    api("GET", "/v1/consumers", { basin }),
  ]);
  // Tails, sizes and rates, refreshed every 3 s while the page is open.
  const cells = new Map();
  const visible = streams.streams.filter((s) => !s.deleted_at);
  const last = new Map();
  const refresh = async () => {
    await Promise.all(
      visible.map(async (s) => {
        const c = cells.get(s.name);
        try {
          const tail = await api("GET", `/v1/streams/${enc(s.name)}/records/tail`, { basin });
          const seq = tail.tail.seq_num;
          const now = Date.now();
          const before = last.get(s.name);
          last.set(s.name, [seq, now]);
          c.tail.textContent = seq;
          if (before) c.rate.textContent = `${(((seq - before[0]) * 1000) / Math.max(1, now - before[1])).toFixed(1)} rec/s`;
        } catch (err) {
          c.tail.textContent = describe(err);
        }
        try {
          const storage = await api("GET", `/v1/metrics/${enc(basin)}/${enc(s.name)}`, { query: { set: "storage" } });
          const points = seriesOf(storage).storage || [];
          c.size.textContent = formatBytes(points.length ? points[points.length - 1][1] : 0);
        } catch (_) {
          c.size.textContent = "–"; // a token without stream-metrics
        }
      }),
    );
  };
  for (const s of visible) cells.set(s.name, { tail: h("span", {}, "…"), size: h("span", {}, "…"), rate: h("span", {}, "–"), retention: h("span", {}, "…") });
  visible.forEach(async (s) => {
    try {
      const config = await api("GET", `/v1/streams/${enc(s.name)}`, { basin });
      cells.get(s.name).retention.textContent = formatRetention(config.retention_policy);
    } catch (_) {
      cells.get(s.name).retention.textContent = "–";
    }
  });
  const timer = setInterval(refresh, 3000);
  refresh();
  const reload = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  root.replaceChildren(
    heading([["Overview", "#/"]], basin, deleteButton(`basin ${basin}`, async () => { await api("DELETE", `/v1/basins/${enc(basin)}`); location.hash = "#/"; })),
    h("h2", {}, "Streams"),
    table(
      [
        ["Name", (s) => h("a", { href: `#/b/${enc(basin)}/s/${enc(s.name)}` }, s.name)],
        ["Tail", (s) => cells.get(s.name).tail],
        ["Stored", (s) => cells.get(s.name).size],
        ["Rate", (s) => cells.get(s.name).rate],
        ["Retention", (s) => cells.get(s.name).retention],
        ["Created", (s) => formatTime(Date.parse(s.created_at))],
        ["", (s) => deleteButton(`stream ${s.name}`, async () => { await api("DELETE", `/v1/streams/${enc(s.name)}`, { basin }); reload(); })],
      ],
      visible,
      { id: "streams", empty: "No streams yet." },
    ),
    more(streams),
    form("create-stream", [["stream", "new stream name"]], "Create stream", async ({ stream }) => {
      await api("POST", "/v1/streams", { basin, body: { stream } });
      reload();
    }),
    h("h2", {}, "Collections"),
    table(
      [
        ["Name", (c) => h("a", { href: `#/b/${enc(basin)}/c/${enc(c.name)}` }, c.name)],
        ["Created", (c) => formatTime(Date.parse(c.created_at))],
        ["", (c) => deleteButton(`collection ${c.name}`, async () => { await api("DELETE", `/v1/collections/${enc(c.name)}`, { basin }); reload(); })],
      ],
      collections.collections,
      { id: "collections", empty: "No collections yet." },
    ),
    more(collections),
    form("create-collection", [["collection", "new collection name"]], "Create collection", async ({ collection }) => {
      await api("PUT", `/v1/collections/${enc(collection)}`, { basin, body: {} });
      reload();
    }),
    h("h2", {}, "Consumers"),
    table(
      [
        ["Name", (c) => h("a", { href: `#/b/${enc(basin)}/q/${enc(c.name)}` }, c.name)],
        ["Source", (c) => JSON.stringify(c.config.source)],
        ["Created", (c) => formatTime(Date.parse(c.created_at))],
        ["", (c) => deleteButton(`consumer ${c.name}`, async () => { await api("DELETE", `/v1/consumers/${enc(c.name)}`, { basin }); reload(); })],
      ],
      consumers.consumers,
      { id: "consumers", empty: "No consumers yet." },
    ),
    more(consumers),
    form(
      "create-consumer",
      [["consumer", "new consumer name"], ["config", '{"source": {"stream": "orders"}}', "textarea"]],
      "Create consumer",
      async ({ consumer, config }) => {
        let body;
        try {
          body = JSON.parse(config || "{}");
        } catch (err) {
          throw new Error(`the config is not JSON: ${err.message}`);
        }
        await api("PUT", `/v1/consumers/${enc(consumer)}`, { basin, body });
        reload();
      },
    ),
  );
  return () => clearInterval(timer);
}

// A record body as text, JSON or hex.
function renderBody(base64, mode) {
  const bytes = decodeBase64(base64);
  if (mode === "hex") {
    const shown = [...bytes.slice(0, 512)].map((b) => b.toString(16).padStart(2, "0"));
    const lines = [];
    for (let i = 0; i < shown.length; i += 16) lines.push(shown.slice(i, i + 16).join(" "));
    return h("pre", { class: "body hex" }, lines.join("\n") + (bytes.length > 512 ? "\n…" : ""));
  }
  const text = new TextDecoder().decode(bytes);
  if (mode === "json") {
    try {
      return h("pre", { class: "body" }, JSON.stringify(JSON.parse(text), null, 2));
    } catch (_) {
      return h("pre", { class: "body muted" }, `(not JSON) ${text}`);
    }
  }
  return h("pre", { class: "body" }, text);
}

const PAGE = 20;

export async function stream(root, { basin, stream }) {
  const path = `/v1/streams/${enc(stream)}`;
  const [config, tail] = await Promise.all([api("GET", path, { basin }), api("GET", `${path}/records/tail`, { basin })]);
  let mode = "text";
  let end = tail.tail.seq_num; // the page shows records below this
  const records = h("div", { id: "records" });
  const live = h("div", { id: "live-tail", class: "live" }, h("p", { class: "empty" }, "Waiting for appends…"));
  const liveRows = [];
  const tailStat = stat("Tail", tail.tail.seq_num, "stat-tail");
  const sizeStat = stat("Stored", "…", "stat-stored");
  const rateStat = stat("Rate", "–", "stat-rate");
  const row = (r) =>
    h("tr", { "data-seq": r.seq_num }, h("td", {}, r.seq_num), h("td", {}, formatTime(r.timestamp)), h("td", {}, (r.headers || []).length), h("td", {}, renderBody(r.body, mode)));
  const recordTable = (rows, id) =>
    rows.length
      ? h("div", { class: "table-wrap" }, h("table", { id, class: "records" }, h("thead", {}, h("tr", {}, ["Seq", "Timestamp", "Headers", "Body"].map((t) => h("th", {}, t)))), h("tbody", {}, rows.map(row))))
      : h("p", { class: "empty" }, "No records.");
  // The page of up to PAGE records ending below `end`. A read answers at
  // most 1 MiB, so when big records cut it short, read again closer to
  // `end` until the page reaches it: the newest are the ones shown.
  const loadPage = async () => {
    let from = Math.max(0, end - PAGE);
    let got = [];
    while (end > from) {
      const batch = await api("GET", `${path}/records`, { basin, query: { seq_num: from, count: end - from, clamp: true } });
      got = batch.records;
      const reached = got.length ? got[got.length - 1].seq_num + 1 : end;
      if (reached >= end || !got.length) break;
      from = Math.max(from + 1, end - got.length);
    }
    const rows = [...got].reverse();
    records.replaceChildren(
      recordTable(rows, "record-table"),
      h(
        "div",
        { class: "pager" },
        h("button", { disabled: end >= tail.tail.seq_num, onclick: () => { end = Math.min(tail.tail.seq_num, end + PAGE); loadPage(); } }, "Newer"),
        h("button", { disabled: (rows.length ? rows[rows.length - 1].seq_num : from) === 0, onclick: () => { end = rows.length ? rows[rows.length - 1].seq_num : from; loadPage(); } }, "Older"),
        h("span", { class: "muted" }, rows.length ? `seq ${rows[rows.length - 1].seq_num}–${rows[0].seq_num}` : ""),
      ),
    );
  };
  const showLive = () => live.replaceChildren(liveRows.length ? recordTable(liveRows, "live-table") : h("p", { class: "empty" }, "Waiting for appends…"));
  await loadPage();
  // Started once nothing above can throw, so the cleanup returned below
  // always covers them.
  const abort = new AbortController();
  const stopped = (why) => live.prepend(h("p", { class: "form-error", id: "live-stopped" }, `Live tail stopped: ${why}. Reload the page to follow again.`));
  follow(basin, stream, tail.tail.seq_num, (batch) => {
    liveRows.unshift(...[...batch].reverse());
    liveRows.splice(200);
    showLive();
  }, abort.signal).then(
    () => abort.signal.aborted || stopped("the server ended the session"),
    (err) => abort.signal.aborted || stopped(describe(err)),
  );
  let previous = null;
  const refresh = async () => {
    try {
      const [t, storage] = await Promise.all([api("GET", `${path}/records/tail`, { basin }), api("GET", `/v1/metrics/${enc(basin)}/${enc(stream)}`, { query: { set: "storage" } })]);
      const now = Date.now();
      tailStat.lastChild.textContent = t.tail.seq_num;
      if (previous) rateStat.lastChild.textContent = `${(((t.tail.seq_num - previous[0]) * 1000) / Math.max(1, now - previous[1])).toFixed(1)} rec/s`;
      previous = [t.tail.seq_num, now];
      tail.tail = t.tail;
      const points = seriesOf(storage).storage || [];
      sizeStat.lastChild.textContent = formatBytes(points.length ? points[points.length - 1][1] : 0);
    } catch (_) {
      // The next refresh tries again.
    }
  };
  const timer = setInterval(refresh, 2000);
  refresh();
  const modes = h(
    "select",
    { id: "body-format", "aria-label": "body format", onchange: (e) => { mode = e.target.value; loadPage(); showLive(); } },
    ["text", "json", "hex"].map((m) => h("option", { value: m }, m)),
  );
  root.replaceChildren(
    heading([["Overview", "#/"], [basin, `#/b/${enc(basin)}`]], stream),
    h(
      "section",
      { class: "stats" },
      tailStat,
      sizeStat,
      rateStat,
      stat("Retention", formatRetention(config.retention_policy)),
      stat("Storage class", config.storage_class || "–"),
    ),
    form("append-record", [["body", "record body (text)"]], "Append", async ({ body }) => {
      await api("POST", `${path}/records`, { basin, body: { records: [{ body: encodeBase64Text(body) }] } });
    }),
    h("div", { class: "title-row" }, h("h2", {}, "Live tail"), h("label", {}, "Bodies as ", modes)),
    live,
    h("h2", {}, "Records, newest first"),
    records,
  );
  return () => {
    clearInterval(timer);
    abort.abort();
  };
}
