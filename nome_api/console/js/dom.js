// Building DOM from data. Text always goes in through textContent, never as HTML: event
// data is whatever models and tools produced, and this page holds an API key.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/** A definition list from [term, value] pairs; null values are left out. */
export function facts(pairs, className = "facts") {
  return h(
    "dl",
    { class: className },
    pairs
      .filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value))),
  );
}

// A <pre> of a few megabytes (the answer of a long run) costs the page more than it tells.
const SHOWN_CHARS = 20000;

/** Long text cut to what a person reads, saying how much was left out. */
export function clip(text) {
  const value = String(text ?? "");
  if (value.length <= SHOWN_CHARS) return value;
  return `${value.slice(0, SHOWN_CHARS)}\n… ${count(value.length - SHOWN_CHARS)} more characters`;
}

export function json(value) {
  return h("pre", { class: "json" }, clip(JSON.stringify(value, null, 2)));
}

export function text(value) {
  return h("pre", { class: "text" }, clip(value));
}

/** "1 credit", "2 credits". */
export function plural(n, word) {
  return `${count(n)} ${word}${n === 1 ? "" : "s"}`;
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "—";
}

const number = new Intl.NumberFormat();
export function count(n) {
  return number.format(n ?? 0);
}

export function time(iso, { ms = false } = {}) {
  if (!iso) return "—";
  const d = new Date(iso);
  const text = d.toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
  return ms ? `${text}.${String(d.getMilliseconds()).padStart(3, "0")}` : text;
}

export function clock(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const hms = d.toLocaleTimeString(undefined, { hour12: false });
  return `${hms}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

export function timeEl(iso, opts) {
  return h("time", { datetime: iso }, time(iso, opts));
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function between(startIso, endIso) {
  if (!startIso) return null;
  const end = endIso ? new Date(endIso) : new Date();
  return end - new Date(startIso);
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Time left until `iso`, as "12:04" or "1 h 02 min"; "expired" once past. */
export function remaining(iso, now = Date.now()) {
  const left = Math.floor((new Date(iso) - now) / 1000);
  if (left <= 0) return "expired";
  const h_ = Math.floor(left / 3600);
  const m = Math.floor((left % 3600) / 60);
  const s = left % 60;
  if (h_ > 0) return `${h_} h ${String(m).padStart(2, "0")} min`;
  return `${m}:${String(s).padStart(2, "0")}`;
}

/** Say something to screen readers (and show it) in the page's one polite live region. */
export function announce(message, { error = false } = {}) {
  const region = document.getElementById("notice");
  if (!region) return;
  // The region stays in the page (only emptied), so screen readers keep watching it.
  region.classList.toggle("error", error);
  region.textContent = message;
  clearTimeout(announce.timer);
  announce.timer = setTimeout(
    () => {
      region.textContent = "";
    },
    error ? 10000 : 5000,
  );
}

export function statusBadge(status, extra = "") {
  return h("span", { class: `badge status-${status}` }, status + extra);
}
