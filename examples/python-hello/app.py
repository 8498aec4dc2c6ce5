"""Hello-world function for the python3 runtime (handler `app.handler`)."""

# Module-level state lives as long as the instance, so warm invocations see the previous count.
calls = 0


def handler(event, context):
    global calls
    calls += 1
    print(f"hello called {calls} times")
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return {"message": f"Hello, {name}!", "count": calls, "runtime": "python3"}
