// Probe of the REAL local Workflows engine (wrangler >= 4, Node 22), to check the
// fake in ../engine.mjs against it. Manual: see ../NOTES.md and probe.sh.
import { WorkflowEntrypoint } from "cloudflare:workers";

const trace = [];
let flaky = 0;
let nrTries = 0;
let dupTries = 0;

export class Probe extends WorkflowEntrypoint {
  async run(event, step) {
    const mode = event.payload.mode;
    const out = {};
    if (mode === "steps") {
      out.flaky = await step.do("flaky", { retries: { limit: 2, delay: 0, backoff: "constant" } }, async (ctx) => {
        flaky += 1;
        trace.push({ s: "flaky", ctx });
        if (flaky < 2) throw new Error("flaky fail");
        return { attempt: ctx.attempt, t: [1, 2] };
      });
      try {
        await step.do("badcfg", { retries: { limit: 1, delay: 0, jitter: 0.5 } }, async () => 1);
        out.badcfg = "accepted";
      } catch (e) { out.badcfg = { name: e.name, message: e.message }; }
      try {
        await step.do("strnum", { retries: { limit: 1, delay: "0 seconds" }, timeout: "5 seconds" }, async () => 1);
        out.strnum = "ok";
      } catch (e) { out.strnum = { name: e.name, message: e.message }; }
      try {
        await step.do("nr", { retries: { limit: 3, delay: 0, backoff: "constant" } }, async () => {
          nrTries += 1;
          const e = new Error("stop now");
          e.name = "NonRetryableError";
          throw e;
        });
      } catch (e) { out.nr = { name: e.name, message: e.message, tries: nrTries }; }
      out.dup1 = await step.do("dup", async () => ++dupTries);
      out.dup2 = await step.do("dup", async () => ++dupTries);
      const t0 = Date.now();
      await step.sleep("nap", "1 second");
      out.sleptMs = Date.now() - t0;
      out.ev = await step.waitForEvent("early", { type: "early", timeout: "30 seconds" });
      try {
        await step.waitForEvent("late", { type: "never", timeout: "1 second" });
      } catch (e) { out.waitTimeout = { name: e.name, message: e.message }; }
      try {
        const big = await step.do("big", async () => "x".repeat(1100000));
        out.big = `accepted ${big.length} chars`;
      } catch (e) { out.big = { name: e.name, message: e.message }; }
      out.trace = trace;
      return out;
    }
    if (mode === "wait") {
      const ev = await step.waitForEvent("w", { type: "go", timeout: "1 minute" });
      return ev.payload;
    }
    if (mode === "fail") {
      await step.do("boom", { retries: { limit: 0, delay: 0 } }, async () => { throw new Error("it broke"); });
    }
    return out;
  }
}

async function poll(inst, want, ms = 15000) {
  const seen = [];
  const t0 = Date.now();
  for (;;) {
    const s = await inst.status();
    if (seen.at(-1) !== s.status) seen.push(s.status);
    if (want.includes(s.status) || Date.now() - t0 > ms) return { s, seen };
    await new Promise((r) => setTimeout(r, 50));
  }
}

export default {
  async fetch(req, env) {
    const r = {};
    const sid = "steps-" + Date.now();
    const inst = await env.PROBE.create({ id: sid, params: { mode: "steps" } });
    try { await env.PROBE.create({ id: sid, params: {} }); r.dup = "accepted"; } catch (e) { r.dup = { name: e.name, message: e.message }; }
    try { await env.PROBE.create({ id: "-bad id", params: {} }); r.badid = "accepted"; } catch (e) { r.badid = { name: e.name, message: e.message }; }
    try { const g = await env.PROBE.get("nope-" + Date.now()); r.getMissing = await g.status(); } catch (e) { r.getMissing = { name: e.name, message: e.message }; }
    await new Promise((res) => setTimeout(res, 300));
    await inst.sendEvent({ type: "early", payload: { n: 1 } });
    r.steps = await poll(inst, ["complete", "errored", "terminated"], 30000);
    const w = await env.PROBE.create({ id: "wait-" + Date.now(), params: { mode: "wait" } });
    r.waitBefore = await poll(w, ["waiting"], 5000);
    await w.sendEvent({ type: "go", payload: { ok: true } });
    r.waitAfter = await poll(w, ["complete", "errored"], 5000);
    const f = await env.PROBE.create({ id: "fail-" + Date.now(), params: { mode: "fail" } });
    r.fail = await poll(f, ["complete", "errored"], 5000);
    const t = await env.PROBE.create({ id: "term-" + Date.now(), params: { mode: "wait" } });
    await poll(t, ["waiting"], 5000);
    await t.terminate();
    r.term = await poll(t, ["terminated"], 5000);
    try { await t.terminate(); r.term2 = "ok"; } catch (e) { r.term2 = { name: e.name, message: e.message }; }
    return Response.json(r);
  },
};
