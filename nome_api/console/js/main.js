// The console's shell: sign-in with a pasted key (kept in this tab's sessionStorage only),
// the header and navigation, the workspace stream every view listens to, and the router
// (#/runs, #/runs/<id>, #/approvals, #/connectors).

import { Api, ApiError, LiveStream } from "./api.js";
import { approvalsView, startCountdowns } from "./approvals.js";
import { connectorsView } from "./connectors.js";
import { KEY, RUN_ROUTE } from "./early.js";
import { announce, count, h, replace } from "./dom.js";
import { Roles } from "./roles.js";
import { runsView } from "./runs.js";
import { runView } from "./timeline.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let session = null;
let mounted = null;

/** The tenant's workspace stream (GET /v1/events), shared by every view. */
class Workspace {
  constructor(api, onState) {
    this.listeners = new Set();
    this.stream = new LiveStream(api, "/v1/events", {
      // Unset: start at the log head the first stream token reports, right after what the
      // views are about to read (they ask the read models for at least that position).
      after: null,
      onEvent: (event) => {
        for (const listener of this.listeners) listener(event);
      },
      onState,
    });
  }

  start() {
    this.ready = this.stream.start();
    return this.ready;
  }

  stop() {
    this.stream.stop();
  }

  position() {
    return this.stream.last || 0;
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

function showSignIn(message) {
  nav.hidden = true;
  who.hidden = true;
  const input = h("input", {
    id: "key",
    name: "key",
    type: "password",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": "key-help",
  });
  const error = h("p", { id: "sign-in-error", class: "error", role: "alert" }, message || "");
  const form = h(
    "form",
    { class: "sign-in", "aria-labelledby": "sign-in-h" },
    h("h1", { id: "sign-in-h", tabindex: "-1" }, "Sign in"),
    h("label", { for: "key" }, "API key"),
    input,
    h(
      "p",
      { id: "key-help", class: "muted" },
      "Paste a NOME API key (nome_sk_…). It is kept in this tab only (sessionStorage) and " +
        "sent to this server as a bearer header; closing the tab forgets it.",
    ),
    h("button", { type: "submit" }, "Sign in"),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    error.textContent = "";
    try {
      await signIn(key);
    } catch (failure) {
      if (!(failure instanceof ApiError)) throw failure;
      error.textContent =
        failure.status === 401 ? "That key was not accepted." : failure.describe();
      input.focus();
    }
  });
  unmount();
  replace(main, form);
  document.title = "Sign in · NOME console";
  input.focus();
}

async function signIn(key) {
  const api = new Api(key);
  const boot = await api.get("/v1/bootstrap");
  sessionStorage.setItem(KEY, key);
  api.onUnauthorized = () => signOut("The server no longer accepts this key. Sign in again.");
  const liveState = document.getElementById("live");
  const workspace = new Workspace(api, (state) => {
    liveState.textContent = state === "live" ? "live" : state;
    liveState.dataset.state = state;
  });
  const roles = new Roles(boot.principal.roles);
  const agents = new Map();
  session = {
    api,
    boot,
    roles,
    workspace,
    navigate,
    agents,
    agentName: (id) => agents.get(id) || id,
    // Names for agent ids; a key that may not list agents sees the ids.
    agentsReady: api
      .get("/v1/agents", { query: { limit: 200 } })
      .then((page) => page.data.forEach((a) => agents.set(a.id, a.name)))
      .catch(() => {}),
    refreshPendingCount,
  };
  replace(
    document.getElementById("principal"),
    h("span", { class: "tenant" }, boot.tenant.name),
    " · ",
    h("span", { title: boot.principal.key_id }, boot.principal.name),
    " · ",
    h("span", { class: "roles" }, roles.list.join(", ")),
  );
  nav.hidden = false;
  who.hidden = false;
  workspace.subscribe((event) => {
    if (event.type.startsWith("approval.")) refreshPendingCount(event.position);
  });
  workspace.start().then(() => refreshPendingCount());
  route({ focus: true });
}

function signOut(message) {
  if (session) session.workspace.stop();
  session = null;
  sessionStorage.removeItem(KEY);
  showSignIn(message);
  if (message) announce(message, { error: true });
}

async function refreshPendingCount(minPosition) {
  if (!session) return;
  const badge = document.getElementById("pending-count");
  try {
    const page = await session.api.get("/v1/approvals", {
      query: { status: "pending", limit: 1 },
      minPosition,
    });
    badge.textContent = page.total_count ? count(page.total_count) : "";
    badge.setAttribute("aria-label", `${page.total_count} pending`);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
  }
}

function navigate(hash) {
  if (location.hash === hash) route({ focus: true });
  else location.hash = hash;
}

function unmount() {
  if (mounted) mounted.unmount();
  mounted = null;
}

function route({ focus = true } = {}) {
  if (!session) return;
  const hash = location.hash || "#/runs";
  const [path, search] = hash.split("?");
  const query = new URLSearchParams(search || "");
  unmount();
  replace(main);
  // A notice belongs to the view it was given in.
  document.getElementById("notice").textContent = "";
  let view;
  let current;
  const run = RUN_ROUTE.exec(path);
  if (run) {
    current = "runs";
    view = runView(main, session, { id: run[1] });
  } else if (path === "#/approvals") {
    current = "approvals";
    view = approvalsView(main, session);
  } else if (path === "#/connectors") {
    current = "connectors";
    view = connectorsView(main, session);
  } else {
    current = "runs";
    view = runsView(main, session, { query });
  }
  mounted = view;
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.view === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${view.title} · NOME console`;
  if (focus) main.querySelector("h1")?.focus();
}

document.getElementById("sign-out").addEventListener("click", () => {
  signOut();
  announce("Signed out");
});
document.getElementById("skip").addEventListener("click", (event) => {
  event.preventDefault();
  (main.querySelector("h1") || main).focus();
});
window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#/")) route({ focus: true });
});
startCountdowns();

const saved = sessionStorage.getItem(KEY);
if (saved) {
  signIn(saved).catch((error) => {
    if (!(error instanceof ApiError)) throw error;
    sessionStorage.removeItem(KEY);
    showSignIn(error.status === 401 ? "Your key is no longer accepted." : error.describe());
  });
} else {
  showSignIn();
}
