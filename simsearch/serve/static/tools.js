// simsearch: the whole-folder tools page (duplicates, outliers, map, reconstructions).
// Reads the JSON API (/api/dupes, /api/outliers, /api/map) and /reconstruction/{id}; changes nothing.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function tile(img, caption) {
  const a = el("a", { href: `/?id=${img.id}`, title: img.relpath || img.path || "" });
  a.append(el("img", { src: img.thumb, alt: img.relpath || "", loading: "lazy" }));
  return el("figure", { class: "tool-tile" }, a, el("figcaption", { text: caption }));
}

const tools = {
  async dupes(out, note) {
    note.textContent = "Calibrating the thresholds on copies of your images and checking pairs…";
    const d = await getJSON("/api/dupes");
    note.textContent = `${d.why}. ${d.groups.length} groups among ${d.images} images. Nothing is moved from here.`;
    for (const [i, g] of d.groups.entries()) {
      const kind = g.exact ? "identical files" : `weakest pair ${g.weakest_similarity.toFixed(4)}`;
      const row = el("div", { class: "tool-row" });
      row.append(tile(g.keep, "keep"));
      for (const m of g.others) {
        const px = m.pixel_similarity == null ? "" : ` · pixels ${m.pixel_similarity.toFixed(3)}`;
        row.append(tile(m, `${m.similarity.toFixed(4)}${px}`));
      }
      out.append(el("section", { class: "tool-group" }, el("h2", { text: `Group ${i + 1}: ${1 + g.others.length} images, ${kind}` }), row));
    }
  },
  async outliers(out, note) {
    const by = new URLSearchParams(location.search).get("by") === "knn" ? "knn" : "recon";
    note.textContent = "Scoring every image…";
    const d = await getJSON(`/api/outliers?n=40&by=${by}`);
    note.textContent = `The ${d.outliers.length} images least like the rest of ${d.images} (${d.note}).`;
    const row = el("div", { class: "tool-row" });
    for (const o of d.outliers) row.append(tile(o, `#${o.rank} · z ${o.z.toFixed(1)}`));
    out.append(row);
  },
  async map(out, note) {
    const d = await getJSON("/api/map?sample=400");
    note.textContent = `${d.images.length} images laid out by ${d.method.toUpperCase()} of their codes, one grid cell each: similar images lie close together. Click one to search from it.`;
    const cell = 44;
    const grid = el("div", { class: "tool-map" });
    grid.style.width = `${d.grid.columns * cell}px`;
    grid.style.height = `${d.grid.rows * cell}px`;
    for (const m of d.images) {
      const a = el("a", { href: `/?id=${m.id}`, title: m.relpath });
      a.style.left = `${m.col * cell}px`;
      a.style.top = `${m.row * cell}px`;
      a.append(el("img", { src: m.thumb, alt: "", loading: "lazy" }));
      grid.append(a);
    }
    out.append(el("div", { class: "tool-map-wrap" }, grid));
  },
  async reconstruct(out, note) {
    const d = await getJSON("/api/images?limit=8&seed=1");
    note.textContent = "What the autoencoder keeps of an image: each one as the model sees it, its reconstruction, and (for a denoising model) a corrupted copy with the model's output.";
    for (const img of d.images) {
      out.append(el("figure", { class: "tool-recon" }, el("img", { src: `/reconstruction/${img.id}`, alt: `reconstruction of ${img.relpath}` })));
    }
  },
};

async function main() {
  const tool = new URLSearchParams(location.search).get("tool") || "dupes";
  for (const a of document.querySelectorAll("[data-tool]")) a.classList.toggle("active", a.dataset.tool === tool);
  const names = { dupes: "Duplicates", outliers: "Outliers", map: "Map", reconstruct: "Reconstructions" };
  $("title").textContent = names[tool] || "The whole folder";
  document.title = `simsearch · ${$("title").textContent}`;
  const run = tools[tool];
  if (!run) return;
  try {
    await run($("out"), $("note"));
  } catch (e) {
    $("message").textContent = String(e.message || e);
    $("message").hidden = false;
  }
}
main();
