// A JavaScript Durable Object that answers like WorkflowExecutionDO (routes, status codes,
// JSON shapes), bound to the Python worker as WORKFLOW_DO: Python Durable Objects cannot run
// in this workerd, so the client path (create_durable_workflow(env.WORKFLOW_DO) → idFromName →
// stub.fetch) is exercised against this double with real DO storage.
//
// Orders of amount >= 1000 wait for an "approval" event; others complete at once. Every
// stored view carries `seen`: what the last /execute or /event request looked like on arrival
// (method, content-type, parsed body), so tests can check what the Python client sent.
const json = (obj, status = 200) =>
  new Response(JSON.stringify(obj), { status, headers: { "content-type": "application/json" } });
const error = (status, code, message) => json({ error: { code, message } }, status);

export class WorkflowExecutionDO {
  constructor(state) {
    this.storage = state.storage;
  }

  async fetch(request) {
    const url = new URL(request.url);
    const route = url.pathname;
    let body = null;
    if (request.method !== "GET") {
      const text = await request.text();
      try {
        body = text ? JSON.parse(text) : {};
      } catch (e) {
        return error(400, "invalid_request", `request body is not valid JSON: ${e.message}`);
      }
    }
    const seen = { method: request.method, contentType: request.headers.get("content-type"), body };
    const view = await this.storage.get("view");
    if (route === "/execute") {
      if (request.method !== "POST") return error(405, "method_not_allowed", "/execute accepts POST");
      if (typeof body.workflow !== "string" || typeof body.execution_id !== "string") {
        return error(400, "invalid_request", "invalid request body: workflow, execution_id required");
      }
      if (view) {
        if (view.workflow !== body.workflow) return error(409, "execution_conflict", "another workflow");
        return json({ execution: view, created: false });
      }
      const waiting = (body.input?.amount ?? 0) >= 1000;
      const fresh = {
        execution_id: body.execution_id,
        workflow: body.workflow,
        status: waiting ? "waiting" : "completed",
        settled: !waiting,
        waiting_for: waiting ? ["approval"] : [],
        input: body.input,
        seen,
      };
      await this.storage.put("view", fresh);
      return json({ execution: fresh, created: true }, 201);
    }
    if (!view) return error(404, "execution_not_found", "no execution with this id");
    switch (route) {
      case "/status":
        return json({ execution: view });
      case "/journal":
        return json({
          entries: [
            { op: 0, kind: "step", name: "reserve-inventory", status: "completed", attempt: 1, phase: "main" },
            { op: 1, kind: "step", name: "charge-card", status: "completed", attempt: 1, phase: "main" },
          ],
        });
      case "/result":
        if (!view.settled) return json({ result: { ...view, settled: false } });
        if (view.status === "completed") {
          return json({ result: { ...view, ok: true, value: { tracking: `trk-${view.input.order_id}` } } });
        }
        return json({
          result: { ...view, ok: false, error: { code: "cancelled", message: view.status }, journal: [] },
        });
      case "/cancel": {
        if (view.settled) return json({ execution: view, cancelled: false });
        const next = { ...view, status: "cancelled", settled: true, waiting_for: [], seen };
        await this.storage.put("view", next);
        return json({ execution: next, cancelled: true });
      }
      case "/event":
      case "/resume": {
        if (view.settled) return error(409, "execution_conflict", `the execution is ${view.status}`);
        const ids = (await this.storage.get("event-ids")) ?? [];
        if (body.id && ids.includes(body.id)) return json({ accepted: false, duplicate: true, event_id: body.id });
        await this.storage.put("event-ids", [...ids, body.id]);
        const done = body.type === "approval";
        const next = { ...view, status: done ? "completed" : view.status, settled: done, waiting_for: [], seen };
        await this.storage.put("view", next);
        return json({ accepted: true, duplicate: false, event_id: body.id ?? "generated" }, 202);
      }
      default:
        return error(404, "not_found", `no route '${route}'`);
    }
  }
}

export default {
  async fetch() {
    return new Response("use the WORKFLOW_DO binding", { status: 404 });
  },
};
