// hgn-pipeline viewer: scene list, Leaflet map (L.CRS.Simple, one map unit per level-0
// pixel: latlng = [-row, col]), layer toggles, opacity, legend, click info, history.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const ORDER = ["source", "segmentation", "confidence", "change"];
  const TITLES = { source: "source image", segmentation: "classes",
                   confidence: "confidence", change: "change since last run" };
  const state = { map: null, meta: null, layers: {}, marker: null, opacity: 0.7,
                  pending: new Set() };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "style") node.style.cssText = v;
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  async function getJSON(url) {
    const resp = await fetch(url);
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error || resp.statusText);
    return body;
  }

  function num(v, digits) {
    if (v === null || v === undefined) return "-";
    return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits,
                                               minimumFractionDigits: digits });
  }

  function rgba(c) { return `rgba(${c[0]},${c[1]},${c[2]},${(c[3] / 255).toFixed(3)})`; }

  function short(s, n) { return s ? String(s).slice(0, n) : "-"; }

  // ------------------------------------------------------------------ scene list
  async function loadScenes() {
    const data = await getJSON("/api/scenes");
    $("output").textContent = data.output;
    const body = $("scenes").querySelector("tbody");
    body.replaceChildren();
    for (const s of data.scenes) {
      const size = s.height ? `${s.width} x ${s.height}` : "-";
      const row = el("tr", { "data-scene": s.scene_id },
        el("td", {}, el("a", { href: `#scene=${enc(s.scene_id)}` }, s.scene_id)),
        el("td", { class: `status-${s.status}`, title: s.error || "" }, s.status),
        el("td", {}, size), el("td", {}, s.model || "-"),
        el("td", { title: s.run_id || "" }, short(s.run_id, 16)),
        el("td", { title: s.finished || "" },
           s.finished ? s.finished.slice(5, 16).replace("T", " ") : "-"));
      row.addEventListener("click", () => { location.hash = `scene=${enc(s.scene_id)}`; });
      body.append(row);
    }
    if (!data.scenes.length) body.append(el("tr", {}, el("td", { colspan: 6 }, "no scenes")));
    return data.scenes;
  }

  async function loadNightly() {
    const h = await getJSON("/api/history");
    $("nightly").textContent = h.log.length ? h.log.join("\n") : "no nightly runs yet";
    $("nightly").dataset.loaded = "1";
  }

  // ------------------------------------------------------------------ map
  function markReady() {
    $("map").dataset.ready = state.pending.size ? "0" : "1";
  }

  function tileLayer(name, meta, z) {
    const src = name === "source";
    const minNative = src ? Math.max(meta.min_native_zoom, -meta.layers.source.max_level)
                          : meta.min_native_zoom;
    const url = `/tiles/${name}/{z}/{x}/{y}.png?scene=${enc(meta.scene_id)}` +
                `&v=${enc(meta.version)}`;
    const layer = L.tileLayer(url, {
      tileSize: meta.tile, bounds: state.bounds, noWrap: true, minNativeZoom: minNative,
      maxNativeZoom: 0, minZoom: src ? minNative : meta.min_native_zoom - 3, maxZoom: 4,
      zIndex: z, opacity: src ? 1 : state.opacity, className: `tiles-${name}`,
      keepBuffer: 1,
    });
    layer.on("loading", () => { state.pending.add(name); markReady(); });
    layer.on("load", () => { state.pending.delete(name); markReady(); });
    layer.on("remove", () => { state.pending.delete(name); markReady(); });
    return layer;
  }

  function layerControls(meta) {
    const list = $("layer-list");
    list.replaceChildren();
    ORDER.forEach((name, i) => {
      const info = meta.layers[name];
      const id = `layer-${name}`;
      const on = info.available && name !== "confidence";
      const box = el("input", { type: "checkbox", id, "data-testid": id,
                                disabled: !info.available, checked: on });
      const label = el("label", { for: id, title: info.reason || "" }, box, " ",
                       TITLES[name] + (name === "change" && info.against
                         ? ` (${info.against})` : ""),
                       info.available ? null : el("span", { class: "muted" }, " - n/a"));
      list.append(label);
      if (!info.available) return;
      const layer = tileLayer(name, meta, i + 1);
      state.layers[name] = layer;
      if (on) layer.addTo(state.map);
      box.addEventListener("change", () => {
        if (box.checked) layer.addTo(state.map); else state.map.removeLayer(layer);
      });
    });
  }

  function crsOf(meta, col, row) {
    const g = meta.georeference;
    if (!g) return null;
    const [x0, dx, rx, y0, ry, dy] = g.transform;
    return [x0 + col * dx + row * rx, y0 + col * ry + row * dy];
  }

  function showCoords(meta, latlng) {
    const col = latlng.lng, row = -latlng.lat;
    let text = `x ${num(col, 1)}, y ${num(row, 1)} px`;
    const xy = crsOf(meta, col, row);
    if (xy) {
      const geo = meta.georeference.geographic;
      text += geo ? ` | lon ${num(xy[0], 6)}, lat ${num(xy[1], 6)}`
                  : ` | ${num(xy[0], 2)}, ${num(xy[1], 2)} ${meta.georeference.units || ""}`;
    }
    $("coords").textContent = text;
  }

  async function showPoint(meta, latlng) {
    const col = latlng.lng, row = -latlng.lat;
    if (col < 0 || row < 0 || col >= meta.width || row >= meta.height) return;
    const p = await getJSON(`/api/point?scene=${enc(meta.scene_id)}&x=${col}&y=${row}`);
    const box = $("clicked");
    box.replaceChildren();
    const cls = meta.classes[p.label];
    box.append(el("div", { "data-testid": "clicked-class", "data-label": p.label,
                           "data-x": p.x, "data-y": p.y },
      el("span", { class: "swatch", style: `background:${rgba(cls ? cls.rgba : [0, 0, 0, 0])}` }),
      ` ${p.class} (label ${p.label})`));
    box.append(el("div", { class: "mono" }, `pixel x ${p.x}, y ${p.y}`));
    if (p.confidence !== undefined) {
      box.append(el("div", {}, `confidence ${num(p.confidence, 2)}`));
    }
    if (p.change) {
      const c = p.change;
      box.append(el("div", { "data-testid": "clicked-change" }, c.nodata ? "change: no data"
        : c.changed ? `changed: ${c.from} -> ${c.to}` : `unchanged (${c.to})`));
    }
    if (p.crs_xy) {
      box.append(el("div", { class: "mono" },
        `${num(p.crs_xy[0], 3)}, ${num(p.crs_xy[1], 3)} (${meta.georeference.name || "CRS"})`));
    }
    if (p.lonlat) {
      box.append(el("div", { class: "mono", "data-testid": "clicked-lonlat" },
        `lon ${num(p.lonlat[0], 6)}, lat ${num(p.lonlat[1], 6)}`));
    }
    if (state.marker) state.marker.remove();
    state.marker = L.circleMarker(latlng, { radius: 5, color: "#fff", weight: 2,
                                            fillColor: "#000", fillOpacity: 0.8 })
      .addTo(state.map);
  }

  // ------------------------------------------------------------------ side panels
  async function loadLegend(meta) {
    const lg = await getJSON(`/api/legend?scene=${enc(meta.scene_id)}`);
    const body = $("legend").querySelector("tbody");
    body.replaceChildren();
    for (const r of lg.rows) {
      body.append(el("tr", { "data-label": r.label },
        el("td", {}, el("span", { class: "swatch", style: `background:${rgba(r.rgba)}` })),
        el("td", {}, r.name),
        el("td", { class: "num" }, lg.area_unit ? num(r.area_ha, 2) : "-"),
        el("td", { class: "num" }, num(100 * r.fraction, 1))));
    }
    const kind = lg.exact ? "exact" : `estimated from pyramid level ${lg.level}`;
    let note = lg.area_unit ? `geodesic areas on the ellipsoid (${kind})`
                            : `pixel counts only: ${lg.note || "no georeference"}`;
    if (lg.coverage !== null && lg.coverage < 1) {
      note += `; counted over ${num(100 * lg.coverage, 1)} % of the scene: ${lg.left_out} ` +
              "chunk(s) are missing or damaged (a run is writing it, or `hgn-pipeline verify`)";
    }
    $("legend-note").textContent = note;
    $("legend").dataset.scene = meta.scene_id; // loaded (tests wait for it)
  }

  async function loadChanges(meta) {
    const box = $("changes");
    box.replaceChildren();
    if (!meta.layers.change.available) {
      box.append(el("div", { class: "muted" }, meta.layers.change.reason));
      box.dataset.scene = meta.scene_id;
      return;
    }
    const m = await getJSON(`/api/changes?scene=${enc(meta.scene_id)}`);
    const s = m.summary;
    box.append(el("div", { "data-testid": "changes-summary" },
      `${num(100 * s.changed_fraction, 2)} % of the valid pixels changed against ` +
      `${m.against}` + (m.area_unit ? ` (${num(s.area_changed / 1e4, 2)} ha)` : "")));
    const table = el("table", {}, el("thead", {}, el("tr", {},
      el("th", {}, "from"), el("th", {}, "to"), el("th", { class: "num" }, "ha"),
      el("th", { class: "num" }, "pixels"))));
    const tb = el("tbody");
    for (const p of m.pairs.filter((q) => q.changed).slice(0, 12)) {
      tb.append(el("tr", {}, el("td", {}, p.from_name), el("td", {}, p.to_name),
        el("td", { class: "num" }, p.area === null ? "-" : num(p.area / 1e4, 2)),
        el("td", { class: "num" }, num(p.pixels, 0))));
    }
    table.append(tb);
    box.append(table);
    box.dataset.scene = meta.scene_id;
  }

  async function loadHistory(meta) {
    const h = await getJSON(`/api/history?scene=${enc(meta.scene_id)}`);
    const body = $("history").querySelector("tbody");
    body.replaceChildren();
    for (const r of h.runs) {
      const changed = r.change ? `${num(100 * r.change.changed_fraction, 1)} %` : "";
      body.append(el("tr", {}, el("td", { title: r.run_id }, short(r.run_id, 24)),
        el("td", {}, short(r.finished, 19)),
        el("td", { class: `status-${r.scene_status}`, title: r.scene_error || "" },
           r.scene_status || "-"),
        el("td", { class: "num" }, changed)));
    }
    if (!h.runs.length) body.append(el("tr", {}, el("td", { colspan: 4 }, "no manifests")));
    $("history").dataset.scene = meta.scene_id;
    $("kept").textContent = h.kept_versions.length
      ? `earlier labels kept from: ${h.kept_versions.map((v) => v.run_id).join(", ")}` : "";
  }

  async function openScene(id) {
    $("map").dataset.ready = "0";
    for (const id_ of ["legend", "changes", "history"]) delete $(id_).dataset.scene;
    const meta = await getJSON(`/api/scene?scene=${enc(id)}`);
    state.meta = meta;
    for (const row of document.querySelectorAll("#scenes tbody tr")) {
      row.classList.toggle("current", row.dataset.scene === id);
    }
    $("scene-panel").hidden = false;
    $("scene-title").textContent = meta.scene_id;
    const p = meta.provenance, g = meta.georeference;
    $("scene-info").textContent = `${meta.width} x ${meta.height} px, ${meta.levels} levels; ` +
      `${p.arch || "?"} (${short(p.checkpoint_sha256, 12)}), run ${p.run_id || "?"}; ` +
      (g ? `CRS ${g.name || short(g.crs, 40)}` : "no georeference (pixel grid)");
    if (state.map) state.map.remove();
    state.layers = {};
    state.pending.clear();
    state.bounds = L.latLngBounds([[-meta.height, 0], [0, meta.width]]);
    state.map = L.map("map", { crs: L.CRS.Simple, minZoom: meta.min_native_zoom - 3,
                               maxZoom: 4, zoomSnap: 1, attributionControl: false });
    state.map.fitBounds(state.bounds);
    state.map.setMaxBounds(state.bounds.pad(0.5));
    layerControls(meta);
    state.map.on("mousemove", (e) => showCoords(meta, e.latlng));
    state.map.on("click", (e) => showPoint(meta, e.latlng).catch(report));
    await Promise.all([loadLegend(meta), loadChanges(meta), loadHistory(meta)]);
  }

  function report(err) {
    const where = state.meta ? $("clicked") : $("output");
    where.textContent = `error: ${err.message}`;
  }

  function route() {
    const m = /(?:^|&)scene=([^&]*)/.exec(location.hash.slice(1));
    if (m) openScene(decodeURIComponent(m[1])).catch(report);
  }

  $("opacity").addEventListener("input", (e) => {
    state.opacity = Number(e.target.value) / 100;
    $("opacity-value").textContent = `${e.target.value} %`;
    for (const [name, layer] of Object.entries(state.layers)) {
      if (name !== "source") layer.setOpacity(state.opacity);
    }
  });
  window.addEventListener("hashchange", route);
  window.hgnViewer = state; // read-only hook for the browser tests (map, meta, layers)
  Promise.all([loadScenes(), loadNightly()]).then(([scenes]) => {
    if (!location.hash && scenes.length) location.hash = `scene=${enc(scenes[0].scene_id)}`;
    else route();
  }).catch(report);
})();
