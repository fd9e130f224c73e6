// The live page of mfocus (web/page.py): polls the JSON API every second
// and draws each conference's foci, their links, and the members each holds.
// No framework, no build step: the DOM is updated in place, member chips
// keyed by endpoint, so 200 members redraw cheaply and a click is not lost.
"use strict";

const POLL_MS = 1000;
const SPEAKING = 0.03;          // level (0..1 peak) above which a member shows speaking
const TOKEN_KEY = "mfocus.token";
const API = "api/v1/conferences";

const $ = (id) => document.getElementById(id);
const chips = new Map();        // endpoint -> its chip element

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
}

// -- the API, with the token ------------------------------------------------

class Unauthorized extends Error {}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  if (method === "POST") headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, cache: "no-store", credentials: "omit",
                                body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) throw new Unauthorized(token ? "the token was refused" : "no token");
  let data = null;
  try { data = await r.json(); } catch (e) { /* no JSON body */ }
  if (!r.ok) {
    const why = data && data.error ? data.error : r.statusText;
    const err = new Error(`${r.status} ${why}` + (data && data.focus ? ` (${data.focus})` : ""));
    err.status = r.status;
    throw err;
  }
  return data;
}

function status(text, state) {
  const s = $("status");
  s.textContent = text;
  s.dataset.state = state;
}

function askToken(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("auth-message").textContent = "401 Unauthorized: " +
    (why === "no token" ? "this API asks for its bearer token." : why + "; enter it again.");
  $("token-form").hidden = false;
  $("forget-token").hidden = true;
  status("401 Unauthorized", "401");
}

// -- drawing --------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function short(uri) {
  return uri.replace(/^sips?:/, "");
}

function topology(foci) {
  // Foci on a circle, a line per link (dashed when only one side subscribes).
  const ry = foci.length > 4 ? 80 : 40;          // room for the labels of many foci
  const cy = ry + 15;
  const box = svg("svg", { class: "topology", viewBox: `0 0 640 ${2 * ry + 40}`, role: "img" });
  const at = new Map();
  foci.forEach((f, i) => {
    const a = 2 * Math.PI * i / Math.max(foci.length, 1) - Math.PI / 2;
    at.set(f.uri, foci.length === 1 ? [320, cy] : [320 + 250 * Math.cos(a), cy + ry * Math.sin(a)]);
  });
  const seen = new Set();
  for (const f of foci) {
    for (const other of f.links || []) {
      if (!at.has(other)) continue;
      const key = [f.uri, other].sort().join(" ");
      if (seen.has(key)) continue;
      seen.add(key);
      const back = (foci.find((g) => g.uri === other).links || []).includes(f.uri);
      const [x1, y1] = at.get(f.uri), [x2, y2] = at.get(other);
      box.append(svg("line", { x1, y1, x2, y2, class: back ? "both" : "oneway",
                               "data-link": key }));
    }
  }
  for (const f of foci) {
    const [x, y] = at.get(f.uri);
    box.append(svg("circle", { cx: x, cy: y, r: 9, class: f.state, "data-node": f.uri }));
    const label = svg("text", { x, y: y + 20 });
    label.textContent = `${short(f.uri)} ${f.members}/${f.capacity}`;
    box.append(label);
  }
  return box;
}

function memberChip(conf, m) {
  let chip = chips.get(m.endpoint);
  if (!chip) {
    chip = el("div", { class: "member" });
    chips.set(m.endpoint, chip);
  }
  const ours = m.muted !== null && m.muted !== undefined;      // held by this focus
  const muted = ours ? m.muted : m.media === "sendonly";
  const hold = m.media === "recvonly" || m.media === "inactive";
  const level = m.level;
  chip.dataset.member = m.uri;
  chip.dataset.endpoint = m.endpoint;
  chip.dataset.focus = m.focus;
  chip.dataset.conference = conf;
  chip.dataset.level = level === null || level === undefined ? "" : level;
  chip.className = "member" + (muted ? " is-muted" : "");
  chip.title = `${m.uri}\n${m.endpoint}\nfocus ${m.focus}\n${m.status}, media ${m.media}` +
               (level !== null && level !== undefined ? `\nlevel ${level}` : "");
  const dot = el("span", { class: "dot " + (level === null || level === undefined ? "unknown"
                 : level >= SPEAKING ? "speaking" : "quiet") });
  const parts = [dot, el("span", { class: "name" }, m.uri.replace(/^sips?:/, "").split("@")[0])];
  if (m.codec) parts.push(el("span", { class: "codec" }, m.codec.split("/")[0]));
  if (muted) parts.push(el("span", { class: "badge muted" }, "muted"));
  if (hold) parts.push(el("span", { class: "badge hold" }, "on hold"));
  if (m.status !== "connected") parts.push(el("span", { class: "badge" }, m.status));
  if (ours) {        // a mute holds at the focus holding the member: only ours here
    parts.push(el("button", { type: "button", "data-action": muted ? "unmute" : "mute",
                              "data-conference": conf, "data-member": m.uri,
                              title: muted ? "unmute" : "mute" }, muted ? "unmute" : "mute"));
  }
  // a kick of another focus's member is forwarded to it, or answered 409 (shown)
  parts.push(el("button", { type: "button", "data-action": "kick", "data-conference": conf,
                            "data-member": m.uri, title: "end this member's call" }, "kick"));
  chip.replaceChildren(...parts);
  return chip;
}

function focusColumn(section, conf, f, members) {
  let col = section.querySelector(`.focus[data-focus="${CSS.escape(f.uri)}"]`);
  if (!col) {
    col = el("div", { class: "focus", "data-focus": f.uri },
             el("div", { class: "focus-head" }), el("div", { class: "members" }));
  }
  const load = f.capacity ? `${f.members}/${f.capacity}` : `${f.members}`;
  col.dataset.state = f.state;
  col.querySelector(".focus-head").replaceChildren(
    el("span", { class: "uri", title: f.uri }, short(f.uri)),
    el("span", { class: "badge" }, f.role), " ",
    el("span", { class: "badge" }, f.state), " ",
    el("span", { class: "load" }, `load ${load}`), " ",
    el("span", { class: "epoch" }, `epoch ${f.epoch}`),
    el("meter", { min: 0, max: Math.max(f.capacity, 1), value: f.members, high: f.capacity }));
  const list = col.querySelector(".members");
  const wanted = members.map((m) => memberChip(conf, m));
  wanted.forEach((chip, i) => {            // in order, moving chips only when needed
    if (list.children[i] !== chip) list.insertBefore(chip, list.children[i] || null);
  });
  while (list.children.length > wanted.length) list.lastChild.remove();
  return col;
}

function conferenceSection(view) {
  const main = $("conferences");
  let section = main.querySelector(`section[data-conference="${CSS.escape(view.name)}"]`);
  if (!section) {
    section = el("section", { class: "conference", "data-conference": view.name },
                 el("div", { class: "conference-head" }), el("div", { class: "topology-box" }),
                 el("div", { class: "foci" }));
    main.append(section);
  }
  const name = view.name;
  const button = (action, text) => el("button", { type: "button", "data-action": action,
                                                   "data-conference": name }, text);
  section.querySelector(".conference-head").replaceChildren(
    el("h2", {}, name), el("span", { class: "uri" }, view.uri),
    el("span", { class: "count" }, `${view.members.length} members, ${view.foci.length} foci`),
    view.locked ? el("span", { class: "badge locked" }, "locked") : "",
    button("mute-all", "mute all"), button("unmute-all", "unmute all"),
    view.locked ? button("unlock", "unlock") : button("lock", "lock"),
    button("end", "end"));
  section.querySelector(".topology-box").replaceChildren(topology(view.foci));
  const byFocus = new Map(view.foci.map((f) => [f.uri, []]));
  for (const m of view.members) {
    if (!byFocus.has(m.focus)) byFocus.set(m.focus, []);     // a holder not (yet) listed
    byFocus.get(m.focus).push(m);
  }
  const foci = view.foci.slice();
  for (const uri of byFocus.keys()) {
    if (!foci.some((f) => f.uri === uri)) {
      foci.push({ uri, role: "?", capacity: 0, members: byFocus.get(uri).length,
                  state: "unlisted", epoch: "?" });
    }
  }
  const grid = section.querySelector(".foci");
  const cols = foci.map((f) => focusColumn(section, name, f, byFocus.get(f.uri)));
  cols.forEach((col, i) => {
    if (grid.children[i] !== col) grid.insertBefore(col, grid.children[i] || null);
  });
  while (grid.children.length > cols.length) grid.lastChild.remove();
  return section;
}

function draw(views) {
  const keep = new Set();
  const live = new Set();
  for (const view of views) {
    keep.add(conferenceSection(view));
    for (const m of view.members) live.add(m.endpoint);
  }
  for (const section of [...$("conferences").children]) {
    if (!keep.has(section)) section.remove();
  }
  for (const endpoint of [...chips.keys()]) {
    if (!live.has(endpoint)) chips.delete(endpoint);
  }
  $("empty").hidden = views.length > 0;
}

// -- the loop and the buttons ---------------------------------------------------

let timer = null;

async function poll() {
  clearTimeout(timer);
  try {
    const list = await api("GET", API);
    const views = [];
    for (const c of list) {
      try {
        views.push(await api("GET", `${API}/${encodeURIComponent(c.name)}`));
      } catch (e) {
        if (e instanceof Unauthorized || e.status !== 404) throw e;   // ended meanwhile
      }
    }
    draw(views);
    status(`updated ${new Date().toLocaleTimeString()}`, "ok");
    timer = setTimeout(poll, POLL_MS);
  } catch (e) {
    if (e instanceof Unauthorized) {
      askToken(e.message);                 // polling resumes when a token is given
    } else {
      status(`API unreachable or failing: ${e.message}`, "error");
      timer = setTimeout(poll, POLL_MS);
    }
  }
}

async function act(button) {
  const { action, conference, member } = button.dataset;
  if (action === "end" && !confirm(`End conference ${conference} for everyone?`)) return;
  const base = `${API}/${encodeURIComponent(conference)}`;
  const path = member ? `${base}/members/${encodeURIComponent(member)}/${action}`
                      : `${base}/${action}`;
  button.disabled = true;
  try {
    await api("POST", path);
    status(`${action} ${member || conference}: done`, "ok");
  } catch (e) {
    if (e instanceof Unauthorized) askToken(e.message);
    else status(`${action} ${member || conference}: ${e.message}`, "error");
  } finally {
    button.disabled = false;
  }
  poll();
}

function start() {
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) act(button);
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    $("token-form").hidden = true;
    $("forget-token").hidden = false;
    status("token set; loading…", "loading");
    poll();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("forget-token").hidden = true;
    poll();
  });
  $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  poll();
}

start();
