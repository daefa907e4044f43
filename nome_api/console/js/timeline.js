// A run's page: its facts, the actions its viewer's roles allow (cancel, replay, verify,
// audit verify, export), its pending approvals, and its timeline: every event, live over
// SSE, in a virtualised list paged by seq from GET /v1/runs/{id}/events.

import { pendingOfRun, approvalCard } from "./approvals.js";
import { ApiError, ENDED, LiveStream, TERMINAL } from "./api.js";
import {
  announce,
  between,
  bytes,
  count,
  duration,
  facts,
  h,
  json,
  plural,
  replace,
  shortId,
  statusBadge,
  timeEl,
} from "./dom.js";
import { takeEarly } from "./early.js";
import { details, family, fillRow } from "./events.js";
import { VirtualList } from "./virtual.js";

const PAGE = 200; // the events route's largest page
const FETCHES_AT_ONCE = 2;
// Loaded events are kept up to this many; pages far from the view are dropped first.
const KEEP_EVENTS = 30000;

/** The events of one run by seq: pages fetched on demand, live events added as they come. */
export class RunEvents {
  constructor(api, runId, onChange) {
    this.api = api;
    this.runId = runId;
    this.onChange = onChange;
    this.events = new Map();
    this.receipts = new Map();
    this.total = 0;
    this.inflight = new Set();
    this.fetchedAt = new Map();
    this.wanted = [0, 0];
  }

  get(seq) {
    return this.events.get(seq);
  }

  put(event) {
    this.events.set(event.seq, event);
    if (event.type === "tool.completed" && event.data?.receipt) {
      this.receipts.set(event.data.call_id, event.data.receipt);
    }
    if (event.seq > this.total) this.total = event.seq;
  }

  async page(index) {
    this.inflight.add(index);
    this.fetchedAt.set(index, performance.now());
    try {
      const body = await this.api.get(`/v1/runs/${this.runId}/events`, {
        query: { after: index * PAGE, limit: PAGE },
      });
      for (const event of body.data) this.put(event);
      if (body.total_count > this.total) this.total = body.total_count;
    } finally {
      this.inflight.delete(index);
    }
    this.onChange();
    this.fetchMissing();
  }

  /** Ask for the events of seqs first..last (1-based); fetches what is missing. */
  want(first, last) {
    this.wanted = [first, last];
    this.fetchMissing();
  }

  fetchMissing() {
    const [first, last] = this.wanted;
    if (last < first) return;
    for (
      let index = Math.floor((first - 1) / PAGE);
      index <= Math.floor((last - 1) / PAGE);
      index++
    ) {
      if (this.inflight.size >= FETCHES_AT_ONCE) return;
      if (this.inflight.has(index)) continue;
      // A page fetched a moment ago that still has holes is not asked for again at once.
      if (performance.now() - (this.fetchedAt.get(index) ?? -1e9) < 1000) continue;
      const from = Math.max(first, index * PAGE + 1);
      const to = Math.min(last, (index + 1) * PAGE);
      for (let seq = from; seq <= to; seq++) {
        if (!this.events.has(seq)) {
          this.page(index).catch((error) => {
            if (!(error instanceof ApiError)) throw error;
            announce(error.describe(), { error: true });
          });
          break;
        }
      }
    }
    this.evict();
  }

  evict() {
    if (this.events.size <= KEEP_EVENTS) return;
    const centre = Math.floor((this.wanted[0] - 1) / PAGE);
    const pages = new Set([...this.events.keys()].map((seq) => Math.floor((seq - 1) / PAGE)));
    const farthest = [...pages].sort((a, b) => Math.abs(b - centre) - Math.abs(a - centre));
    for (const index of farthest) {
      if (this.events.size <= KEEP_EVENTS * 0.8) break;
      for (let seq = index * PAGE + 1; seq <= (index + 1) * PAGE; seq++) this.events.delete(seq);
    }
  }
}

async function firstData(api, id) {
  const early = takeEarly(id);
  if (early) {
    const [run, events] = await early;
    return [(await api.answer(run)).data, (await api.answer(events)).data];
  }
  return Promise.all([
    api.get(`/v1/runs/${id}`),
    api.get(`/v1/runs/${id}/events`, { query: { after: 0, limit: PAGE } }),
  ]);
}

export function runView(main, ctx, { id }) {
  let run = null;
  let stream = null;
  let unmounted = false;
  let follow = false;
  let refreshTimer = null;
  let firstScreen = false;
  let detailSeq = null;
  let replayList = null;
  // Aborts the replay's downloads when the page is left.
  const leaving = new AbortController();
  const approvalSlots = new Map();

  const heading = h("h1", { id: "run-h", tabindex: "-1" }, `Run ${shortId(id)}`);
  const factsBox = h("div", { class: "run-facts" });
  const actions = h("div", { class: "actions", "aria-label": "Run actions", role: "group" });
  const results = h("div", { class: "results", "aria-live": "polite" });
  const pendingBox = h("section", {
    class: "pending-approvals",
    "aria-labelledby": "pending-h",
    hidden: true,
  });
  const liveState = h("span", { class: "live-state", role: "status" });
  const countLine = h("span", { class: "count-line" });
  const followBox = h("input", { type: "checkbox", id: "follow" });
  const seqInput = h("input", {
    type: "number",
    id: "goto-seq",
    min: "1",
    inputmode: "numeric",
    size: "8",
  });
  const detailBox = h(
    "div",
    { class: "detail-body" },
    h("p", { class: "muted" }, "Select an event to see its details."),
  );
  const replayBox = h("section", { class: "replay", "aria-labelledby": "replay-h", hidden: true });

  const events = new RunEvents(ctx.api, id, () => {
    list.setCount(events.total);
    list.refresh();
    updateCount();
    markFirstScreen();
    // The selection may have moved to a row whose page has just arrived.
    if (list.selected >= 0 && detailSeq !== list.selected + 1) showDetails(list.selected + 1);
  });
  const list = new VirtualList({
    label: "Run timeline",
    idPrefix: "ev",
    renderRow: (row, index) => fillRow(row, events.get(index + 1), index + 1),
    onVisible: (first, last) => events.want(first + 1, last + 1),
    onSelect: (index) => showDetails(index + 1),
    onUserScroll: () => {
      if (follow && !list.atEnd()) setFollow(false);
    },
  });

  main.append(
    h(
      "section",
      { class: "run", "aria-labelledby": "run-h" },
      h(
        "nav",
        { class: "crumbs", "aria-label": "Breadcrumb" },
        h("a", { href: "#/runs" }, "Runs"),
        " › ",
        shortId(id),
      ),
      heading,
      factsBox,
      actions,
      results,
      pendingBox,
      h(
        "section",
        { class: "timeline", "aria-labelledby": "timeline-h" },
        h(
          "div",
          { class: "timeline-bar" },
          h("h2", { id: "timeline-h" }, "Timeline"),
          countLine,
          liveState,
          h("label", { class: "inline" }, followBox, " Follow new events"),
          h(
            "button",
            { type: "button", onclick: () => list.select(0, { align: "start" }) },
            "First event",
          ),
          h("button", { type: "button", onclick: () => list.select(list.count - 1) }, "Last event"),
          h(
            "form",
            {
              class: "goto",
              onsubmit: (event) => {
                event.preventDefault();
                const seq = Number(seqInput.value);
                if (seq >= 1) list.select(seq - 1, { align: "center" });
                list.el.focus();
              },
            },
            h("label", { for: "goto-seq" }, "Go to seq"),
            seqInput,
            h("button", { type: "submit" }, "Go"),
          ),
        ),
        h(
          "div",
          { class: "timeline-body" },
          list.el,
          h(
            "aside",
            { class: "detail", "aria-labelledby": "detail-h" },
            h("h3", { id: "detail-h" }, "Event details"),
            detailBox,
          ),
        ),
      ),
      replayBox,
    ),
  );
  followBox.addEventListener("change", () => setFollow(followBox.checked));

  function setFollow(on) {
    follow = on;
    followBox.checked = on;
    if (on) list.scrollToEnd();
  }

  function markFirstScreen() {
    if (firstScreen || !events.get(1)) return;
    firstScreen = true;
    // After the rows are laid out and painted: what bench/console.py measures.
    requestAnimationFrame(() =>
      setTimeout(() => {
        performance.mark("nome:timeline-first-screen");
        list.el.dataset.firstScreen = "painted";
      }),
    );
  }

  function updateCount() {
    countLine.textContent = `${count(events.total)} events`;
  }

  function renderFacts() {
    if (!run) return;
    const usage = run.usage || {};
    replace(
      factsBox,
      facts([
        [
          "status",
          h(
            "span",
            {},
            statusBadge(run.status),
            run.awaiting_approval
              ? h("span", { class: "badge waiting" }, "awaiting approval")
              : null,
          ),
        ],
        ["run id", run.id],
        ["thread", h("a", { href: `#/runs?thread=${run.thread_id}` }, run.thread_id)],
        ["agent", ctx.agentName(run.agent_id)],
        ["tier", run.tier],
        ["created", timeEl(run.created_at)],
        ["started", run.started_at ? timeEl(run.started_at) : null],
        ["ended", run.ended_at ? timeEl(run.ended_at) : null],
        ["duration", duration(between(run.started_at, run.ended_at))],
        ["events", count(Math.max(run.event_count, events.total))],
        ["tokens in / out", `${count(usage.input_tokens)} / ${count(usage.output_tokens)}`],
        ["cost", plural(usage.credits, "credit")],
        ["error", run.error ? `${run.error.code}: ${run.error.message}` : null],
      ]),
    );
    renderActions();
  }

  function button(label, onclick, extra = {}) {
    return h("button", { type: "button", onclick, ...extra }, label);
  }

  function renderActions() {
    const roles = ctx.roles;
    const live = run && !ENDED.has(run.status);
    replace(
      actions,
      roles.canCancel() && live ? button("Cancel run", cancel, { class: "danger" }) : null,
      roles.canReplay() ? button("Replay", replay) : null,
      roles.canVerify() ? button("Verify", verify) : null,
      roles.canAudit() ? button("Audit verify", auditVerify) : null,
      roles.canAudit() ? button("Download export", download) : null,
    );
    actions.hidden = !actions.firstChild;
  }

  async function act(label, work) {
    try {
      await work();
    } catch (error) {
      if (error.name === "AbortError") return;
      if (!(error instanceof ApiError)) throw error;
      results.prepend(
        h("div", { class: "result bad" }, h("h3", {}, label), h("p", {}, error.describe())),
      );
      announce(`${label} failed: ${error.message}`, { error: true });
    }
  }

  function result(title, ok, ...body) {
    const box = h("div", { class: `result ${ok ? "good" : "bad"}` }, h("h3", {}, title), ...body);
    results.prepend(box);
    while (results.children.length > 4) results.lastChild.remove();
    return box;
  }

  function cancel() {
    if (!window.confirm(`Cancel run ${shortId(id)}?`)) return;
    act("Cancel", async () => {
      const { data } = await ctx.api.post(`/v1/runs/${id}/cancel`, {
        reason: "cancelled in the console",
      });
      run = data;
      renderFacts();
      announce("Run cancelled");
    });
  }

  function verify() {
    act("Verify", async () => {
      const { data } = await ctx.api.post(`/v1/runs/${id}/verify`, {});
      if (data.deterministic) {
        result(
          "Verify: deterministic",
          true,
          h(
            "p",
            {},
            `Re-executed the harness: ${count(data.events_compared)} events compared, ` +
              "no divergence.",
          ),
        );
        announce("Verify: deterministic");
        return;
      }
      const d = data.divergence || {};
      result(
        `Verify: diverged at seq ${d.seq}`,
        false,
        h(
          "p",
          {},
          `${count(data.events_compared)} events agreed; at seq ${d.seq} the log holds ` +
            "something the harness does not do again.",
        ),
        h(
          "div",
          { class: "diff" },
          h("div", {}, h("h4", {}, "Expected: what the harness does again"), json(d.expected)),
          h("div", {}, h("h4", {}, "Actual: what the log recorded"), json(d.actual)),
        ),
        d.seq
          ? button(`Show seq ${d.seq} in the timeline`, () => {
              list.select(d.seq - 1, { align: "center" });
              list.el.focus();
            })
          : null,
      );
      announce(`Verify: diverged at seq ${d.seq}`, { error: true });
    });
  }

  function auditVerify() {
    act("Audit verify", async () => {
      const data = await ctx.api.get("/v1/audit/verify", { query: { stream_id: id } });
      if (data.ok) {
        result(
          "Audit verify: hash chain intact",
          true,
          h(
            "p",
            {},
            `${count(data.events_checked)} events checked ` +
              `in ${plural(data.streams_checked, "stream")}.`,
          ),
        );
        announce("Audit verify: hash chain intact");
      } else {
        result(
          "Audit verify: hash chain broken",
          false,
          h("p", {}, `${count(data.events_checked)} events checked; first bad:`),
          json(data.first_bad),
        );
        announce("Audit verify: hash chain broken", { error: true });
      }
    });
  }

  function download() {
    act("Export", async () => {
      const blob = await ctx.api.blob("/v1/audit/export", { stream_id: id });
      const url = URL.createObjectURL(blob);
      const link = h("a", { href: url, download: `run-${id}.ndjson`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      result("Export downloaded", true, h("p", {}, `run-${id}.ndjson, ${bytes(blob.size)}.`));
      announce("Export downloaded");
    });
  }

  function replay() {
    const frames = [];
    const status = h("p", { role: "status" }, "Replaying…");
    replayList?.destroy();
    replayList = new VirtualList({
      label: "Replayed frames",
      idPrefix: "rp",
      renderRow: (row, index) => fillRow(row, frames[index], index + 1),
    });
    replace(
      replayBox,
      h("h2", { id: "replay-h" }, "Replay"),
      h(
        "p",
        { class: "muted" },
        "GET /v1/runs/{id}/replay: the recorded run as SSE, the same frames as the live stream.",
      ),
      status,
      replayList.el,
    );
    replayBox.hidden = false;
    replayBox.scrollIntoView({ block: "nearest" });
    let pending = 0;
    act("Replay", async () => {
      const body = await ctx.api.readSse(`/v1/runs/${id}/replay`, {
        signal: leaving.signal,
        onFrame: (frame) => {
          frames.push(JSON.parse(frame.data));
          if (!pending) {
            pending = requestAnimationFrame(() => {
              pending = 0;
              replayList.setCount(frames.length);
              replayList.refresh();
              status.textContent = `Replaying… ${count(frames.length)} frames`;
            });
          }
        },
      });
      cancelAnimationFrame(pending);
      replayList.setCount(frames.length);
      replayList.refresh();
      let same = "";
      if (run && ENDED.has(run.status)) {
        // The live stream of an ended run sends its whole log and closes: compare the bytes.
        const live = await ctx.api.readSse(`/v1/runs/${id}/stream`, { signal: leaving.signal });
        const identical = equalBytes(withoutComments(live), body);
        same = identical
          ? " Byte for byte identical to the live stream."
          : " It differs from the live stream!";
      }
      const size = bytes(body.length);
      status.textContent = `Replay complete: ${count(frames.length)} frames, ${size}.${same}`;
      replayBox.dataset.state = "done";
      announce(`Replay complete: ${count(frames.length)} frames`);
    });
  }

  function showDetails(seq) {
    const event = events.get(seq);
    if (!event) {
      detailSeq = null;
      replace(detailBox, h("p", { class: "muted" }, `Loading event ${count(seq)}…`));
      return;
    }
    detailSeq = seq;
    replace(
      detailBox,
      h(
        "h4",
        { class: `detail-type fam-${family(event.type)}` },
        `${event.type} · seq ${count(seq)}`,
      ),
      details(event, {
        receiptOf: (callId) => events.receipts.get(callId),
        approvalSlot: (approvalId) => {
          const slot = h(
            "div",
            { class: "approval-slot" },
            h("p", { class: "muted" }, "Loading its state…"),
          );
          approvalSlots.set(approvalId, slot);
          fillApproval(approvalId, slot);
          return slot;
        },
      }),
    );
  }

  async function fillApproval(approvalId, slot, minPosition) {
    try {
      const approval = await ctx.api.get(`/v1/approvals/${approvalId}`, { minPosition });
      replace(slot, approvalCard(approval, ctx, { showRun: false, onResolved: afterResolve }));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(slot, h("p", { class: "error" }, error.describe()));
    }
  }

  function afterResolve(_approval, position) {
    loadPending(position);
    ctx.refreshPendingCount(position);
  }

  async function loadPending(minPosition) {
    try {
      const pending = await pendingOfRun(ctx.api, id, minPosition);
      pendingBox.hidden = pending.length === 0;
      replace(
        pendingBox,
        h("h2", { id: "pending-h" }, `Waiting for approval (${pending.length})`),
        h(
          "div",
          { class: "cards" },
          pending.map((a) => approvalCard(a, ctx, { showRun: false, onResolved: afterResolve })),
        ),
      );
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
    }
  }

  function refreshRun(position) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(async () => {
      try {
        run = await ctx.api.get(`/v1/runs/${id}`, { minPosition: position });
        renderFacts();
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
      }
    }, 50);
  }

  function onLive(event) {
    events.put(event);
    list.setCount(events.total);
    list.refresh([event.seq - 1]);
    updateCount();
    if (follow) list.scrollToEnd();
    const kind = family(event.type);
    if (kind === "run" || kind === "approval") refreshRun(event.position);
    if (kind === "approval") {
      loadPending(event.position);
      for (const [approvalId, slot] of approvalSlots) {
        if (approvalId === event.data?.approval_id && slot.isConnected)
          fillApproval(approvalId, slot, event.position);
      }
    }
    if (event.type === "approval.requested") announce(`${event.data.tool} is waiting for approval`);
    if (event.type === "approval.resolved") announce(`Approval ${event.data.decision}`);
    if (TERMINAL.has(event.type)) announce(`Run ${event.type.split(".")[1]}`);
    if (list.selected === event.seq - 1) showDetails(event.seq);
  }

  async function start() {
    let first;
    try {
      [run, first] = await firstData(ctx.api, id);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(
        factsBox,
        h(
          "p",
          { class: "error" },
          error.status === 404 ? "There is no such run in this workspace." : error.describe(),
        ),
      );
      list.el.hidden = true;
      return;
    }
    if (unmounted) return;
    for (const event of first.data) events.put(event);
    events.total = Math.max(events.total, first.total_count);
    list.setCount(events.total);
    updateCount();
    renderFacts();
    markFirstScreen();
    ctx.agentsReady.then(renderFacts);
    if (run.awaiting_approval) loadPending();
    if (ENDED.has(run.status)) {
      liveState.textContent = "ended";
      return;
    }
    setFollow(true);
    stream = new LiveStream(ctx.api, `/v1/runs/${id}/stream`, {
      after: events.total,
      onEvent: onLive,
      until: (event) => TERMINAL.has(event.type),
      onState: (state) => {
        liveState.textContent = state;
      },
    });
    stream.start();
  }

  start();
  return {
    title: `Run ${shortId(id)}`,
    unmount() {
      unmounted = true;
      leaving.abort();
      if (stream) stream.stop();
      clearTimeout(refreshTimer);
      list.destroy();
      replayList?.destroy();
    },
  };
}

function withoutComments(body) {
  const text = new TextDecoder().decode(body);
  return new TextEncoder().encode(text.replaceAll(": keepalive\n\n", ""));
}

function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
