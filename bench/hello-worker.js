// The workerd reference for bench/run.sh: the same hello function as examples/python-hello and
// examples/c-hello (parse the JSON event, count warm calls, answer a small JSON object).
let calls = 0;

export default {
  async fetch(request) {
    calls++;
    let name = "world";
    try {
      const event = await request.json();
      if (event && typeof event.name === "string") name = event.name;
    } catch (_) {
      // not JSON: greet the world
    }
    const body = JSON.stringify({ message: `Hello, ${name}!`, count: calls, runtime: "workerd" });
    return new Response(body, { headers: { "content-type": "application/json" } });
  },
};
