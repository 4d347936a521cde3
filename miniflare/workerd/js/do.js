// JavaScript Durable Object test double, bound to the Python worker as WORKFLOW_DO.
// Every request: counts calls in durable storage and echoes what it received as JSON.
//   POST /status       -> echo + stored counter
//   POST /put?key=K    -> storage.put(K, body text)
//   GET  /get?key=K    -> {"value": storage.get(K) ?? null}
//   GET  /list         -> {"entries": {...}} (storage.list())
//   POST /fail         -> throws (to see what the Python caller gets)
//   GET  /status500    -> 500 response
export class WorkflowDO {
  constructor(state, env) {
    this.state = state;
    this.storage = state.storage;
  }
  async fetch(request) {
    const url = new URL(request.url);
    const body = request.method === "GET" || request.method === "HEAD" ? null : await request.text();
    const calls = ((await this.storage.get("calls")) ?? 0) + 1;
    await this.storage.put("calls", calls);
    const json = (obj, status = 200) =>
      new Response(JSON.stringify(obj), { status, headers: { "content-type": "application/json" } });
    switch (url.pathname) {
      case "/put":
        await this.storage.put(url.searchParams.get("key"), body);
        return json({ ok: true, calls });
      case "/get":
        return json({ value: (await this.storage.get(url.searchParams.get("key"))) ?? null, calls });
      case "/list":
        return json({ entries: Object.fromEntries(await this.storage.list()), calls });
      case "/fail":
        throw new Error("WorkflowDO: requested failure");
      case "/status500":
        return json({ error: "requested 500" }, 500);
      default:
        return json({
          id: this.state.id.toString(),
          name: this.state.id.name ?? null,
          method: request.method,
          url: request.url,
          contentType: request.headers.get("content-type"),
          xTest: request.headers.get("x-test"),
          body,
          calls,
        });
    }
  }
}

export default {
  async fetch() {
    return new Response("do service: use the WORKFLOW_DO binding", { status: 404 });
  },
};
