// Heartbeat's dashboard: plain JavaScript over the public API, no build step.
"use strict";

const REFRESH_MS = 3000;
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
  route();
});
document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem("heartbeat-token");
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

async function overview() {
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
  const cards = el("div", { class: "cards" }, software.map(softwareCard));
  const grid = el("div", { class: "grid", "data-testid": "images" }, images.map(imageTile));
  view.replaceChildren(
    el("h2", {}, "Software"), software.length ? cards : el("p", {}, "No software registered yet."),
    el("h2", {}, imageFilter ? "Newest images matching the filter" : "Newest images"), filterForm,
    images.length ? grid : el("p", {}, imageFilter ? "No image matches." : "No images yet."),
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
      item.paused ? el("span", { class: "badge failed", "data-testid": "paused" }, "paused") : ""),
    progressBar(counts),
    el("div", { class: "counts" }, Object.keys(counts).filter((status) => status !== "outdated").map((status) =>
      el("span", {}, el("span", { class: `dot ${status}` }), ` ${status} `, el("b", { "data-testid": `count-${status}` }, counts[status])))),
    el("p", { class: "muted", "data-testid": "version" }, `version ${item.version}`,
      counts.outdated ? `, ${counts.outdated} done with an older version` : ""),
    el("p", { class: "muted", "data-testid": "throughput" }, throughput(item)),
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

async function softwarePage(name) {
  const [item, { jobs }] = await Promise.all([
    api("GET", `/v1/software/${name}`),
    api("GET", `/v1/software/${name}/jobs?status=failed&limit=200`),
  ]);
  view.replaceChildren(
    backLink(), el("h2", {}, `${name}: failed jobs`), softwareCard(item),
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

async function imagePage(id) {
  const image = await api("GET", `/v1/images/${id}`);
  const [{ url }, ...results] = await Promise.all([
    api("GET", `/v1/images/${id}/url`),
    ...Object.keys(image.jobs).map((name) => api("GET", `/v1/software/${name}/jobs/${id}`).then((job) => [name, job])),
  ]);
  // Boxes are in the upright picture (after its EXIF orientation), as the browser shows it and as width and height are.
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${image.width} ${image.height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  for (const [name, job] of results) {
    for (const box of boxesIn(job.info)) {
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
    el("pre", { "data-testid": "result-info" }, job.info === null ? (job.error || "no result yet") : readable(job.info))));
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

async function route() {
  clearTimeout(timer);
  const [, page, arg] = (location.hash || "#/").split("/");
  const status = document.getElementById("status");
  if (shown !== location.hash) {
    shown = location.hash;
    view.setAttribute("aria-busy", "true");
    view.replaceChildren(el("p", { class: "muted loading", "data-testid": "loading" }, "Loading…"));
  }
  try {
    if (page === "image") await imagePage(decodeURIComponent(arg));
    else if (page === "software") await softwarePage(decodeURIComponent(arg));
    else await overview();
    showLogin(false);
    view.setAttribute("aria-busy", "false");
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    if (page !== "image") timer = setTimeout(refresh, REFRESH_MS);
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
      timer = setTimeout(route, REFRESH_MS);
    }
  }
}

// Not while someone types a filter: a new page would take the text box from under their fingers.
function refresh() {
  if (document.activeElement === filterInput) timer = setTimeout(refresh, REFRESH_MS);
  else route();
}

window.addEventListener("hashchange", route);
route();
