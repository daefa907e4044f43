// Connectors and outbound webhook endpoints (API.md §7): health, last failures, and the
// check / refresh buttons for admins. A server without these routes answers 404: the view
// says so rather than showing an error.

import { ApiError } from "./api.js";
import { announce, count, facts, h, replace, shortId, statusBadge, timeEl } from "./dom.js";

async function listOrMissing(api, path) {
  try {
    const page = await api.get(path, { query: { limit: 200 } });
    return { items: Array.isArray(page) ? page : page.data || [] };
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status === 404) return { missing: true };
    return { error };
  }
}

export function connectorsView(main, ctx) {
  const connectorsBox = h("div", { class: "cards" }, h("p", { class: "muted" }, "Loading…"));
  const endpointsBox = h("div", { class: "cards" }, h("p", { class: "muted" }, "Loading…"));
  main.append(
    h(
      "section",
      { "aria-labelledby": "connectors-h" },
      h("h1", { id: "connectors-h", tabindex: "-1" }, "Connectors and webhooks"),
      h(
        "section",
        { "aria-labelledby": "conn-h" },
        h("h2", { id: "conn-h" }, "Connectors"),
        connectorsBox,
      ),
      h(
        "section",
        { "aria-labelledby": "hooks-h" },
        h("h2", { id: "hooks-h" }, "Outbound webhook endpoints"),
        endpointsBox,
      ),
    ),
  );

  function unavailable(box, what, path) {
    replace(
      box,
      h(
        "p",
        { class: "empty" },
        `There are no ${what}: this server does not offer them yet (GET ${path} answered 404).`,
      ),
    );
  }

  function connectorCard(connector) {
    const failures = connector.failures || [];
    const status = h("p", { role: "status", class: "card-status" });
    const run = (what) => async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try {
        await ctx.api.post(`/v1/connectors/${connector.id}/${what}`, {});
        announce(`${what === "check" ? "Checked" : "Refreshed"} ${connector.name}`);
        await load();
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        status.textContent = error.describe();
        button.disabled = false;
      }
    };
    return h(
      "article",
      { class: "connector", "aria-labelledby": `conn-${connector.id}` },
      h("h3", { id: `conn-${connector.id}` }, `${connector.name} `, statusBadge(connector.status)),
      facts([
        ["kind", connector.kind],
        ["last check", connector.last_check_at ? timeEl(connector.last_check_at) : "never"],
        ["consecutive failures", count(connector.consecutive_failures)],
        ["failure summary", connector.failure_summary],
        ["webhook url", connector.webhook_url],
      ]),
      failures.length
        ? h(
            "details",
            {},
            h("summary", {}, `Last failures (${failures.length})`),
            h(
              "ul",
              { class: "failures" },
              failures.map((f) => h("li", {}, timeEl(f.at), ` ${f.code}: ${f.message}`)),
            ),
          )
        : null,
      ctx.roles.canManageConnectors()
        ? h(
            "div",
            { class: "resolve-row" },
            h("button", { type: "button", onclick: run("check") }, "Check now"),
            h("button", { type: "button", onclick: run("refresh") }, "Refresh token"),
          )
        : null,
      status,
    );
  }

  function endpointCard(endpoint) {
    const deliveries = h("div");
    const show = async () => {
      try {
        const page = await ctx.api.get(`/v1/webhook-endpoints/${endpoint.id}/deliveries`, {
          query: { limit: 20 },
        });
        replace(
          deliveries,
          page.data.length
            ? h(
                "table",
                {},
                h("caption", {}, "Last deliveries"),
                h(
                  "thead",
                  {},
                  h(
                    "tr",
                    {},
                    ["At", "Event", "Attempt", "Status", "HTTP", "Next attempt"].map((t) =>
                      h("th", { scope: "col" }, t),
                    ),
                  ),
                ),
                h(
                  "tbody",
                  {},
                  page.data.map((d) =>
                    h(
                      "tr",
                      {},
                      h("td", {}, timeEl(d.at)),
                      h("td", {}, d.type),
                      h("td", { class: "num" }, d.attempt),
                      h("td", {}, statusBadge(d.status)),
                      h("td", { class: "num" }, d.response_status ?? "—"),
                      h("td", {}, d.next_attempt_at ? timeEl(d.next_attempt_at) : "—"),
                    ),
                  ),
                ),
              )
            : h("p", { class: "muted" }, "No deliveries yet."),
        );
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        replace(deliveries, h("p", { class: "error" }, error.describe()));
      }
    };
    return h(
      "article",
      { class: "endpoint", "aria-labelledby": `hook-${endpoint.id}` },
      h(
        "h3",
        { id: `hook-${endpoint.id}` },
        `${endpoint.url} `,
        endpoint.status ? statusBadge(endpoint.status) : null,
      ),
      facts([
        ["id", shortId(endpoint.id)],
        ["events", (endpoint.events || []).join(", ")],
        ["description", endpoint.description],
        ["created", endpoint.created_at ? timeEl(endpoint.created_at) : null],
      ]),
      h("button", { type: "button", onclick: show }, "Show last deliveries"),
      deliveries,
    );
  }

  async function load() {
    const [connectors, endpoints] = await Promise.all([
      listOrMissing(ctx.api, "/v1/connectors"),
      listOrMissing(ctx.api, "/v1/webhook-endpoints"),
    ]);
    if (connectors.missing) unavailable(connectorsBox, "connectors", "/v1/connectors");
    else if (connectors.error)
      replace(connectorsBox, h("p", { class: "error" }, connectors.error.describe()));
    else if (!connectors.items.length)
      replace(connectorsBox, h("p", { class: "empty" }, "There are no connectors."));
    else replace(connectorsBox, connectors.items.map(connectorCard));

    if (endpoints.missing) unavailable(endpointsBox, "webhook endpoints", "/v1/webhook-endpoints");
    else if (endpoints.error)
      replace(endpointsBox, h("p", { class: "error" }, endpoints.error.describe()));
    else if (!endpoints.items.length)
      replace(endpointsBox, h("p", { class: "empty" }, "There are no webhook endpoints."));
    else replace(endpointsBox, endpoints.items.map(endpointCard));
  }

  const unsubscribe = ctx.workspace.subscribe((event) => {
    if (event.type.startsWith("connector.")) load();
  });
  load();
  return { title: "Connectors", unmount: unsubscribe };
}
