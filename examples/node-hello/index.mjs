// Hello-world function for the nodejs runtime (handler `index.handler`).

// Module-level state lives as long as the instance, so warm invocations see the previous count.
let calls = 0;

export const handler = async (event) => {
  calls += 1;
  console.log(`hello called ${calls} times`);
  const name = event?.name ?? 'world'; // the event may be any JSON value, not only an object
  return { message: `Hello, ${name}!`, count: calls, runtime: 'nodejs' };
};
