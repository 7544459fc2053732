// Heartbeat's dashboard: plain JavaScript over the public API, no build step.
"use strict";

// The page follows the server's event stream: a software's counts at most twice a second after one
// of its events, the rest of the page (thumbnails, failed jobs) at most every three seconds. Without
// the stream (it cannot be opened) the page is drawn again every half minute.
const COUNTS_MS = 500;
const PAGE_MS = 3000;
const FALLBACK_MS = 30000;
const QUIET_MS = 45000; // the server writes a line at least every 15 s: silence this long is a dead connection
const FAILED_SHOWN = 20; // per software on the overview; the software's page lists up to 200
const view = document.getElementById("view");
let timer = null;

// --- the API, with the token kept in this tab's session storage ------------------------------

function token() { return sessionStorage.getItem("heartbeat-token"); }

class Unauthorized extends Error {}

async function api(method, path, body) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) {
    let description = response.statusText;
    try { description = (await response.json()).description || description; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status}: ${description}`);
  }
  return response.status === 204 ? null : response.json();
}

function showLogin(show) {
  document.getElementById("login").hidden = !show;
  document.getElementById("logout").hidden = show || !token();
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("heartbeat-token", document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
  restartEvents();
  route();
});
document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem("heartbeat-token");
  restartEvents();
  route();
});

// --- small DOM helpers -----------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "onclick") node.addEventListener("click", value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function when(seconds) { return seconds ? new Date(seconds * 1000).toLocaleString() : "–"; }

function progressBar(all) {
  // The statuses are the server's, in its order: the keys of a software's counts ("outdated" is a
  // share of done, shown beside the bar, not in it).
  const { outdated, ...counts } = all;
  const total = Object.values(counts).reduce((sum, count) => sum + count, 0);
  const bar = el("div", { class: "bar", "data-testid": "progress", "data-total": total });
  for (const status of Object.keys(counts)) {
    const count = counts[status] || 0;
    if (!count) continue;
    const segment = el("span", { class: status, title: `${status}: ${count}`, "data-status": status, "data-count": count });
    segment.style.width = `${(100 * count) / total}%`; // through the CSSOM: the page's policy forbids style attributes
    bar.append(segment);
  }
  return bar;
}

function throughput(item) {
  const { window_seconds: seconds, done, failed } = item.throughput;
  const perMinute = (count) => (count / (seconds / 60)).toFixed(1);
  return `${perMinute(done)} done and ${perMinute(failed)} failed per minute over the last ${seconds / 60} minutes`;
}

// Flow control: a software's limits, as its card shows them, and whether they hold it back now (all
// the jobs it may have in flight are claimed while others wait: its claims find no room).
function limits(item) {
  const parts = [];
  if (item.max_in_flight != null) parts.push(`at most ${item.max_in_flight} in flight`);
  for (const [key, count] of Object.entries(item.rate || {})) parts.push(`${count} ${key.replace("_", " ")}`);
  const now = `${item.in_flight ?? 0} in flight now`;
  return parts.length ? `${parts.join(", ")}; ${now}` : `no limits; ${now}`;
}

function heldBack(item) {
  return item.max_in_flight != null && (item.in_flight ?? 0) >= item.max_in_flight && item.counts.pending > 0;
}

// --- the overview: software cards, newest images --------------------------------------------

// The filter over the thumbnail grid takes the API's `where` expression; it is made once, so that
// a refresh keeps what is typed in it.
let imageFilter = "";
const filterInput = el("input", { type: "search", "data-testid": "filter", "aria-label": "filter the images",
  placeholder: "where: face_detection.status = 'done' and origin = 'cam_1'" });
const filterError = el("p", { class: "error", "data-testid": "filter-error" });
const filterForm = el("form", { class: "filter" }, filterInput, el("button", { type: "submit" }, "Filter"), filterError);
filterForm.addEventListener("submit", (event) => {
  event.preventDefault();
  imageFilter = filterInput.value.trim();
  route();
});

// Draws overlap (a click, the event stream and a retry each start one) and their answers may come back
// in any order: nothing is drawn from answers read before those on screen, or a pause clicked while a
// refresh was on its way would show the software running again. Each draw takes a ticket as it starts
// reading. A page read before a card drawn alone since is still drawn (it may answer a filter just
// submitted), keeping that newer card.
let drawsStarted = 0;
let pageDrawnFrom = 0;
const cardsDrawnFrom = new Map(); // a card drawn again alone since the page was: its ticket

// Whether a page read from `ticket` is newer than the page on screen; it then is on screen, with the
// cards `card` gives.
function newestPage(ticket) {
  if (ticket < pageDrawnFrom) return false;
  pageDrawnFrom = ticket;
  for (const [name, drawn] of cardsDrawnFrom) if (drawn < ticket) cardsDrawnFrom.delete(name);
  return true;
}

// The card of a page read from `ticket`: the one on screen when it was drawn from a newer answer.
function card(item, ticket) {
  const newer = (cardsDrawnFrom.get(item.name) ?? 0) > ticket;
  return (newer && document.querySelector(`[data-testid="software-${item.name}"]`)) || softwareCard(item);
}

function newestCard(name, ticket) {
  if (ticket < pageDrawnFrom || ticket < (cardsDrawnFrom.get(name) ?? 0)) return false;
  cardsDrawnFrom.set(name, ticket);
  return true;
}

async function overview(ticket) {
  const where = imageFilter ? `&where=${encodeURIComponent(imageFilter)}` : "";
  let problem = "";
  const [{ software }, { images }] = await Promise.all([
    api("GET", "/v1/software"),
    api("GET", `/v1/images?order=newest&limit=24&include=jobs,thumbnail${where}`).catch((error) => {
      if (error instanceof Unauthorized) throw error;
      problem = error.message; // a bad expression: 400 with the column of the fault
      return { images: [] };
    }),
  ]);
  filterError.textContent = problem;
  const failing = software.filter((item) => item.counts.failed > 0);
  const failures = await Promise.all(failing.map((item) =>
    api("GET", `/v1/software/${item.name}/jobs?status=failed&limit=${FAILED_SHOWN}`).then(({ jobs }) => [item.name, jobs])));
  if (!newestPage(ticket)) return; // a newer page is on screen
  const cards = el("div", { class: "cards" }, software.map((item) => card(item, ticket)));
  const grid = el("div", { class: "grid", "data-testid": "images" }, images.map(imageTile));
  view.replaceChildren(
    el("h2", {}, "Software"), software.length ? cards : el("p", {}, "No software registered yet."),
    el("h2", {}, imageFilter ? "Newest images matching the filter" : "Newest images"), filterForm,
    // A refused filter matched nothing: its error (above) says why, not "No image matches."
    problem ? "" : images.length ? grid : el("p", {}, imageFilter ? "No image matches." : "No images yet."),
    el("h2", {}, "Failed jobs"), failures.length ? failedTable(failures) : el("p", {}, "No failed jobs."),
  );
}

function failedTable(failures) {
  const rows = failures.flatMap(([name, jobs]) => jobs.map((job) => el("tr", { "data-testid": "failed-job" },
    el("td", {}, el("a", { href: `#/software/${name}` }, name)),
    el("td", {}, el("a", { href: `#/image/${job.image_id}` }, job.image_id)),
    el("td", {}, job.attempts), el("td", {}, when(job.finished_at)),
    el("td", { class: "error" }, el("pre", {}, job.error || "")))));
  return el("table", {}, el("tr", {}, ["software", "image", "attempts", "failed at", "error"].map((title) => el("th", {}, title))), rows);
}

function softwareCard(item) {
  const counts = item.counts;
  const action = (label, path, body, testid) => el("button", { "data-testid": testid, onclick: async () => {
    try { await api("POST", path, body); } catch (error) { alert(error.message); }
    route();
  } }, label);
  return el("section", { class: "card", "data-testid": `software-${item.name}` },
    el("h3", {}, el("a", { href: `#/software/${item.name}` }, item.name),
      el("span", { class: "badges" },
        heldBack(item) ? el("span", { class: "badge held", "data-testid": "held-back",
          title: `all ${item.max_in_flight} jobs it may have in flight are claimed; the others wait for room` },
        "held back by its limit") : "",
        item.paused ? el("span", { class: "badge failed", "data-testid": "paused" }, "paused") : "")),
    progressBar(counts),
    el("div", { class: "counts" }, Object.keys(counts).filter((status) => status !== "outdated").map((status) =>
      el("span", {}, el("span", { class: `dot ${status}` }), ` ${status} `, el("b", { "data-testid": `count-${status}` }, counts[status])))),
    el("p", { class: "muted", "data-testid": "version" }, `version ${item.version}`,
      counts.outdated ? `, ${counts.outdated} done with an older version` : ""),
    el("p", { class: "muted", "data-testid": "throughput" }, throughput(item)),
    el("p", { class: "muted", "data-testid": "limits" }, limits(item)),
    el("div", { class: "actions" },
      item.paused
        ? action("Resume", `/v1/software/${item.name}/resume`, undefined, "resume")
        : action("Pause", `/v1/software/${item.name}/pause`, undefined, "pause"),
      action("Requeue failed", `/v1/software/${item.name}/requeue`, { status: "failed" }, "requeue-failed"),
      el("a", { href: `#/software/${item.name}`, "data-testid": "failed-link" }, `failed jobs (${counts.failed})`)),
  );
}

function imageTile(image) {
  const statuses = Object.entries(image.jobs || {});
  const jobs = statuses.map(([name, status]) => el("span", { class: `dot ${status}`, title: `${name}: ${status}` }));
  // The tooltip: what the tile stands for, in words (the dots' colours are not enough on their own).
  const tooltip = [image.filename, `${image.width}×${image.height}`, image.origin ? `from ${image.origin}` : "",
    `uploaded ${when(image.uploaded_date)}`, ...statuses.map(([name, status]) => `${name}: ${status}`)].filter(Boolean);
  return el("a", { class: "tile", href: `#/image/${image.id}`, title: tooltip.join("\n"), "data-testid": "image-tile", "data-id": image.id },
    el("img", { src: image.thumbnail_url || "", alt: image.filename, loading: "lazy" }),
    el("div", { class: "name", "data-testid": "tile-name" }, image.filename),
    el("div", { class: "jobs" }, jobs));
}

function backLink() {
  return el("a", { href: "#/", class: "back", "data-testid": "back" }, "← All software and images");
}

// --- one software: its failed jobs ----------------------------------------------------------

async function softwarePage(name, ticket) {
  const [item, { jobs }] = await Promise.all([
    api("GET", `/v1/software/${name}`),
    api("GET", `/v1/software/${name}/jobs?status=failed&limit=200`),
  ]);
  if (!newestPage(ticket)) return;
  view.replaceChildren(
    backLink(), el("h2", {}, `${name}: failed jobs`), card(item, ticket),
    jobs.length ? failedTable([[name, jobs]]) : el("p", {}, "No failed jobs."),
  );
}

// --- one image: the picture, its boxes, every software's result -----------------------------

function boxesIn(info) {
  // Any result holding {x, y, w, h} objects, at the top or in a list anywhere inside it.
  const found = [];
  const visit = (value) => {
    if (Array.isArray(value)) value.forEach(visit);
    else if (value && typeof value === "object") {
      if (["x", "y", "w", "h"].every((key) => typeof value[key] === "number")) found.push(value);
      else Object.values(value).forEach(visit);
    }
  };
  visit(info);
  return found;
}

// A result as text: a list one item a line (a box per line), anything else indented.
function readable(info) {
  if (Array.isArray(info) && info.length) return `[\n  ${info.map((item) => JSON.stringify(item)).join(",\n  ")}\n]`;
  return JSON.stringify(info, null, 1);
}

async function imagePage(id, ticket) {
  const image = await api("GET", `/v1/images/${id}`);
  const names = Object.keys(image.jobs);
  const [{ url }, { software }, ...results] = await Promise.all([
    api("GET", `/v1/images/${id}/url`),
    api("GET", "/v1/software?limit=1000"),
    ...names.map((name) => api("GET", `/v1/software/${name}/jobs/${id}`).then((job) => [name, job])),
  ]);
  // A software may keep what it found in its extra tables (face_colours keeps its boxes in `faces`).
  const tables = software.filter((item) => names.includes(item.name))
    .flatMap((item) => Object.keys(item.tables || {}).map((table) => [item.name, table]));
  const rowsBySoftware = new Map(names.map((name) => [name, []]));
  for (const [name, table, rows] of await Promise.all(tables.map(([name, table]) =>
    api("GET", `/v1/software/${name}/tables/${table}?image_id=${encodeURIComponent(id)}&limit=1000`)
      .then(({ rows }) => [name, table, rows])))) {
    if (rows.length) rowsBySoftware.get(name).push([table, rows]);
  }
  // Boxes are in the upright picture (after its EXIF orientation), as the browser shows it and as width and height are.
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${image.width} ${image.height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  for (const [name, job] of results) {
    for (const box of [...boxesIn(job.info), ...rowsBySoftware.get(name).flatMap(([, rows]) => boxesIn(rows))]) {
      const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      for (const [attribute, key] of [["x", "x"], ["y", "y"], ["width", "w"], ["height", "h"]]) rect.setAttribute(attribute, box[key]);
      rect.setAttribute("class", "box");
      rect.setAttribute("data-testid", "box");
      rect.setAttribute("data-software", name);
      svg.append(rect);
    }
  }
  const meta = ["id", "filename", "origin", "uploaded_date", "content_type", "width", "height", "orientation", "size", "sha256"].map((key) =>
    el("tr", {}, el("th", {}, key), el("td", {}, key === "uploaded_date" ? when(image[key]) : image[key] ?? "–")));
  // One block per software: its name and status on one line, what it found below, as wide as the page.
  const jobRows = results.map(([name, job]) => el("section", { class: "result", "data-testid": `result-${name}` },
    el("h3", {}, el("a", { href: `#/software/${name}` }, name), " ", el("span", { class: `badge ${job.status}`, "data-testid": "result-status" }, job.status),
      el("span", { class: "muted" }, job.version ? ` version ${job.version}` : "", job.finished_at ? `, ${when(job.finished_at)}` : "")),
    el("pre", { "data-testid": "result-info" }, job.info === null ? (job.error || "no result yet") : readable(job.info)),
    ...rowsBySoftware.get(name).map(([table, rows]) =>
      el("pre", { "data-testid": "result-rows" }, `${table} (${rows.length} rows): ${readable(rows.map(({ id: _, image_id: __, ...row }) => row))}`))));
  if (!newestPage(ticket)) return;
  view.replaceChildren(
    backLink(),
    el("h2", {}, image.filename),
    el("div", { class: "figure" }, el("img", { src: url, alt: image.filename, "data-testid": "picture" }), svg),
    el("h2", {}, "Results"), ...(jobRows.length ? jobRows : [el("p", {}, "No software registered yet.")]),
    el("h2", {}, "Metadata"), el("table", {}, meta,
      el("tr", {}, el("th", {}, "other_data"), el("td", {}, el("pre", {}, JSON.stringify(image.other_data))))),
  );
}

// --- routing and refreshing -----------------------------------------------------------------

// A page being drawn for the first time says so, rather than showing an empty page (or the last one).
let shown = null;

function currentPage() {
  const [, page, arg] = (location.hash || "#/").split("/");
  return { page, arg: arg === undefined ? undefined : decodeURIComponent(arg) };
}

async function route() {
  clearTimeout(timer);
  const { page, arg } = currentPage();
  const status = document.getElementById("status");
  if (shown !== location.hash) {
    shown = location.hash;
    view.setAttribute("aria-busy", "true");
    view.replaceChildren(el("p", { class: "muted loading", "data-testid": "loading" }, "Loading…"));
  }
  try {
    if (lastEventId === null) lastEventId = await eventsHead(); // before the page is read: see the event stream
    const ticket = ++drawsStarted;
    if (page === "image") await imagePage(arg, ticket);
    else if (page === "software") await softwarePage(arg, ticket);
    else await overview(ticket);
    showLogin(false);
    view.setAttribute("aria-busy", "false");
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    followEvents();
  } catch (error) {
    if (error instanceof Unauthorized) {
      showLogin(true);
      status.textContent = token() ? "that token was refused" : "this server needs a token";
      view.replaceChildren();
      view.setAttribute("aria-busy", "false");
      shown = null;
    } else {
      status.textContent = `error: ${error.message}`;
      view.setAttribute("aria-busy", "false");
      timer = setTimeout(route, PAGE_MS);
    }
  }
}

// At most one call of `draw` every `ms`, the first at once: a burst of events makes one.
function throttled(draw, ms) {
  let pending = null;
  let last = 0;
  return () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; last = Date.now(); draw(); }, Math.max(0, last + ms - Date.now()));
  };
}

// Not while someone types a filter: a new page would take the text box from under their fingers.
const redrawPage = throttled(function redraw() {
  if (document.activeElement === filterInput) setTimeout(redrawPage, PAGE_MS);
  else route();
}, PAGE_MS);

// The software whose counts changed ("*": every one, as an upload adds a job to each), drawn again alone.
const staleCards = new Set();
const redrawCards = throttled(async () => {
  const names = [...staleCards];
  staleCards.clear();
  const ticket = ++drawsStarted;
  try {
    const items = names.includes("*") ? (await api("GET", "/v1/software")).software
      : await Promise.all(names.map((name) => api("GET", `/v1/software/${encodeURIComponent(name)}`)));
    for (const item of items) {
      const card = document.querySelector(`[data-testid="software-${item.name}"]`);
      if (card && newestCard(item.name, ticket)) card.replaceWith(softwareCard(item));
    }
  } catch (error) {
    redrawPage(); // the whole page says what went wrong
  }
}, COUNTS_MS);

// What an event changes on the page shown: the counts of its software (or of all, for an image), and
// the page itself when it shows what the event is about.
function noted(event) {
  const { page, arg } = currentPage();
  if (page === "image") {
    if (event.image_id === arg) redrawPage();
    return;
  }
  if (page === "software" && event.software !== undefined && event.software !== arg) return;
  if (event.type === "software.created") redrawPage(); // a new card
  staleCards.add(event.software ?? "*");
  redrawCards();
  redrawPage();
}

// --- the event stream -------------------------------------------------------------------------

// Read with fetch() rather than EventSource, which cannot send the token's Authorization header; the
// messages are parsed as the Server-Sent Events format says. The page is drawn after the cursor of
// the last event so far is read (lastEventId), and every stream opens after the last event seen
// (Last-Event-ID): no event between a drawing and the stream, or between two streams, is missed.
let events = null; // the stream being followed: { controller }
let lastEventId = null;

class StreamRefused extends Error {
  constructor(status) { super(`the event stream answered ${status}`); this.status = status; }
}

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

async function eventsHead() {
  return (await api("GET", "/v1/events?after=now&limit=1")).next_cursor;
}

function restartEvents() {
  events?.controller?.abort();
  events = null;
}

function live(on) { document.getElementById("status").dataset.live = on ? "true" : "false"; }

function followEvents() {
  if (events) return;
  const mine = (events = { controller: null });
  (async () => {
    let failures = 0;
    while (events === mine) {
      try {
        const retry = await readEvents(mine);
        failures = 0;
        live(false);
        await sleep(retry); // the stream ended (its max_seconds, or the server stopped): back after its retry:
        continue;
      } catch (error) {
        live(false);
        if (events !== mine) return; // another token: another stream
        if (error instanceof Unauthorized || (error instanceof StreamRefused && [400, 410].includes(error.status))) {
          // a token asked for, or a cursor this server no longer keeps: drawn again from now on
          events = null;
          lastEventId = null;
          route();
          return;
        }
      }
      failures += 1; // cannot be opened (or went silent): tried again later, the page polled meanwhile
      await sleep(Math.min(FALLBACK_MS, PAGE_MS * 2 ** (failures - 1)));
      if (events === mine) route();
    }
  })();
}

// One stream, read to its end: resolves with the milliseconds its retry: asks to wait before the next.
async function readEvents(stream) {
  const controller = (stream.controller = new AbortController());
  const headers = { Accept: "text/event-stream" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
  let quiet = setTimeout(() => controller.abort(), QUIET_MS);
  try {
    const response = await fetch("/v1/events/stream?after=now", { headers, cache: "no-store", signal: controller.signal });
    if (response.status === 401) throw new Unauthorized();
    if (!response.ok || !response.body) throw new StreamRefused(response.status);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let message = { id: null, data: [] };
    let retry = PAGE_MS;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return retry;
      clearTimeout(quiet);
      quiet = setTimeout(() => controller.abort(), QUIET_MS);
      live(true);
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") { // the end of a message
          if (message.id !== null) lastEventId = message.id;
          if (message.data.length) noted(JSON.parse(message.data.join("\n")));
          message = { id: null, data: [] };
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") message.data.push(text);
        else if (field === "id") message.id = text;
        else if (field === "retry" && /^\d+$/.test(text)) retry = Number(text);
      }
    }
  } finally {
    clearTimeout(quiet);
  }
}

window.addEventListener("hashchange", route);
route();
