// Delivers a Cron Trigger to the Python Worker bound as TARGET, as Cloudflare would:
// Fetcher#scheduled() (workerd, experimental flag service_binding_extra_handlers).
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const scheduledTime = Number(url.searchParams.get("at"));
    const cron = url.searchParams.get("cron") || "*/5 * * * *";
    const result = await env.TARGET.scheduled({ scheduledTime, cron });
    return Response.json({ outcome: result.outcome, noRetry: result.noRetry });
  },
};
