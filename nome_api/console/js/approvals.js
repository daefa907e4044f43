// The approval queue (API.md §5): pending approvals across threads, approve or deny with a
// reason, a countdown to each one's expiry. The same card appears inline on a run's page.

import { ApiError } from "./api.js";
import { announce, count, facts, h, json, remaining, replace, shortId, timeEl } from "./dom.js";
import { family } from "./events.js";

/** Every second, each countdown on the page says how long its approval has left; an expired
 * one disables its buttons (the server's sweep records the expiry). */
export function startCountdowns() {
  const tick = () => {
    const now = Date.now();
    for (const el of document.querySelectorAll("[data-expires]")) {
      const left = remaining(el.dataset.expires, now);
      if (el.textContent !== left) el.textContent = left;
      if (left === "expired") {
        const card = el.closest(".approval");
        for (const button of card?.querySelectorAll("button.resolve") || []) button.disabled = true;
      }
    }
  };
  tick();
  return setInterval(tick, 1000);
}

// One approval can be on the page twice (a run's queue and its event details): every card
// gets ids of its own, so each label names its own field.
let cards = 0;

/** A card for one approval; `onResolved(approval, position)` after this page resolved it. */
export function approvalCard(approval, ctx, { onResolved, showRun = true } = {}) {
  cards += 1;
  const titleId = `approval-${cards}`;
  const pending = approval.status === "pending";
  const reasonId = `reason-${cards}`;
  const status = h("p", { class: "card-status", role: "status" });
  const reason = h("input", {
    id: reasonId,
    type: "text",
    name: "reason",
    maxlength: "2000",
    autocomplete: "off",
  });

  async function resolve(decision, buttons) {
    for (const b of buttons) b.disabled = true;
    const text = reason.value.trim();
    try {
      const { data, headers } = await ctx.api.post(
        `/v1/approvals/${approval.id}/${decision}`,
        text ? { reason: text } : {},
      );
      const verb = decision === "approve" ? "Approved" : "Denied";
      announce(`${verb}: ${approval.tool} (approval ${shortId(approval.id)})`);
      onResolved?.(data, Number(headers.get("X-Nome-Position") || 0));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const message =
        error.code === "already_resolved"
          ? "Someone else resolved this approval first."
          : error.describe();
      status.textContent = message;
      announce(message, { error: true });
      if (error.code !== "already_resolved") for (const b of buttons) b.disabled = false;
    }
  }

  let actions;
  if (!pending) {
    const why = approval.reason ? ` — ${approval.reason}` : "";
    actions = h("p", {}, `Resolved: ${approval.status}${why}`);
  } else if (ctx.roles.canResolve(approval.tier)) {
    const approve = h("button", { type: "button", class: "resolve approve" }, "Approve");
    const deny = h("button", { type: "button", class: "resolve deny" }, "Deny");
    const both = [approve, deny];
    approve.addEventListener("click", () => resolve("approve", both));
    deny.addEventListener("click", () => resolve("deny", both));
    actions = h(
      "div",
      { class: "resolve-row" },
      h("label", { for: reasonId }, "Reason (optional)"),
      reason,
      approve,
      deny,
    );
  } else {
    const needs = approval.tier === "admin" ? "admin" : "member";
    actions = h("p", { class: "muted" }, `Resolving this approval needs the ${needs} role.`);
  }

  return h(
    "article",
    { class: `approval tier-${approval.tier}`, "aria-labelledby": titleId },
    h(
      "h3",
      { id: titleId },
      approval.tool,
      " ",
      h("span", { class: "badge tier" }, `${approval.tier} tier`),
    ),
    facts([
      [
        "run",
        showRun && approval.run_id
          ? h("a", { href: `#/runs/${approval.run_id}` }, shortId(approval.run_id))
          : approval.run_id
            ? shortId(approval.run_id)
            : "direct tool call",
      ],
      ["thread", approval.thread_id ? shortId(approval.thread_id) : null],
      ["requested", timeEl(approval.requested_at)],
      [
        "expires in",
        pending
          ? h(
              "span",
              { class: "countdown", dataset: { expires: approval.expires_at } },
              remaining(approval.expires_at),
            )
          : null,
      ],
    ]),
    h("h4", { class: "sr-only" }, "Arguments"),
    json(approval.arguments),
    actions,
    status,
  );
}

/** Pending approvals of one run (the queue is small: a few pages at most). */
export async function pendingOfRun(api, runId, minPosition) {
  const found = [];
  let cursor = null;
  for (let page = 0; page < 10; page++) {
    const body = await api.get("/v1/approvals", {
      query: { status: "pending", limit: 200, cursor },
      minPosition,
    });
    found.push(...body.data.filter((a) => a.run_id === runId));
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return found;
}

export function approvalsView(main, ctx) {
  const list = h("div", { class: "cards" });
  const summaryLine = h("p", { class: "summary", role: "status" });
  const more = h("button", { type: "button", hidden: true }, "Load more");
  let cursor = null;
  let loaded = [];
  let total = 0;
  let reloadTimer = null;

  main.append(
    h(
      "section",
      { "aria-labelledby": "approvals-h" },
      h("h1", { id: "approvals-h", tabindex: "-1" }, "Approvals"),
      h(
        "p",
        { class: "lede" },
        "Tool calls waiting for a person, oldest first, across every thread. ",
        ctx.roles.has("member")
          ? "Members resolve required-tier approvals; admin-tier ones need an admin."
          : "Your key can read the queue but not resolve approvals.",
      ),
      summaryLine,
      list,
      more,
    ),
  );

  function render() {
    replace(
      list,
      loaded.length
        ? loaded.map((a) =>
            approvalCard(a, ctx, {
              onResolved: (_, position) => {
                loaded = loaded.filter((x) => x.id !== a.id);
                total = Math.max(0, total - 1);
                render();
                ctx.refreshPendingCount(position);
              },
            }),
          )
        : h("p", { class: "empty" }, "No approvals are waiting."),
    );
    summaryLine.textContent = `${count(total)} pending`;
    more.hidden = !cursor;
  }

  async function load({ append = false, minPosition } = {}) {
    try {
      const body = await ctx.api.get("/v1/approvals", {
        query: { status: "pending", limit: 50, cursor: append ? cursor : null },
        minPosition,
      });
      loaded = append ? [...loaded, ...body.data] : body.data;
      cursor = body.next_cursor;
      total = body.total_count;
      render();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(list, h("p", { class: "error" }, error.describe()));
    }
  }

  more.addEventListener("click", () => load({ append: true }));
  const unsubscribe = ctx.workspace.subscribe((event) => {
    if (family(event.type) !== "approval") return;
    // Several approvals often move at once (a run asking for two tools): one reload.
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => load({ minPosition: event.position }), 150);
  });
  // The queue must cover everything up to where the workspace stream starts.
  ctx.workspace.ready.then(() => load({ minPosition: ctx.workspace.position() }));
  return {
    title: "Approvals",
    unmount() {
      unsubscribe();
      clearTimeout(reloadTimer);
    },
  };
}
