// How one event envelope reads: a one-line summary for its timeline row, and the full view
// of the details pane (receipts, policy decisions, approvals, usage).

import { clock, count, duration, facts, h, json, plural, shortId, text, time } from "./dom.js";

const SUMMARY_CHARS = 240;

function oneLine(text) {
  const flat = String(text ?? "").replace(/\s*\n\s*/g, " ⏎ ");
  return flat.length > SUMMARY_CHARS ? `${flat.slice(0, SUMMARY_CHARS)}…` : flat;
}

function compact(value) {
  return oneLine(JSON.stringify(value));
}

export function family(type) {
  return type.split(".")[0];
}

/** The summary of an event, as a list of [text, className] pieces. */
export function summary(event) {
  const d = event.data || {};
  switch (event.type) {
    case "run.created":
      return [
        [oneLine(d.input), "text"],
        [` · ${d.agent?.provider || "agent"} ${d.agent?.model || ""} · ${d.tier}`, "muted"],
      ];
    case "run.started":
      return [[`model ${d.model}`, "muted"]];
    case "message.delta":
      return [[oneLine(d.text), "text"]];
    case "message.completed":
      return [
        [`${d.role}: `, "muted"],
        [oneLine(d.content), "text"],
      ];
    case "tool.called":
      return [
        [d.tool, "strong"],
        [` ${compact(d.arguments)}`, "muted"],
        [` policy ${d.policy?.decision}`, `decision-${d.policy?.decision}`],
        [` (${d.policy?.rule}, v${d.policy?.version ?? "?"})`, "muted"],
      ];
    case "tool.completed": {
      const r = d.receipt || {};
      const outcome = r.status === "ok" ? compact(r.result) : r.error || "";
      return [
        [`receipt ${r.status}`, `receipt-${r.status}`],
        [` ${r.tool} · ${duration(r.duration_ms)} `, "muted"],
        [oneLine(outcome), "text"],
      ];
    }
    case "approval.requested":
      return [
        [`${d.tool} needs approval`, "strong"],
        [` (${d.tier}) · expires ${time(d.expires_at)} `, "muted"],
        [compact(d.arguments), "muted"],
      ];
    case "approval.resolved":
      return [
        [d.decision, `decision-${d.decision}`],
        [` by ${shortId(d.by)}`, "muted"],
        [d.reason ? ` — ${oneLine(d.reason)}` : "", "text"],
      ];
    case "run.completed":
      return [
        [
          `${count(d.usage?.input_tokens)} in / ${count(d.usage?.output_tokens)} out tokens · ` +
            plural(d.usage?.credits, "credit"),
          "strong",
        ],
      ];
    case "run.failed":
      return [[`${d.error?.code}: ${oneLine(d.error?.message)}`, "decision-deny"]];
    case "run.cancelled":
      return [[`by ${shortId(d.by)}${d.reason ? ` — ${oneLine(d.reason)}` : ""}`, "muted"]];
    default:
      return [[compact(d), "muted"]];
  }
}

/** Fill a timeline row for `event`, or a placeholder while its page loads. */
export function fillRow(row, event, seq) {
  if (!event) {
    row.className = "vrow loading";
    row.append(
      h("span", { class: "seq" }, count(seq)),
      h("span", { class: "pending" }, "loading…"),
    );
    return;
  }
  row.className = `vrow fam-${family(event.type)}`;
  row.append(
    h("span", { class: "seq" }, count(event.seq)),
    h("span", { class: "at" }, clock(event.at)),
    h("span", { class: "type" }, event.type),
    h(
      "span",
      { class: "sum" },
      summary(event).map(([text, cls]) => h("span", { class: cls }, text)),
    ),
  );
}

function receiptView(receipt) {
  return h(
    "section",
    { class: "receipt", "aria-label": "Tool receipt" },
    h("h4", {}, "Receipt"),
    facts([
      ["status", receipt.status],
      ["tool", receipt.tool],
      ["receipt id", receipt.id],
      ["call id", receipt.call_id],
      ["started", time(receipt.started_at, { ms: true })],
      ["finished", time(receipt.finished_at, { ms: true })],
      ["duration", duration(receipt.duration_ms)],
      ["policy version", receipt.policy_version],
      ["approval", receipt.approval_id],
      ["arguments sha256", receipt.arguments_sha256],
      ["result sha256", receipt.result_sha256],
      ["error", receipt.error],
    ]),
    receipt.result !== null && receipt.result !== undefined ? h("h5", {}, "Result") : null,
    receipt.result !== null && receipt.result !== undefined ? json(receipt.result) : null,
  );
}

/**
 * The details of one event. `receiptOf(callId)` finds a loaded receipt for a call;
 * `approvalSlot(approvalId)` gives an element that shows the approval's current state.
 */
export function details(event, { receiptOf, approvalSlot } = {}) {
  const d = event.data || {};
  const parts = [
    facts([
      ["seq", count(event.seq)],
      ["at", time(event.at, { ms: true })],
      ["position", event.position],
      ["event id", event.id],
      ["work item", event.work_item_id],
      ["hash", event.receipt?.hash],
      ["previous hash", event.receipt?.prev_hash || "— (first event)"],
    ]),
  ];
  switch (event.type) {
    case "tool.called": {
      parts.push(
        h("h4", {}, "Call"),
        facts([
          ["tool", d.tool],
          ["call id", d.call_id],
          ["policy decision", d.policy?.decision],
          ["policy rule", d.policy?.rule],
          ["policy version", d.policy?.version],
        ]),
        h("h5", {}, "Arguments"),
        json(d.arguments),
      );
      const receipt = receiptOf?.(d.call_id);
      parts.push(
        receipt ? receiptView(receipt) : h("p", { class: "muted" }, "Its receipt is not loaded."),
      );
      break;
    }
    case "tool.completed":
      parts.push(receiptView(d.receipt || {}));
      break;
    case "approval.requested":
      parts.push(
        h("h4", {}, "Approval"),
        facts([
          ["tool", d.tool],
          ["tier", d.tier],
          ["expires", time(d.expires_at)],
        ]),
        json(d.arguments),
        approvalSlot ? approvalSlot(d.approval_id) : null,
      );
      break;
    case "run.completed":
      parts.push(
        h("h4", {}, "Usage and cost"),
        facts([
          ["input tokens", count(d.usage?.input_tokens)],
          ["output tokens", count(d.usage?.output_tokens)],
          ["credits", count(d.usage?.credits)],
        ]),
        h("h5", {}, "Output"),
        text(d.output),
      );
      break;
    case "message.delta":
    case "message.completed":
      parts.push(text(d.text ?? d.content));
      break;
    case "run.created":
      parts.push(h("h4", {}, "Input"), text(d.input));
      break;
    default:
      break;
  }
  parts.push(h("details", { class: "raw" }, h("summary", {}, "Raw envelope"), json(event)));
  return parts;
}
