// A collection (search by id, a record's versions from the events
// stream, the `/updated` feed page by page) and a consumer (its config,
// counts, lag over time, and dead letters, which it can replay).

import { api, decodeBase64 } from "./api.js";
import { h, table, form, chart, heading, stat, formatTime, describe } from "./ui.js";

const enc = encodeURIComponent;
const json = (v) => h("pre", { class: "body" }, JSON.stringify(v, null, 2));

export async function collection(root, { basin, collection }) {
  const path = `/v1/collections/${enc(collection)}`;
  const info = await api("GET", path, { basin });
  const found = h("div", { id: "record-found" });
  const feed = h("div", { id: "updated-feed" });
  let cursor = null;
  const pages = [];

  const loadFeed = async () => {
    const page = await api("GET", `${path}/updated`, { basin, query: { limit: 20, cursor } });
    feed.replaceChildren(
      table(
        [
          ["Id", (r) => r.id],
          ["Version", (r) => r.version],
          ["Updated", (r) => formatTime(r.updated_at)],
          ["State", (r) => (r.deleted ? "deleted" : "live")],
          ["Data", (r) => h("code", {}, JSON.stringify(r.data ?? null).slice(0, 160))],
        ],
        page.records,
        { id: "updated-table", empty: "No more changes." },
      ),
      h(
        "div",
        { class: "pager" },
        h("button", { disabled: !pages.length, onclick: () => { cursor = pages.pop(); loadFeed(); } }, "Previous"),
        h("button", { disabled: page.caught_up, onclick: () => { pages.push(cursor); cursor = page.cursor; loadFeed(); } }, "Next"),
        h("span", { class: "muted" }, page.caught_up ? "caught up" : ""),
      ),
    );
  };

  const search = form("find-record", [["id", "record id"]], "Find", async ({ id }) => {
    found.replaceChildren();
    let record = null;
    try {
      record = await api("GET", `${path}/records/${enc(id)}`, { basin });
    } catch (err) {
      if (err.status !== 404) throw err;
    }
    // Its versions, as the events stream tells them: read on to the
    // tail (a read stops at its first batch with a match), keeping the
    // events of exactly this id (`id_prefix` matches longer ids too).
    const versions = [];
    let seq = 0;
    for (let reads = 0; reads < 100; reads++) {
      let page;
      try {
        page = await api("GET", `${path}/events`, { basin, query: { seq_num: seq, id_prefix: id, count: 1000 } });
      } catch (err) {
        if (err.status === 416) break; // nothing at or after `seq`
        throw err;
      }
      versions.push(...(page.events || []).filter((e) => e.id === id));
      const next = page.next_seq_num;
      if (next === undefined || next <= seq || (page.tail && next >= page.tail.seq_num)) break;
      seq = next;
    }
    versions.reverse();
    found.replaceChildren(
      h("h3", {}, `Record ${id}`),
      record ? json(record) : h("p", { class: "empty" }, "No record with this id (it may have been deleted)."),
      h("h3", {}, "Versions, newest first"),
      table(
        [
          ["Seq", (e) => e.seq_num],
          ["Event", (e) => e.event],
          ["Version", (e) => e.version ?? "–"],
          ["Data", (e) => h("code", {}, JSON.stringify(e.data ?? null).slice(0, 160))],
        ],
        versions,
        { id: "versions", empty: "No events for this id." },
      ),
    );
  });

  root.replaceChildren(
    heading([["Overview", "#/"], [basin, `#/b/${enc(basin)}`]], collection),
    h("section", { class: "stats" }, stat("Events stream", info.events_stream || "–"), stat("Created", formatTime(Date.parse(info.created_at)))),
    h("h2", {}, "Find a record"),
    search,
    found,
    h("h2", {}, "Records feed (/updated)"),
    feed,
  );
  await loadFeed();
}

export async function consumer(root, { basin, consumer }) {
  const path = `/v1/consumers/${enc(consumer)}`;
  const lag = [];
  const stats = h("section", { class: "stats", id: "consumer-stats" });
  const lagChart = h("section", { id: "lag-chart-box", class: "charts" });
  const dead = h("div", { id: "dead-letters" });
  let info = await api("GET", path, { basin });

  const refresh = async () => {
    try {
      info = await api("GET", path, { basin });
    } catch (err) {
      stats.replaceChildren(h("p", { class: "form-error" }, describe(err)));
      return;
    }
    const s = info.state || {};
    // Unknown (the source is gone): no point rather than a false zero.
    if (s.lag !== null && s.lag !== undefined) lag.push([Math.floor(Date.now() / 1000), s.lag]);
    lag.splice(0, Math.max(0, lag.length - 900));
    // The server's samples (one a minute, the last hour) before this
    // page's own (every 2 s while it is open).
    const opened = lag.length ? lag[0][0] : Infinity;
    const series = [...(s.lag_history || []).filter(([t]) => t < opened), ...lag];
    stats.replaceChildren(
      stat("Lag (messages)", s.lag ?? "–", "stat-lag"),
      stat("Lag (seconds)", s.lag_seconds ?? "–"),
      stat("Pending", s.pending ?? 0, "stat-pending"),
      stat("In flight", s.in_flight ?? 0, "stat-in-flight"),
      stat("Delivered", s.delivered ?? 0),
      stat("Acked", s.acked ?? 0),
      stat("Dead-lettered", s.dead_lettered ?? 0),
    );
    lagChart.replaceChildren(chart("Lag, last hour (messages)", { lag: series }, (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1)), "lag-chart"));
  };

  const loadDead = async () => {
    const stream = info.dead_letter_stream;
    try {
      const tail = await api("GET", `/v1/streams/${enc(stream)}/records/tail`, { basin });
      const end = tail.tail.seq_num;
      const from = Math.max(0, end - 20);
      const batch = end ? await api("GET", `/v1/streams/${enc(stream)}/records`, { basin, query: { seq_num: from, count: end - from, clamp: true } }) : { records: [] };
      dead.replaceChildren(
        table(
          [
            ["Seq", (r) => r.seq_num],
            ["Dead-lettered", (r) => formatTime(r.timestamp)],
            ["Message", (r) => h("code", {}, new TextDecoder().decode(decodeBase64(r.body)).slice(0, 240))],
            ["", (r) => h("button", { "data-replay": r.seq_num, onclick: () => replay([r.seq_num]) }, "Replay")],
          ],
          [...batch.records].reverse(),
          { id: "dead-table", empty: "No dead letters." },
        ),
      );
    } catch (err) {
      // The dead-letter stream exists once something was dead-lettered.
      dead.replaceChildren(h("p", { class: "empty" }, err.status === 404 ? "No dead letters." : describe(err)));
    }
  };

  // Dead letters become pending again, with fresh attempts.
  const replayNote = h("p", { id: "replay-note", class: "muted", role: "status" });
  const replay = async (seqNums) => {
    try {
      const outcome = await api("POST", `${path}/replay`, { basin, body: { dead_letters: seqNums } });
      const parts = [];
      if (outcome.replayed.length) parts.push(`replayed ${outcome.replayed.join(", ")}`);
      if (outcome.already_pending.length) parts.push(`already pending ${outcome.already_pending.join(", ")}`);
      if (outcome.gone.length) parts.push(`gone from the source ${outcome.gone.join(", ")}`);
      replayNote.className = "muted";
      replayNote.textContent = parts.join("; ");
      refresh();
    } catch (err) {
      replayNote.className = "form-error";
      replayNote.textContent = describe(err);
    }
  };

  root.replaceChildren(
    heading([["Overview", "#/"], [basin, `#/b/${enc(basin)}`]], consumer),
    stats,
    lagChart,
    h("h2", {}, "Config"),
    json(info.config),
    h("h2", {}, "Dead letters"),
    replayNote,
    dead,
  );
  await refresh();
  await loadDead();
  const timer = setInterval(refresh, 2000);
  return () => clearInterval(timer);
}
