// The console's shell: a hash router (each page is a function that
// renders into the main element and may return a cleanup), the token
// dialog, and what every page shares (errors, a 401 asking for a token).

import { token, setToken } from "./api.js";
import { h, describe } from "./ui.js";
import { overview, basin, stream } from "./streams.js";
import { collection, consumer } from "./records.js";

const routes = [
  [/^#?\/?$/, overview, []],
  [/^#\/b\/([^/]+)$/, basin, ["basin"]],
  [/^#\/b\/([^/]+)\/s\/([^/]+)$/, stream, ["basin", "stream"]],
  [/^#\/b\/([^/]+)\/c\/([^/]+)$/, collection, ["basin", "collection"]],
  [/^#\/b\/([^/]+)\/q\/([^/]+)$/, consumer, ["basin", "consumer"]],
];

const main = document.getElementById("main");
let cleanup = null;
let rendering = 0;

async function render() {
  if (cleanup) cleanup();
  cleanup = null;
  const run = ++rendering;
  const hash = location.hash || "#/";
  const route = routes.find(([pattern]) => pattern.test(hash));
  if (!route) {
    main.replaceChildren(h("p", { class: "form-error" }, `No page at ${hash}.`), h("a", { href: "#/" }, "Back to the overview"));
    return;
  }
  const [pattern, page, names] = route;
  main.replaceChildren(h("p", { class: "muted", id: "loading" }, "Loading…"));
  // Each page renders into a view of its own, shown only if it is still
  // the page asked for when it is ready: a slow page never draws over
  // the one the user went on to.
  const view = h("div", { class: "view" });
  try {
    const values = hash.match(pattern).slice(1).map(decodeURIComponent);
    const params = Object.fromEntries(names.map((n, i) => [n, values[i]]));
    const done = await page(view, params);
    if (run !== rendering) {
      if (done) done(); // navigated away while it loaded
    } else {
      cleanup = done || null;
      main.replaceChildren(view);
    }
  } catch (err) {
    if (run !== rendering) return;
    if (err.status === 401 || err.status === 403) {
      main.replaceChildren(h("div", { class: "card notice", id: "needs-token" }, h("h2", {}, err.status === 401 ? "This server needs a token" : "This token may not see this"), h("p", {}, describe(err)), tokenForm()));
    } else {
      main.replaceChildren(h("div", { class: "card notice" }, h("h2", {}, "Something went wrong"), h("p", { class: "form-error" }, describe(err))));
    }
  }
}

// The token is entered here once and kept in this tab's session storage;
// the field is a password field and the console never shows it again.
function tokenForm() {
  const input = h("input", { type: "password", name: "token", placeholder: "access token", "aria-label": "access token", autocomplete: "off" });
  return h(
    "form",
    {
      id: "token-form",
      class: "inline-form",
      onsubmit: (event) => {
        event.preventDefault();
        setToken(input.value.trim());
        input.value = "";
        showTokenState();
        render();
      },
    },
    input,
    h("button", { type: "submit" }, "Use token"),
  );
}

// The header says whether a token is in use, and whether the server
// checks tokens at all (and whether it can write: a full disk shows).
async function showTokenState() {
  const slot = document.getElementById("token-state");
  let health = {};
  try {
    health = await (await fetch("/health")).json();
  } catch (_) {
    // The server is away: the page says so when it loads.
  }
  const warning = health.writable === false ? h("span", { class: "form-error" }, `not writable: ${health.storage_error} `) : null;
  let state;
  if (token()) {
    state = h("span", {}, "token set ", h("button", { class: "link", id: "forget-token", onclick: () => { setToken(""); showTokenState(); render(); } }, "forget"));
  } else if (health.auth === false) {
    state = h("span", { class: "muted" }, "auth off");
  } else {
    state = h("button", { class: "link", id: "enter-token", onclick: () => main.prepend(h("div", { class: "card notice" }, tokenForm())) }, "enter a token");
  }
  slot.replaceChildren(...[warning, state].filter(Boolean));
}

window.addEventListener("hashchange", render);
showTokenState();
render();
