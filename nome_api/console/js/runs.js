// The runs list: status and thread filter on the server (GET /v1/runs takes them); agent and
// creation time filter the pages loaded so far, in the page (the route has no such
// parameters yet). Rows move live with the workspace stream.

import { ApiError, ENDED, TERMINAL } from "./api.js";
import {
  announce,
  between,
  count,
  duration,
  h,
  replace,
  shortId,
  statusBadge,
  timeEl,
} from "./dom.js";

const STATUSES = ["pending", "active", "completed", "failed", "cancelled"];
// Events after which a run's document changes in a way the list shows.
const RUN_CHANGES = new Set([
  ...TERMINAL,
  "run.created",
  "run.started",
  "approval.requested",
  "approval.resolved",
]);

export function runsView(main, ctx, { query }) {
  const filters = {
    status: query.get("status") || "",
    thread: query.get("thread") || "",
    agent: query.get("agent") || "",
    from: query.get("from") || "",
    to: query.get("to") || "",
  };
  let runs = [];
  let cursor = null;
  let total = 0;
  const refetch = new Map();

  const status = h(
    "select",
    { id: "f-status", name: "status" },
    h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s)),
  );
  const thread = h("input", {
    id: "f-thread",
    name: "thread",
    type: "text",
    value: filters.thread,
    placeholder: "thread id",
    autocomplete: "off",
    spellcheck: "false",
    size: "38",
  });
  const agent = h(
    "select",
    { id: "f-agent", name: "agent" },
    h("option", { value: "" }, "any agent"),
  );
  const from = h("input", {
    id: "f-from",
    name: "from",
    type: "datetime-local",
    value: filters.from,
  });
  const to = h("input", { id: "f-to", name: "to", type: "datetime-local", value: filters.to });
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter runs" },
    h("div", {}, h("label", { for: "f-status" }, "Status"), status),
    h("div", {}, h("label", { for: "f-thread" }, "Thread"), thread),
    h("div", {}, h("label", { for: "f-agent" }, "Agent"), agent),
    h("div", {}, h("label", { for: "f-from" }, "Created from"), from),
    h("div", {}, h("label", { for: "f-to" }, "Created until"), to),
    h(
      "div",
      { class: "filter-buttons" },
      h("button", { type: "submit" }, "Apply"),
      h("button", { type: "reset" }, "Clear"),
    ),
  );
  const summaryLine = h("p", { class: "summary", role: "status" });
  const body = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "Load more runs");
  const table = h(
    "table",
    { class: "runs" },
    h("caption", { class: "sr-only" }, "Runs, newest first"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        [
          "Run",
          "Status",
          "Agent",
          "Thread",
          "Created",
          "Duration",
          "Events",
          "Tokens in / out",
          "Credits",
          "",
        ].map((label) => h("th", { scope: "col" }, label)),
      ),
    ),
    body,
  );

  main.append(
    h(
      "section",
      { "aria-labelledby": "runs-h" },
      h("h1", { id: "runs-h", tabindex: "-1" }, "Runs"),
      form,
      summaryLine,
      h("div", { class: "table-wrap" }, table),
      more,
    ),
  );

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    if (status.value) params.set("status", status.value);
    if (thread.value.trim()) params.set("thread", thread.value.trim());
    if (agent.value) params.set("agent", agent.value);
    if (from.value) params.set("from", from.value);
    if (to.value) params.set("to", to.value);
    const text = params.toString();
    ctx.navigate(text ? `#/runs?${text}` : "#/runs");
  });
  form.addEventListener("reset", (event) => {
    event.preventDefault();
    ctx.navigate("#/runs");
  });
  more.addEventListener("click", () => load({ append: true }));

  function shown(run) {
    if (filters.agent && run.agent_id !== filters.agent) return false;
    const created = new Date(run.created_at);
    if (filters.from && created < new Date(filters.from)) return false;
    if (filters.to && created > new Date(filters.to)) return false;
    return true;
  }

  function serverMatch(run) {
    return (
      (!filters.status || run.status === filters.status) &&
      (!filters.thread || run.thread_id === filters.thread)
    );
  }

  function row(run) {
    const cells = [
      h(
        "th",
        { scope: "row" },
        h("a", { href: `#/runs/${run.id}`, title: run.id }, shortId(run.id)),
      ),
      h(
        "td",
        {},
        statusBadge(run.status),
        run.awaiting_approval ? h("span", { class: "badge waiting" }, "awaiting approval") : null,
      ),
      h("td", { title: run.agent_id }, ctx.agents.get(run.agent_id) || shortId(run.agent_id)),
      h(
        "td",
        {},
        h(
          "a",
          {
            href: `#/runs?thread=${run.thread_id}`,
            title: `Show the runs of thread ${run.thread_id}`,
          },
          shortId(run.thread_id),
        ),
      ),
      h("td", {}, timeEl(run.created_at)),
      h("td", {}, duration(between(run.started_at, run.ended_at))),
      h("td", { class: "num" }, count(run.event_count)),
      h(
        "td",
        { class: "num" },
        `${count(run.usage?.input_tokens)} / ${count(run.usage?.output_tokens)}`,
      ),
      h("td", { class: "num" }, count(run.usage?.credits)),
      h("td", {}, cancelButton(run)),
    ];
    return h("tr", { dataset: { run: run.id } }, cells);
  }

  function cancelButton(run) {
    if (!ctx.roles.canCancel() || ENDED.has(run.status)) return null;
    return h(
      "button",
      {
        type: "button",
        class: "small",
        "aria-label": `Cancel run ${shortId(run.id)}`,
        onclick: async () => {
          if (!window.confirm(`Cancel run ${shortId(run.id)}?`)) return;
          try {
            const { data } = await ctx.api.post(`/v1/runs/${run.id}/cancel`, {
              reason: "cancelled in the console",
            });
            upsert(data);
            announce(`Run ${shortId(run.id)} cancelled`);
          } catch (error) {
            if (!(error instanceof ApiError)) throw error;
            announce(error.describe(), { error: true });
          }
        },
      },
      "Cancel",
    );
  }

  function render() {
    const visible = runs.filter(shown);
    replace(
      body,
      visible.length
        ? visible.map(row)
        : h("tr", {}, h("td", { colspan: "10", class: "empty" }, "No runs match these filters.")),
    );
    const local = filters.agent || filters.from || filters.to;
    summaryLine.textContent =
      `${count(visible.length)} shown of ${count(runs.length)} loaded (${count(total)} in all` +
      (filters.status || filters.thread ? " matching status and thread" : "") +
      ")" +
      (local
        ? ". Agent and time filters apply to the loaded runs; load more to look further back."
        : ".");
    more.hidden = !cursor;
  }

  function upsert(run) {
    const at = runs.findIndex((r) => r.id === run.id);
    if (!serverMatch(run)) {
      if (at >= 0) {
        runs.splice(at, 1);
        total -= 1;
      }
    } else if (at >= 0) {
      runs[at] = run;
    } else {
      // Runs are listed newest first; a run seen for the first time is a new one.
      runs.unshift(run);
      total += 1;
    }
    render();
  }

  async function load({ append = false } = {}) {
    // The list must cover everything up to where the workspace stream starts.
    await ctx.workspace.ready;
    try {
      const page = await ctx.api.get("/v1/runs", {
        query: {
          limit: 50,
          cursor: append ? cursor : null,
          status: filters.status,
          thread_id: filters.thread,
        },
        minPosition: ctx.workspace.position(),
      });
      runs = append ? [...runs, ...page.data] : page.data;
      cursor = page.next_cursor;
      total = page.total_count;
      render();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(body, h("tr", {}, h("td", { colspan: "10", class: "error" }, error.describe())));
    }
  }

  async function listAgents() {
    await ctx.agentsReady;
    replace(
      agent,
      h("option", { value: "" }, "any agent"),
      [...ctx.agents].map(([id, name]) =>
        h("option", { value: id, selected: id === filters.agent }, name),
      ),
    );
    render();
  }

  const counted = new Set();
  let countFrame = 0;
  function drawCounted() {
    countFrame = 0;
    for (const id of counted) {
      const run = runs.find((r) => r.id === id);
      const tr = body.querySelector(`tr[data-run="${id}"]`);
      if (run && tr && shown(run)) tr.replaceWith(row(run));
    }
    counted.clear();
  }

  const unsubscribe = ctx.workspace.subscribe((event) => {
    if (!event.run_id) return;
    const known = runs.find((r) => r.id === event.run_id);
    if (known && event.seq > known.event_count && event.stream_id === event.run_id) {
      known.event_count = event.seq;
      // A streaming answer is many events a second: its row is drawn once a frame.
      counted.add(known.id);
      if (!countFrame) countFrame = requestAnimationFrame(drawCounted);
    }
    if (!RUN_CHANGES.has(event.type)) return;
    // The read model catches up within milliseconds: read the run once it has this event.
    clearTimeout(refetch.get(event.run_id));
    refetch.set(
      event.run_id,
      setTimeout(async () => {
        refetch.delete(event.run_id);
        try {
          upsert(await ctx.api.get(`/v1/runs/${event.run_id}`, { minPosition: event.position }));
        } catch (error) {
          if (!(error instanceof ApiError)) throw error;
        }
      }, 100),
    );
  });

  listAgents();
  load();
  return {
    title: "Runs",
    unmount() {
      unsubscribe();
      cancelAnimationFrame(countFrame);
      for (const timer of refetch.values()) clearTimeout(timer);
    },
  };
}
