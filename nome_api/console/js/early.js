// Loaded on its own, ahead of the rest of the console: on a run's page with a key already in
// this tab, the run and its first events are asked for while the page's code still loads
// (on a 50,000-event run that first page is most of the time to the first screen).

export const KEY = "nome.console.key";
export const RUN_ROUTE = /^#\/runs\/([0-9a-f-]{36})$/;

let early = null;
const key = sessionStorage.getItem(KEY);
const run = RUN_ROUTE.exec(location.hash);
if (key && run) {
  const get = (path) =>
    fetch(path, {
      headers: { Authorization: `Bearer ${key}`, "X-Nome-Client-Surface": "console" },
      cache: "no-store",
    });
  const id = run[1];
  const responses = Promise.all([
    get(`/v1/runs/${id}`),
    get(`/v1/runs/${id}/events?after=0&limit=200`),
  ]);
  responses.catch(() => {}); // the run's view reports failures when it takes these
  early = { id, responses };
}

/** The responses asked for early for run `id`, once; null if there are none. */
export function takeEarly(id) {
  const taken = early;
  early = null;
  return taken && taken.id === id ? taken.responses : null;
}
