// nimbus nodejs runtime shim.
//
// Started by the daemon as `node bootstrap.mjs` with cwd = the function's code directory and the
// channel socket on fd NIMBUS_CHANNEL_FD (see docs/internals/channel.md). It loads the handler named
// by _HANDLER, sends READY, then answers INVOKE frames one at a time with RESPONSE or ERROR,
// behaving like the AWS Lambda Node.js runtime as far as user code can tell.
//
// Exit status: 0 when the daemon closes the channel; 1 after an INIT_ERROR, after an uncaught
// exception or unhandled rejection (reported first as the in-flight invocation's ERROR), or on a
// broken channel.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import util from 'node:util';
import { pathToFileURL } from 'node:url';

const FRAME_READY = 1;
const FRAME_INVOKE = 2;
const FRAME_RESPONSE = 3;
const FRAME_ERROR = 4;
const FRAME_FATAL_ERROR = 6;
const FRAME_INIT_ERROR = 5;
const FRAME_CALL = 7;
const FRAME_CALL_RESULT = 8;

// Largest frame body the daemon accepts (type byte included); anything bigger kills the instance.
const MAX_FRAME = 6 * 1024 * 1024 + 64 * 1024;
// Lambda's limit for a synchronous response; above it the caller gets Function.ResponseSizeTooLarge.
const MAX_RESPONSE = 6 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Channel framing

function packStr(s, limit = 0xffff) {
  let raw = Buffer.from(String(s), 'utf8');
  if (raw.length > limit) raw = raw.subarray(0, limit);
  const out = Buffer.allocUnsafe(2 + raw.length);
  out.writeUInt16LE(raw.length, 0);
  raw.copy(out, 2);
  return out;
}

class ProtocolError extends Error {}

// Reads the strings of an INVOKE body in order.
class BodyReader {
  constructor(buf, off) {
    this.buf = buf;
    this.off = off;
  }

  str() {
    if (this.off + 2 > this.buf.length) throw new ProtocolError('string header past end of frame');
    const n = this.buf.readUInt16LE(this.off);
    const start = this.off + 2;
    if (start + n > this.buf.length) throw new ProtocolError('string runs past end of frame');
    this.off = start + n;
    return this.buf.toString('utf8', start, start + n);
  }

  rest() {
    return this.buf.subarray(this.off);
  }
}

// Splits the incoming byte stream into frames. Chunks are kept in a list and joined once per
// frame, so a large event arriving in many reads is copied only once.
class FrameReader {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.chunks = [];
    this.size = 0;
  }

  push(chunk) {
    this.chunks.push(chunk);
    this.size += chunk.length;
    for (;;) {
      if (this.size < 4) return;
      const head = this.chunks[0].length >= 4 ? this.chunks[0] : this.join();
      const len = head.readUInt32LE(0);
      if (len === 0 || len > MAX_FRAME) throw new ProtocolError(`bad frame length ${len}`);
      if (this.size < 4 + len) return;
      const all = this.join();
      const frame = all.subarray(4, 4 + len);
      const rest = all.subarray(4 + len);
      this.chunks = rest.length ? [rest] : [];
      this.size = rest.length;
      this.onFrame(frame[0], frame.subarray(1));
    }
  }

  join() {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.size)];
    return this.chunks[0];
  }
}

function writeFrame(type, ...parts) {
  const bodyLen = 1 + parts.reduce((n, p) => n + p.length, 0);
  const head = Buffer.allocUnsafe(5);
  head.writeUInt32LE(bodyLen, 0);
  head[4] = type;
  return new Promise((resolve) => channel.write(Buffer.concat([head, ...parts]), () => resolve()));
}

// ---------------------------------------------------------------------------------------------
// Errors

// A failure with a Lambda error type of our choosing (Runtime.*), as opposed to a user's error.
class RuntimeFault extends Error {
  constructor(type, message, cause) {
    super(message);
    this.type = type;
    this.cause = cause;
  }
}

// The Lambda error document for any thrown value. Node's runtime calls the stack "trace";
// nimbus clients read "stackTrace", so both carry the same lines.
function errorDoc(err) {
  if (err instanceof RuntimeFault) {
    const trace = stackLines(err.cause);
    return { errorType: err.type, errorMessage: err.message, trace, stackTrace: trace };
  }
  if (err instanceof Error || util.types.isNativeError(err)) {
    const trace = stackLines(err);
    return { errorType: String(err.name), errorMessage: String(err.message), trace, stackTrace: trace };
  }
  // throw 'text', callback(42), reject({...}): Lambda reports the typeof as the type.
  return { errorType: typeof err, errorMessage: stringify(err), trace: [], stackTrace: [] };
}

function stringify(value) {
  try {
    if (value instanceof Error) return `${value.name}: ${value.message}`;
    return typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

function stackLines(err) {
  try {
    return typeof err?.stack === 'string' ? err.stack.split('\n') : [];
  } catch {
    return [];
  }
}

function encodeErrorDoc(doc) {
  let raw = Buffer.from(JSON.stringify(doc), 'utf8');
  if (raw.length > MAX_RESPONSE) {
    const trace = doc.trace.slice(0, 50);
    const errorMessage = `${doc.errorMessage.slice(0, 4096)} ... (truncated)`;
    doc = { ...doc, errorMessage, trace, stackTrace: trace };
    raw = Buffer.from(JSON.stringify(doc), 'utf8');
  }
  return raw;
}

// ---------------------------------------------------------------------------------------------
// Logging: console.* lines in Lambda's text format, `timestamp \t request id \t LEVEL \t message`.

let currentRequestId; // undefined outside an invocation, printed as such (like Lambda does)

function patchConsole() {
  const emit = (stream, level) => (...args) => {
    stream.write(`${new Date().toISOString()}\t${currentRequestId}\t${level}\t${util.format(...args)}\n`);
  };
  console.trace = emit(process.stdout, 'TRACE');
  console.debug = emit(process.stdout, 'DEBUG');
  console.info = emit(process.stdout, 'INFO');
  console.log = emit(process.stdout, 'INFO');
  console.warn = emit(process.stderr, 'WARN');
  console.error = emit(process.stderr, 'ERROR');
}

// ---------------------------------------------------------------------------------------------
// Loading the handler

// The nearest package.json above `dir` says whether .js files are ES modules.
function packageTypeIsModule(dir) {
  for (;;) {
    try {
      return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).type === 'module';
    } catch (e) {
      if (e.code !== 'ENOENT') return false;
    }
    const parent = path.dirname(dir);
    if (parent === dir) return false;
    dir = parent;
  }
}

async function loadHandler(taskRoot, spec) {
  // "dir/sub/file.export.nested": the directory part may contain dots, the file name may not.
  const base = path.basename(spec);
  const dir = spec.slice(0, spec.length - base.length);
  const dot = base.indexOf('.');
  if (dot <= 0 || dot === base.length - 1) {
    throw new RuntimeFault('Runtime.MalformedHandlerName', 'Bad handler');
  }
  const moduleName = base.slice(0, dot);
  const exportPath = base.slice(dot + 1).split('.');

  const stem = path.resolve(taskRoot, dir, moduleName);
  const isFile = (f) => fs.statSync(f, { throwIfNoEntry: false })?.isFile();
  const file = ['.js', '.mjs', '.cjs'].map((ext) => stem + ext).find(isFile);
  if (!file) {
    throw new RuntimeFault('Runtime.ImportModuleError', `Error: Cannot find module '${dir}${moduleName}'`);
  }

  let ns;
  try {
    ns = await import(pathToFileURL(file).href);
  } catch (e) {
    const type = e instanceof SyntaxError ? 'Runtime.UserCodeSyntaxError' : 'Runtime.ImportModuleError';
    throw new RuntimeFault(type, stringify(e), e);
  }

  // import() of a CommonJS file yields a namespace whose `default` is module.exports, and whose
  // named exports are only what Node's static analysis found; module.exports is the truth there.
  const isCjs = file.endsWith('.cjs') || (file.endsWith('.js') && !packageTypeIsModule(path.dirname(file)));
  const root = isCjs ? ns.default : ns;
  const handler = exportPath.reduce((obj, key) => (obj == null ? undefined : obj[key]), root);
  if (handler === undefined || handler === null) {
    throw new RuntimeFault('Runtime.HandlerNotFound', `${spec} is undefined or not exported`);
  }
  if (typeof handler !== 'function') {
    throw new RuntimeFault('Runtime.HandlerNotFound', `${spec} is not a function`);
  }
  return handler;
}

// ---------------------------------------------------------------------------------------------
// Invocations

const env = process.env;
const staticContext = {
  functionName: env.AWS_LAMBDA_FUNCTION_NAME,
  functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
  memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
  logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
  logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
};

let handler;
let ready = false;
let current = null; // the invocation in flight: { requestId, finish(err, result), deferred }

function sendResult(requestId, result) {
  const rid = packStr(requestId);
  let raw;
  try {
    const text = JSON.stringify(result === undefined ? null : result);
    // JSON.stringify returns undefined for a function or symbol result; Lambda sends null then.
    raw = Buffer.from(text === undefined ? 'null' : text, 'utf8');
  } catch (e) {
    const message = `Unable to stringify response body: ${e.message}`;
    return sendError(requestId, new RuntimeFault('Runtime.MarshalError', message));
  }
  if (raw.length > MAX_RESPONSE) {
    const message = `Response payload size (${raw.length} bytes) exceeded maximum allowed payload size ` +
      `(${MAX_RESPONSE} bytes).`;
    return sendError(requestId, new RuntimeFault('Function.ResponseSizeTooLarge', message));
  }
  return writeFrame(FRAME_RESPONSE, rid, raw);
}

// fatal: the process exits after this answer, so the daemon must not hand it more work.
function sendError(requestId, err, fatal = false) {
  const doc = errorDoc(err);
  console.error(`Invoke Error \t${JSON.stringify(doc)}`);
  return writeFrame(fatal ? FRAME_FATAL_ERROR : FRAME_ERROR, packStr(requestId),
    packStr(doc.errorType, 1024), encodeErrorDoc(doc));
}

function parseJsonField(raw, what) {
  try {
    return JSON.parse(raw);
  } catch (e) {
    throw new RuntimeFault('Runtime.UnmarshalError', `Unable to parse ${what} as JSON: ${e.message}`);
  }
}

function startInvocation(body) {
  if (body.length < 8) throw new ProtocolError('INVOKE frame too short');
  const deadlineMs = Number(body.readBigUInt64LE(0));
  const r = new BodyReader(body, 8);
  const requestId = r.str();
  const invokedFunctionArn = r.str();
  const traceId = r.str();
  const clientContextText = r.str();
  const payload = r.rest();

  currentRequestId = requestId;
  if (traceId) env._X_AMZN_TRACE_ID = traceId;
  else delete env._X_AMZN_TRACE_ID;

  // Exactly one answer per invocation: whichever of promise, callback, context.succeed/fail/done,
  // or the "event loop is empty" fallback comes first wins; later ones are ignored.
  const inv = { requestId, deferred: null };
  inv.finish = (err, result) => {
    if (current !== inv) return;
    // The frame is queued on the channel synchronously, so the instance is idle from here on.
    if (err != null) sendError(requestId, err);
    else sendResult(requestId, result);
    endInvocation();
  };
  current = inv;
  // While user code runs the channel must not keep the process alive, so that Node reports an
  // empty event loop ('beforeExit'); the daemon sends nothing until we answer.
  channel.unref();

  let event;
  let clientContext;
  try {
    event = payload.length ? parseJsonField(payload.toString('utf8'), 'event') : {};
    clientContext = clientContextText ? parseJsonField(clientContextText, 'client context') : undefined;
  } catch (e) {
    inv.finish(e);
    return;
  }

  let waitForEmptyLoop = true;
  const callback = (err, result) => {
    if (waitForEmptyLoop) inv.deferred = [err, result];
    else inv.finish(err, result);
  };
  const context = {
    ...staticContext,
    awsRequestId: requestId,
    invokedFunctionArn,
    identity: undefined,
    clientContext,
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyLoop;
    },
    set callbackWaitsForEmptyEventLoop(v) {
      waitForEmptyLoop = Boolean(v);
    },
    getRemainingTimeInMillis: () => Math.max(deadlineMs - Date.now(), 0),
    succeed: (result) => inv.finish(null, result),
    fail: (err) => inv.finish(err ?? 'handled'),
    done: (err, result) => inv.finish(err, result),
  };

  try {
    const ret = handler(event, context, callback);
    if (ret !== null && typeof ret?.then === 'function') {
      ret.then((result) => inv.finish(null, result), (err) => inv.finish(err ?? 'handled'));
    }
  } catch (e) {
    inv.finish(e);
  }
}

function endInvocation() {
  current = null;
  currentRequestId = undefined;
  // Calls still waiting: the daemon drops their answers now. They are forgotten, never
  // rejected, since a rejection nobody handles would crash the next invocation.
  calls.clear();
  channel.ref();
}

// ---------------------------------------------------------------------------------------------
// Calls to the platform (the `nimbus` package, runtimes/node/node_modules/nimbus): CALL frames,
// answered by CALL_RESULT frames matched by call id, so several may be outstanding.

const calls = new Map(); // call id -> resolve
let nextCallId = 0;

function callPlatform(op, target, attrs, body) {
  if (!current) return Promise.reject(new Error('nimbus calls work only while a handler runs'));
  nextCallId = (nextCallId + 1) >>> 0;
  const id = nextCallId;
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32LE(id, 0);
  const p = new Promise((resolve) => calls.set(id, resolve));
  // An answer is awaited: the channel must keep the process alive (and 'beforeExit' quiet).
  channel.ref();
  writeFrame(FRAME_CALL, head, packStr(op), packStr(target), packStr(attrs), body);
  return p;
}

function callResult(body) {
  if (body.length < 6) throw new ProtocolError('CALL_RESULT frame too short');
  const id = body.readUInt32LE(0);
  const status = body.readUInt16LE(4);
  const r = new BodyReader(body, 6);
  const code = r.str();
  const resolve = calls.get(id);
  if (!resolve) return; // its invocation ended
  calls.delete(id);
  if (calls.size === 0 && current) channel.unref();
  resolve({ status, code, body: Buffer.from(r.rest()) });
}

globalThis[Symbol.for('nimbus.call')] = callPlatform;

// Node found nothing left to do while an invocation is open: a callback handler waiting for the
// empty loop can now answer, and a handler that never answered gets null (as on Lambda).
process.on('beforeExit', () => {
  if (!current) return;
  const [err, result] = current.deferred ?? [null, null];
  current.finish(err, result);
});

// A crash in user code: report it against the invocation in flight (or init), then exit.
// Only the first crash is reported; the process is on its way out after it.
let crashing = false;
async function crash(err) {
  if (crashing) return;
  crashing = true;
  try {
    if (current) {
      await sendError(current.requestId, err, true);
    } else if (!ready) {
      await sendInitError(new RuntimeFault('Runtime.ImportModuleError', errorDoc(err).errorMessage, err));
    } else {
      process.stderr.write(`${util.inspect(err)}\n`);
    }
  } finally {
    process.exit(1);
  }
}

process.on('uncaughtException', crash);
process.on('unhandledRejection', (reason) =>
  crash(new RuntimeFault('Runtime.UnhandledPromiseRejection', stringify(reason), reason)));

function sendInitError(fault) {
  const doc = errorDoc(fault);
  console.error(`${doc.errorType}: ${doc.errorMessage}`);
  return writeFrame(FRAME_INIT_ERROR, packStr(doc.errorType), encodeErrorDoc(doc));
}

// ---------------------------------------------------------------------------------------------
// Start-up

function fatalProtocol(err) {
  process.stderr.write(`nimbus runtime: channel protocol error: ${err.message}\n`);
  process.exit(1);
}

const reader = new FrameReader((type, body) => {
  if (type === FRAME_CALL_RESULT) return callResult(body);
  if (type !== FRAME_INVOKE) throw new ProtocolError(`unexpected frame type ${type}`);
  if (current) throw new ProtocolError('INVOKE while an invocation is in flight');
  startInvocation(body);
});

const channelFd = Number(env.NIMBUS_CHANNEL_FD ?? 3);
// User code (and its child processes) should not see the channel.
delete env.NIMBUS_CHANNEL_FD;
const channel = new net.Socket({ fd: channelFd, readable: true, writable: true });
channel.on('data', (chunk) => {
  try {
    reader.push(chunk);
  } catch (e) {
    if (e instanceof ProtocolError) fatalProtocol(e);
    throw e;
  }
});
channel.on('end', () => process.exit(0));
channel.on('error', () => process.exit(current ? 1 : 0));
// The channel stays paused until init is done, so no INVOKE can arrive before READY.
channel.pause();

patchConsole();
try {
  handler = await loadHandler(env.LAMBDA_TASK_ROOT || process.cwd(), env._HANDLER ?? '');
} catch (e) {
  // Anything but a RuntimeFault came from user code (e.g. a throwing getter on the export path).
  const isFault = e instanceof RuntimeFault;
  await sendInitError(isFault ? e : new RuntimeFault('Runtime.ImportModuleError', stringify(e), e));
  process.exit(1);
}
ready = true;
await writeFrame(FRAME_READY);
channel.resume();
