// simsearch web page: search by an uploaded image or an indexed one, browse the index.
// Plain JavaScript, no build step. State lives in the URL: /?id=123 (neighbours of an indexed
// image), /?browse=1&page=3 (the index page by page), / (a sample to start from).
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
};

const state = {
  info: null,
  maxUpload: 20e6,
  maxK: 1000,
  mode: "sample", // "sample" | "browse" | "id" | "upload"
  result: null, // the last search response, with every hit loaded so far
  upload: null, // the File of the current upload search
  uploadUrl: null,
  request: 0, // increases with each navigation; stale responses are dropped
};

const pageSize = () => Number($("page-size").value) || 24;
const fmtInt = (n) => Number(n).toLocaleString("en-US");
const fmtSize = (n) => {
  const units = ["bytes", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return i === 0 ? `${n} bytes` : `${n.toFixed(1).replace(/\.0$/, "")} ${units[i]}`;
};

// ------------------------------------------------------------------ messages

function showMessage(text, kind = "error") {
  const m = $("message");
  m.textContent = text;
  m.dataset.kind = kind;
  m.hidden = !text;
}
const clearMessage = () => showMessage("");

function showNotice(text) {
  const n = $("notice");
  n.textContent = text;
  n.hidden = !text;
}

async function api(url, options) {
  let resp;
  try {
    resp = await fetch(url, options);
  } catch (e) {
    throw new Error("The server did not answer (is `simsearch serve` still running?)");
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    const err = new Error((body && body.error) || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return body;
}

// ------------------------------------------------------------------ index info

async function loadInfo() {
  try {
    const info = await api("/api/info");
    state.info = info;
    state.maxUpload = info.server.max_upload;
    state.maxK = info.server.max_k;
    $("index-meta").textContent =
      `${fmtInt(info.images)} images · input ${info.input} · ${info.generation}`;
    $("index-meta").title = `${info.index} (${info.corpus_root})`;
    $("drop-note").textContent =
      `or paste one with Ctrl+V · up to ${fmtSize(info.server.max_upload)} · click any result to search from it`;
  } catch (e) {
    $("index-meta").textContent = "index unavailable";
    showMessage(e.message);
  }
}

// The server switches to a newer version of the index by itself; tell the person looking.
async function watchGeneration() {
  if (document.hidden || !state.info) return;
  try {
    const h = await api("/health");
    if (h.generation !== state.info.generation) {
      const before = state.info.generation;
      await loadInfo();
      showNotice(`The index was updated (${before} → ${h.generation}, ${fmtInt(h.images)} images). ` +
        "New searches use it.");
    }
  } catch (e) { /* the next poll will tell */ }
}

// ------------------------------------------------------------------ rendering

function card(item, { rank, score, pixel } = {}) {
  const img = el("img", {
    src: item.thumb, alt: item.relpath, loading: "lazy", decoding: "async", width: 256, height: 256,
  });
  img.addEventListener("load", () => {
    if (img.naturalWidth < 100) img.classList.add("pixelated");
    img.closest(".thumb").classList.add("loaded");
  });
  img.addEventListener("error", () => img.closest(".thumb").classList.add("broken"));
  const badges = [];
  if (rank != null) badges.push(el("span", { class: "rank" }, `#${rank}`));
  if (pixel != null) {
    badges.push(el("span", { class: "copy", title: `A copy of your image: its pixels match at ${pixel.toFixed(3)}` },
      "copy"));
  }
  const link = el("a", {
    class: "thumb", href: `/?id=${item.id}`, title: `Search from ${item.relpath} (id ${item.id})`,
    dataset: { id: String(item.id) },
  }, img, ...badges);
  link.addEventListener("click", (ev) => {
    if (ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    ev.preventDefault();
    navigate(`/?id=${item.id}`);
  });
  const caption = [];
  if (score != null) {
    const pct = Math.max(0, Math.min(1, score)) * 100;
    const fill = el("span");
    fill.style.width = `${pct.toFixed(1)}%`; // CSSOM, not a style attribute: the page's CSP allows no inline styles
    caption.push(el("div", { class: "score", title: `cosine similarity ${score}` },
      el("span", { class: "score-bar" }, fill), el("span", { class: "score-num" }, score.toFixed(3))));
  }
  const parts = item.relpath.split("/");
  caption.push(el("div", { class: "name", title: item.relpath }, parts[parts.length - 1]));
  caption.push(el("div", { class: "meta" },
    el("span", { class: "dir", title: item.relpath }, parts.length > 1 ? parts.slice(0, -1).join("/") : ""),
    el("a", { class: "orig", href: item.image, target: "_blank", rel: "noopener",
      title: `Open the original file (id ${item.id})` }, `id ${item.id} ↗`)));
  return el("li", { class: "card" }, link, el("div", { class: "caption" }, ...caption));
}

function skeleton(n) {
  $("grid").replaceChildren(...Array.from({ length: Math.min(n, 24) }, () =>
    el("li", { class: "card skeleton" }, el("div", { class: "thumb" }), el("div", { class: "caption" }))));
}

function renderHits(hits, append) {
  const cards = hits.map((h) => card(h, { rank: h.rank, score: h.score, pixel: h.pixel }));
  if (append) $("grid").append(...cards);
  else $("grid").replaceChildren(...cards);
}

function setProbe(src, title, note, original) {
  const probe = $("probe");
  probe.hidden = !src;
  $("drop").classList.toggle("has-probe", Boolean(src));
  const t = $("probe-title");
  t.hidden = !title;
  t.replaceChildren();
  if (title) {
    t.append(el("span", { class: "label" }, "Searching from "), el("strong", {}, title));
    if (note) t.append(el("span", { class: "label" }, ` · ${note}`));
    if (original) {
      t.append(" ", el("a", { href: original, target: "_blank", rel: "noopener" }, "original ↗"));
    }
  }
  if (src) {
    const img = $("probe-img");
    img.classList.remove("pixelated");
    img.onload = () => { if (img.naturalWidth < 100) img.classList.add("pixelated"); };
    img.src = src;
  }
  $("drop-word").textContent = src ? "Drop another image" : "Drop an image here";
}

function setHeader(title, count) {
  $("title").textContent = title;
  $("count").textContent = count || "";
}

function pager(total, page, size) {
  const pages = Math.max(1, Math.ceil(total / size));
  const mk = () => {
    const nav = [];
    const link = (p, text, label) => {
      const a = el("a", { class: "button", href: `/?browse=1&page=${p}`, "aria-label": label }, ...text);
      a.addEventListener("click", (ev) => { ev.preventDefault(); navigate(a.getAttribute("href")); });
      return a;
    };
    const prev = () => ["← ", el("span", { class: "wide-only" }, "Previous")];
    const next = () => [el("span", { class: "wide-only" }, "Next"), " →"];
    nav.push(page > 1 ? link(page - 1, prev(), "previous page") :
      el("span", { class: "button disabled" }, ...prev()));
    const input = el("input", { type: "number", min: "1", max: String(pages), value: String(page),
      "aria-label": "page number", class: "page-input" });
    input.addEventListener("change", () => {
      const p = Math.min(pages, Math.max(1, Math.round(Number(input.value) || 1)));
      navigate(`/?browse=1&page=${p}`);
    });
    nav.push(el("span", { class: "page-of" }, "Page ", input, ` of ${fmtInt(pages)}`));
    nav.push(page < pages ? link(page + 1, next(), "next page") :
      el("span", { class: "button disabled" }, ...next()));
    return nav;
  };
  for (const id of ["pager", "pager-top"]) {
    $(id).replaceChildren(...mk());
    $(id).hidden = pages <= 1;
  }
}

function hidePager() { $("pager").hidden = true; $("pager-top").hidden = true; }

function updateMore() {
  const r = state.result;
  const more = $("more");
  more.hidden = !r || r.hits.length < r.k || r.k >= state.maxK;
  more.disabled = false;
  more.textContent = "Show more";
  $("download").hidden = !r;
  $("shuffle").hidden = true;
}

// ------------------------------------------------------------------ views

async function showSample(token) {
  state.mode = "sample";
  state.result = null;
  updateMore();
  setProbe(null);
  hidePager();
  setHeader("Start from an image in the index", "");
  const size = pageSize();
  skeleton(size);
  const seed = Math.floor(Math.random() * 1e9);
  const data = await api(`/api/images?limit=${size}&seed=${seed}`);
  if (token !== state.request) return;
  $("grid").replaceChildren(...data.images.map((it) => card(it)));
  $("count").textContent = data.total
    ? `${data.images.length} at random of ${fmtInt(data.total)} · click one to see its neighbours`
    : "the index is empty";
  $("shuffle").hidden = !data.total;
}

async function showBrowse(page, token) {
  state.mode = "browse";
  state.result = null;
  updateMore();
  setProbe(null);
  const size = pageSize();
  skeleton(size);
  const data = await api(`/api/images?offset=${(page - 1) * size}&limit=${size}`);
  if (token !== state.request) return;
  setHeader("All images", `${fmtInt(data.total)} in id order · click one to search from it`);
  $("grid").replaceChildren(...data.images.map((it) => card(it)));
  pager(data.total, page, size);
  window.scrollTo({ top: 0 });
}

async function showNeighbors(id, token, k) {
  hidePager();
  k = k || pageSize();
  const append = state.mode === "id" && state.result && state.result.id === id && k > state.result.hits.length;
  if (!append) { skeleton(k); setHeader("Searching…", ""); }
  const data = await api(`/api/neighbors/${id}?k=${k}`);
  if (token !== state.request) return;
  const first = append ? state.result.hits.length : 0;
  state.mode = "id";
  state.result = data;
  setProbe(data.thumb, data.relpath, `id ${id}`, data.image);
  setHeader("Most similar images", countText(data));
  renderHits(data.hits.slice(first), append);
  updateMore();
}

function countText(r) {
  return `${r.hits.length} nearest · ${(r.seconds * 1000).toFixed(0)} ms`;
}

// Neighbours of an uploaded file; → false when a newer navigation took over meanwhile. Throws on a
// refused upload (the caller puts back what was shown before).
async function searchUpload(file, token, k) {
  hidePager();
  k = k || pageSize();
  const append = state.mode === "upload" && state.result && state.upload === file && k > state.result.hits.length;
  if (!append) {
    const url = URL.createObjectURL(file);
    setProbe(url, file.name || "a pasted image", "uploaded, not stored");
    if (state.uploadUrl) URL.revokeObjectURL(state.uploadUrl);
    state.uploadUrl = url;
    skeleton(k);
    setHeader("Searching…", "");
  }
  const form = new FormData();
  form.append("image", file, file.name || "pasted.png");
  const data = await api(`/api/query?k=${k}`, { method: "POST", body: form });
  if (token !== state.request) return false;
  const first = append ? state.result.hits.length : 0;
  state.mode = "upload";
  state.upload = file;
  state.result = data;
  setHeader("Most similar images", countText(data));
  renderHits(data.hits.slice(first), append);
  updateMore();
  return true;
}

// ------------------------------------------------------------------ navigation

async function route(extra = {}) {
  const token = ++state.request;
  clearMessage();
  const params = new URLSearchParams(location.search);
  try {
    if (history.state && history.state.upload && state.upload) {
      await searchUpload(state.upload, token, extra.k);
    } else if (params.has("id")) {
      const id = Number(params.get("id"));
      if (!Number.isInteger(id) || id < 0) throw new Error(`"${params.get("id")}" is not an image id`);
      await showNeighbors(id, token, extra.k);
    } else if (params.has("browse")) {
      const page = Math.max(1, Math.round(Number(params.get("page")) || 1));
      await showBrowse(page, token);
    } else {
      await showSample(token);
    }
  } catch (e) {
    if (token !== state.request) return;
    if ($("grid").querySelector(".skeleton")) $("grid").replaceChildren();
    state.result = null;
    updateMore();
    if (e.status === 404 && params.has("id")) {
      setProbe(null);
      setHeader("Not found", "");
    }
    showMessage(e.message);
  }
}

function navigate(url) {
  if (url !== location.pathname + location.search || (history.state && history.state.upload)) {
    history.pushState(null, "", url);
  }
  state.result = null;
  showNotice("");
  route();
  window.scrollTo({ top: 0, behavior: "smooth" });
}

async function startUpload(file) {
  if (!file) return;
  if (file.size > state.maxUpload) {
    showMessage(`“${file.name}” is ${fmtSize(file.size)}; this server accepts images up to ` +
      `${fmtSize(state.maxUpload)}.`);
    return;
  }
  if (file.type && !file.type.startsWith("image/")) {
    showMessage(`“${file.name}” is not an image (${file.type}). Choose a JPEG, PNG, GIF, WebP, … file.`);
    return;
  }
  const token = ++state.request;
  clearMessage();
  try {
    if (await searchUpload(file, token)) {
      // one history entry for uploads: the page keeps only the latest image
      if (history.state && history.state.upload) history.replaceState({ upload: true }, "", "/");
      else history.pushState({ upload: true }, "", "/");
    }
  } catch (e) {
    if (token !== state.request) return;
    await route(); // put back what the URL shows
    showMessage(e.message);
  }
}

// ------------------------------------------------------------------ events

function setupDrop() {
  const drop = $("drop");
  let depth = 0;
  document.addEventListener("dragenter", (ev) => {
    if (![...ev.dataTransfer.types].includes("Files")) return;
    depth++;
    drop.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) drop.classList.remove("dragging");
  });
  document.addEventListener("dragover", (ev) => ev.preventDefault());
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    depth = 0;
    drop.classList.remove("dragging");
    const files = [...(ev.dataTransfer ? ev.dataTransfer.files : [])];
    if (files.length) startUpload(files[0]);
  });
  $("file").addEventListener("change", (ev) => {
    startUpload(ev.target.files[0]);
    ev.target.value = "";
  });
  document.addEventListener("paste", (ev) => {
    const item = [...(ev.clipboardData ? ev.clipboardData.items : [])].find((i) => i.kind === "file");
    if (item) startUpload(item.getAsFile());
  });
}

function setupTools() {
  $("more").addEventListener("click", async () => {
    const r = state.result;
    if (!r) return;
    const more = $("more");
    more.disabled = true;
    more.textContent = "Loading…";
    const token = ++state.request;
    const k = Math.min(state.maxK, r.hits.length + pageSize());
    try {
      if (state.mode === "upload") await searchUpload(state.upload, token, k);
      else await showNeighbors(r.id, token, k);
    } catch (e) {
      showMessage(e.message);
      updateMore();
    }
  });
  $("page-size").addEventListener("change", () => {
    try { localStorage.setItem("simsearch.pageSize", $("page-size").value); } catch (e) { /* private mode */ }
    state.result = null;
    route();
  });
  $("shuffle").addEventListener("click", () => route());
  $("download").addEventListener("click", () => {
    const r = state.result;
    if (!r) return;
    const out = { query: r.query, id: r.id, generation: r.generation, k: r.hits.length, hits: r.hits };
    const blob = new Blob([JSON.stringify(out, null, 2) + "\n"], { type: "application/json" });
    const a = el("a", { href: URL.createObjectURL(blob),
      download: `simsearch-${r.query.replace(/[^A-Za-z0-9._-]+/g, "_")}.json` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  });
  for (const a of document.querySelectorAll("a[data-nav]")) {
    a.addEventListener("click", (ev) => {
      if (ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
      ev.preventDefault();
      navigate(a.getAttribute("href"));
    });
  }
  window.addEventListener("popstate", () => { state.result = null; route(); });
}

async function main() {
  try {
    const saved = localStorage.getItem("simsearch.pageSize");
    if (saved && [...$("page-size").options].some((o) => o.value === saved)) $("page-size").value = saved;
  } catch (e) { /* no storage: the default */ }
  setupDrop();
  setupTools();
  await loadInfo();
  await route();
  setInterval(watchGeneration, 15000);
}

main();
