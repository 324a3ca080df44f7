// refcast dashboard: current refs from /v1/refs, live updates from
// /v1/events. No framework, no build step. Every piece of data from the
// server reaches the DOM through textContent or setAttribute, never as HTML.

const MAX_FEED = 500; // feed entries kept in the DOM
const HISTORY = 20; // past events shown when the page opens
const PICKER_LIMIT = 1000; // repos loaded into the picker: one /v1/repos page at its maximum
const MAX_REFS_SHOWN = 200; // refs listed per repo
const RESYNC_NOTICE_MS = 60_000; // how long the status says "resynced"
const ZERO = /^0+$/;
const HEX = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

const $ = (id) => document.getElementById(id);
const els = {
  status: $("status"),
  statusText: $("status-text"),
  form: $("filter"),
  repoInput: $("f-repo"),
  refInput: $("f-ref"),
  error: $("error"),
  feed: $("feed"),
  feedEmpty: $("feed-empty"),
  repos: $("repos"),
  refsEmpty: $("refs-empty"),
  hint: $("repo-hint"),
  picker: $("picker"),
  pickFilter: $("p-filter"),
  pickList: $("p-list"),
  pickMore: $("p-more"),
};

// ---- settings from the page URL and the server ----

const params = new URLSearchParams(location.search);
const split = (vals) => vals.flatMap((v) => v.split(/[\s,]+/)).filter(Boolean);
const watchRepos = split(params.getAll("repo"));
const watchRefs = split(params.getAll("ref"));
const token = params.get("token") || "";
const baseTitle = document.body.dataset.title || "refcast";
const commitTemplate = checkTemplate(params.get("commit")) || checkTemplate(document.body.dataset.commitTemplate);

els.repoInput.value = watchRepos.join(" ");
els.refInput.value = watchRefs.join(" ");

// viewQuery is the canonical query of a view: one parameter per repo and
// ref, plus what the form does not show (the token and the link template).
function viewQuery(repoList, refList) {
  const q = new URLSearchParams();
  for (const r of repoList) q.append("repo", r);
  for (const r of refList) q.append("ref", r);
  for (const k of ["token", "commit"]) if (params.has(k)) q.set(k, params.get(k));
  return q.toString();
}

// A view typed by hand ("repo=a,b") is rewritten in the canonical form, so
// the address shared from this page is the one other tools understand.
{
  const canonical = viewQuery(watchRepos, watchRefs);
  if (canonical !== params.toString() && canonical !== "") history.replaceState(null, "", "?" + canonical);
}

// Hidden copies keep the token and link template even if the form is
// submitted without this script's handler (form.submit()).
for (const k of ["token", "commit"]) {
  if (!params.has(k)) continue;
  const h = document.createElement("input");
  h.type = "hidden";
  h.name = k;
  h.value = params.get(k);
  els.form.append(h);
}

els.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = viewQuery(split([els.repoInput.value]), split([els.refInput.value]));
  location.assign(location.pathname + (q ? "?" + q : ""));
});

// checkTemplate accepts only absolute http(s) link templates.
function checkTemplate(t) {
  if (!t) return "";
  try {
    const u = new URL(t.replaceAll("{repo}", "r").replaceAll("{sha}", "0").replaceAll("{ref}", "x"));
    return u.protocol === "http:" || u.protocol === "https:" ? t : "";
  } catch {
    return "";
  }
}

function commitLink(repo, sha, ref) {
  if (!commitTemplate || !HEX.test(sha)) return "";
  const url = commitTemplate
    .replaceAll("{repo}", repo.split("/").map(encodeURIComponent).join("/"))
    .replaceAll("{sha}", sha)
    .replaceAll("{ref}", encodeURIComponent(ref || ""));
  return checkTemplate(url) ? url : "";
}

function apiURL(path, extra = {}, repos = watchRepos) {
  const u = new URL(path, document.baseURI);
  for (const r of repos) u.searchParams.append("repo", r);
  for (const r of watchRefs) u.searchParams.append("ref", r);
  if (token) u.searchParams.set("access_token", token);
  for (const [k, v] of Object.entries(extra)) if (v) u.searchParams.set(k, v);
  return u;
}

// ---- connection state ----

let statusTimer = 0;
function setStatus(state, text) {
  clearTimeout(statusTimer);
  els.status.dataset.state = state;
  els.statusText.textContent = text;
}

function showError(msg) {
  els.error.textContent = msg;
  els.error.hidden = !msg;
}

// ---- state: repo -> Map(ref -> object id) ----

const repos = new Map();
const touched = new Map(); // "repo\nref" -> time it last changed here

function replaceRepos(list, onlyRepo) {
  if (onlyRepo === undefined) repos.clear();
  else repos.delete(onlyRepo);
  for (const r of list || []) {
    if (onlyRepo !== undefined && r.repo !== onlyRepo) continue;
    repos.set(r.repo, new Map(Object.entries(r.refs || {})));
  }
  renderAllRepos();
}

function refOrder(a, b) {
  const rank = (r) => (r.startsWith("refs/heads/") ? 0 : r.startsWith("refs/tags/") ? 1 : 2);
  return rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0);
}

function shortRef(ref) {
  if (ref.startsWith("refs/heads/")) return { type: "branch", name: ref.slice(11) };
  if (ref.startsWith("refs/tags/")) return { type: "tag", name: ref.slice(10) };
  return { type: "ref", name: ref.replace(/^refs\//, "") };
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function shaNode(repo, sha, ref) {
  if (!sha || ZERO.test(sha)) {
    const none = el("span", "sha none");
    const dash = el("span", "", "—");
    dash.setAttribute("aria-hidden", "true");
    none.append(dash, el("span", "visually-hidden", "nothing"));
    return none;
  }
  const short = sha.slice(0, 7);
  const href = commitLink(repo, sha, ref);
  const node = href ? el("a", "sha", short) : el("span", "sha", short);
  if (href) {
    node.href = href;
    node.rel = "noreferrer noopener";
    node.target = "_blank";
  }
  node.title = sha;
  return node;
}

function refNode(ref) {
  const s = shortRef(ref);
  const n = el("span", "ref ref-" + s.type);
  n.title = ref;
  n.append(el("span", "visually-hidden", s.type + " "), el("span", "ref-name", s.name));
  return n;
}

function repoCardId(repo) {
  return "repo-" + repo.replace(/[^A-Za-z0-9_-]/g, (c) => "_" + c.charCodeAt(0).toString(16));
}

function renderRepo(repo) {
  const refs = repos.get(repo);
  const id = repoCardId(repo);
  let card = document.getElementById(id);
  if (!refs) {
    card?.remove();
    return;
  }
  const fresh = el("section", "repo-card");
  fresh.id = id;
  fresh.dataset.repo = repo;
  const h = el("h3", "repo-name", repo);
  const count = el("span", "count", refs.size === 1 ? "1 ref" : `${refs.size} refs`);
  h.append(" ", count);
  fresh.append(h);
  if (refs.size === 0) {
    fresh.append(el("p", "empty", hintText ? "No refs known for this name: see the note above." : "No matching refs."));
  } else {
    const table = el("table", "refs-table");
    const cap = el("caption", "visually-hidden", `Refs of ${repo}`);
    const head = el("thead");
    const hr = el("tr");
    hr.append(el("th", "", "Ref"), el("th", "", "Commit"));
    head.append(hr);
    const body = el("tbody");
    const names = [...refs.keys()].sort(refOrder);
    const now = Date.now();
    for (const ref of names.slice(0, MAX_REFS_SHOWN)) {
      const tr = el("tr");
      tr.dataset.ref = ref;
      tr.dataset.sha = refs.get(ref);
      const t = touched.get(repo + "\n" + ref);
      if (t && now - t < 10_000) tr.className = "changed";
      const td1 = el("td");
      td1.append(refNode(ref));
      const td2 = el("td");
      td2.append(shaNode(repo, refs.get(ref), ref));
      tr.append(td1, td2);
      body.append(tr);
    }
    table.append(cap, head, body);
    fresh.append(table);
    if (names.length > MAX_REFS_SHOWN) {
      fresh.append(el("p", "more", `and ${names.length - MAX_REFS_SHOWN} more (narrow the ref patterns to see them)`));
    }
  }
  if (card) card.replaceWith(fresh);
  else insertCard(fresh);
  els.refsEmpty.hidden = repos.size > 0;
}

function insertCard(card) {
  const repo = card.dataset.repo;
  for (const other of els.repos.children) {
    if (other.dataset.repo > repo) {
      other.before(card);
      return;
    }
  }
  els.repos.append(card);
}

function renderAllRepos() {
  els.repos.replaceChildren();
  for (const repo of [...repos.keys()].sort()) renderRepo(repo);
  els.refsEmpty.hidden = repos.size > 0;
  if (repos.size === 0) {
    els.refsEmpty.textContent = watchRepos.length ? "No repository matches yet." : "Choose repositories to see their refs.";
  }
}

// ---- the feed ----

const feedKeys = new Map(); // dedupe key -> <li>, bounded with the feed
const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const abs = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
let unseen = 0;

function relTime(t) {
  const s = Math.round((t - Date.now()) / 1000);
  const a = Math.abs(s);
  if (a < 45) return a < 10 ? "just now" : rtf.format(s, "second");
  if (a < 45 * 60) return rtf.format(Math.round(s / 60), "minute");
  if (a < 22 * 3600) return rtf.format(Math.round(s / 3600), "hour");
  return rtf.format(Math.round(s / 86400), "day");
}

function timeNode(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return el("span", "when");
  const n = el("time", "when", relTime(t));
  n.dateTime = new Date(t).toISOString();
  n.title = abs.format(t);
  return n;
}

function refreshTimes() {
  for (const n of els.feed.querySelectorAll("time.when")) {
    n.textContent = relTime(Date.parse(n.dateTime));
  }
}
setInterval(refreshTimes, 15_000);

function badge(kind, text) {
  return el("span", "badge badge-" + kind, text || kind);
}

function prepend(li) {
  li.classList.add("new");
  els.feed.prepend(li);
  while (els.feed.children.length > MAX_FEED) {
    const last = els.feed.lastElementChild;
    if (last.dataset.key) feedKeys.delete(last.dataset.key);
    last.remove();
  }
  els.feedEmpty.hidden = true;
  if (document.hidden) {
    unseen++;
    document.title = `(${unseen}) ${baseTitle}`;
  }
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) {
    unseen = 0;
    document.title = baseTitle;
  }
});

function addEntry(ev, key, past) {
  const li = el("li", "entry kind-" + ev.kind + (past ? " past" : ""));
  li.dataset.key = key;
  li.dataset.repo = ev.repo;
  li.dataset.ref = ev.ref || "";
  li.dataset.new = ev.new || "";
  if (ev.forced) li.classList.add("forced");

  const line1 = el("div", "line head");
  line1.append(badge(ev.kind));
  if (ev.forced) line1.append(badge("forced", "force-pushed"));
  line1.append(refNode(ev.ref), el("span", "repo", ev.repo), timeNode(ev.time));

  const line2 = el("div", "line ids");
  const arrow = el("span", "arrow", "→");
  arrow.setAttribute("aria-hidden", "true");
  line2.append(
    el("span", "visually-hidden", "from "),
    shaNode(ev.repo, ev.old, ev.ref),
    arrow,
    el("span", "visually-hidden", " to "),
    shaNode(ev.repo, ev.new, ev.ref),
  );
  if (ev.commits) {
    const n = ev.commits + (ev.commits_more ? "+" : "");
    line2.append(el("span", "commits", `${n} commit${ev.commits === 1 && !ev.commits_more ? "" : "s"}`));
  }
  li.append(line1, line2);

  const c = ev.commit || {};
  if (c.subject || c.author || ev.pusher) {
    const line3 = el("div", "line meta");
    if (c.subject) line3.append(el("span", "subject", c.subject));
    const who = el("span", "who");
    if (c.author) who.append(el("span", "author", c.author));
    if (ev.pusher && ev.pusher !== c.author) {
      if (c.author) who.append(" · ");
      who.append("pushed by ", el("span", "pusher", ev.pusher));
    }
    if (who.childNodes.length) line3.append(who);
    li.append(line3);
  }
  prepend(li);
}

function addNotice(kind, title, text, key) {
  const li = el("li", "entry notice notice-" + kind);
  if (key) li.dataset.key = key;
  const head = el("div", "line head");
  head.append(badge(kind), el("span", "notice-title", title), timeNode(new Date().toISOString()));
  li.append(head, el("div", "line notice-text", text));
  prepend(li);
}

// ---- the stream ----

let cursor = "";
let es = null;
let retryTimer = 0;
let failures = 0;
let resyncedAt = 0;
let stopped = false;

function backoff() {
  const base = Math.min(30_000, 1000 * 2 ** Math.min(failures, 5));
  failures++;
  return Math.round(base * (0.5 + Math.random()));
}

async function fetchJSON(url) {
  const res = await fetch(url, { credentials: "same-origin", cache: "no-cache", headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON: reported by status below
  }
  if (!res.ok) {
    const err = new Error((body && body.error) || `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

// fatal reports whether an error will not go away by retrying.
const fatal = (err) => err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429;

function stop(msg) {
  stopped = true;
  es?.close();
  es = null;
  clearTimeout(retryTimer);
  setStatus("error", "Stopped");
  showError(msg);
}

async function start() {
  if (watchRepos.length === 0) {
    setStatus("idle", "Not connected: choose repositories");
    els.refsEmpty.textContent = "Choose repositories to see their refs.";
    return;
  }
  setStatus("connecting", "Connecting…");
  try {
    // History first: every event in it is then reflected in the snapshot
    // read after it, so skipping a replayed duplicate loses no ref state.
    await loadHistory();
    const snap = await fetchJSON(apiURL("v1/refs"));
    cursor = snap.cursor || "";
    showHint(snap.hint);
    replaceRepos(snap.repos);
    showError("");
    connect();
  } catch (err) {
    if (fatal(err)) return stop(`Cannot load refs: ${err.message}`);
    retryLater(start, `Cannot reach the server (${err.message})`);
  }
}

// loadHistory shows the last HISTORY events, oldest at the bottom. A node
// without /v1/history (an older version) or any failure just shows none:
// the snapshot request that follows reports real errors.
async function loadHistory() {
  let body;
  try {
    body = await fetchJSON(apiURL("v1/history", { limit: String(HISTORY) }));
  } catch {
    return;
  }
  for (const ev of body?.events || []) {
    const key = [ev.repo, ev.push, ev.ref].join("\n");
    if (feedKeys.has(key)) continue;
    feedKeys.set(key, true);
    addEntry(ev, key, true);
  }
  document.title = baseTitle;
  unseen = 0;
}

// showHint shows the node's explanation of an empty answer (a repo name it
// has no refs for, with readable names like it) in place of a bare "0 refs".
let hintText = "";
function showHint(h) {
  hintText = h || "";
  els.hint.textContent = hintText;
  els.hint.hidden = !hintText;
}

// ---- the repo picker: /v1/repos, filtered here ----

let pickable = [];
async function loadPicker() {
  const u = new URL("v1/repos", document.baseURI);
  u.searchParams.set("limit", String(PICKER_LIMIT));
  if (token) u.searchParams.set("access_token", token);
  let body;
  try {
    body = await fetchJSON(u);
  } catch {
    return; // an older node, or no repo readable without a token
  }
  pickable = body?.repos || [];
  els.pickMore.hidden = !body?.next;
  els.pickMore.textContent = body?.next ? `Showing the first ${PICKER_LIMIT} repositories; type to narrow.` : "";
  els.picker.hidden = pickable.length === 0;
  renderPicker();
}

function renderPicker() {
  const f = els.pickFilter.value.trim().toLowerCase();
  const opts = [];
  for (const r of pickable) {
    if (f && !r.toLowerCase().includes(f)) continue;
    const o = el("option", "", r);
    o.value = r;
    if (watchRepos.length === 1 && watchRepos[0] === r) o.selected = true;
    opts.push(o);
  }
  els.pickList.replaceChildren(...opts);
}

els.pickFilter.addEventListener("input", renderPicker);
els.pickList.addEventListener("change", () => {
  const r = els.pickList.value;
  if (!r) return;
  const q = viewQuery([r], watchRefs);
  location.assign(location.pathname + "?" + q);
});

function retryLater(fn, why) {
  if (stopped) return;
  const ms = backoff();
  setStatus("reconnecting", `Reconnecting in ${Math.ceil(ms / 1000)} s…`);
  if (why) els.status.title = why;
  clearTimeout(retryTimer);
  retryTimer = setTimeout(fn, ms);
}

function track(e) {
  if (e.lastEventId) cursor = e.lastEventId;
}

function connect() {
  if (stopped) return;
  es?.close();
  const src = new EventSource(apiURL("v1/events", { since: cursor }));
  es = src;
  src.addEventListener("hello", (e) => {
    track(e);
    failures = 0;
    showError("");
    els.status.title = "";
    if (resyncedAt && Date.now() - resyncedAt < RESYNC_NOTICE_MS) {
      setStatus("resynced", "Live · resynced");
      statusTimer = setTimeout(() => setStatus("live", "Live"), RESYNC_NOTICE_MS - (Date.now() - resyncedAt));
    } else {
      setStatus("live", "Live");
    }
  });
  src.addEventListener("ref", (e) => {
    track(e);
    onRef(JSON.parse(e.data));
  });
  src.addEventListener("sync", (e) => {
    track(e);
    onSync(JSON.parse(e.data));
  });
  src.addEventListener("reset", (e) => {
    track(e);
    const d = JSON.parse(e.data);
    if (d.cursor) cursor = d.cursor;
    replaceRepos(d.repos);
    resyncedAt = Date.now();
    setStatus("resynced", "Resynced");
    addNotice(
      "reset",
      "Resynced",
      `${d.reason ? d.reason[0].toUpperCase() + d.reason.slice(1) + ". " : ""}Updates from the gap may be missing here; current refs are complete.`,
    );
  });
  // A server-sent "error" event carries data (e.g. an expired token); the
  // browser's own error event does not.
  src.addEventListener("error", (e) => {
    if (src !== es) return;
    if (e.data) {
      let d = {};
      try {
        d = JSON.parse(e.data);
      } catch {
        // keep the generic message
      }
      if (d.status === 401 || d.status === 403) return stop(`Stream ended: ${d.error || "not authorized"}. Reload with a fresh token.`);
      src.close();
      return retryLater(connect, d.error);
    }
    if (src.readyState === EventSource.CONNECTING) {
      // The browser reconnects by itself, sending Last-Event-ID.
      setStatus("reconnecting", "Reconnecting…");
      return;
    }
    // Closed for good (an HTTP error such as 503 while a node drains, or
    // 4xx): learn why from the snapshot endpoint, then resume from cursor.
    src.close();
    es = null;
    probe();
  });
}

async function probe() {
  try {
    await fetchJSON(apiURL("v1/refs"));
    retryLater(connect);
  } catch (err) {
    if (fatal(err)) return stop(`Cannot follow updates: ${err.message}`);
    retryLater(probe, err.message);
  }
}

function onRef(ev) {
  const key = [ev.repo, ev.push, ev.ref].join("\n");
  if (feedKeys.has(key)) return; // already shown: a replay overlap
  feedKeys.set(key, true);
  let refs = repos.get(ev.repo);
  if (!refs) {
    refs = new Map();
    repos.set(ev.repo, refs);
  }
  if (ev.kind === "delete") refs.delete(ev.ref);
  else refs.set(ev.ref, ev.new);
  touched.set(ev.repo + "\n" + ev.ref, Date.now());
  renderRepo(ev.repo);
  addEntry(ev, key);
}

async function onSync(ev) {
  const key = [ev.repo, ev.push, "sync"].join("\n");
  if (feedKeys.has(key)) return;
  feedKeys.set(key, true);
  addNotice("sync", ev.repo, `Re-seeded${ev.refs ? ` with ${ev.refs} refs` : ""}; its current refs were reloaded.`, key);
  try {
    const snap = await fetchJSON(apiURL("v1/refs", {}, [ev.repo]));
    replaceRepos(snap.repos, ev.repo);
    renderRepo(ev.repo);
  } catch (err) {
    showError(`Cannot reload ${ev.repo}: ${err.message}`);
  }
}

loadPicker();
start();
