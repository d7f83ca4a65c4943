import type { Dispatcher } from 'undici'
import type { CallerHandler } from './dispatch/compat.js'
import type { CallerController } from './dispatch/controller.js'
import { Deadline } from './dispatch/deadline.js'
import { Fanout } from './dispatch/fanout.js'
import type { RawStartHandler } from './dispatch/raw-upstream.js'
import { PeerProtocolError } from './errors.js'
import { endToEndResponseHeaders, headerString, HOP_BY_HOP, type ResponseHeaders } from './headers.js'

type Controller = Dispatcher.DispatchController
type Handler = Dispatcher.DispatchHandler

/**
 * Response header an owner sets on answers that are its own failure (bad request, origin
 * unreachable, ...) rather than the origin's response, so the forwarding peer can tell a
 * broken hop from an origin that answered 502.
 */
export const ERROR_HEADER = 'forwardcache-error'

// Owner errors after which the caller is better served by the origin directly. The others
// (a refused origin, a loop, a malformed request) are answers: falling back would go around
// the owner's policy, so they reach the caller as they are.
// `not-found` (the owner's handler is mounted on another path) and `forbidden-peer` (the owner
// does not count this peer's address as the pool's) are a pool set up wrong: passed on, they
// would reach callers as if the origin had said 404 or 403 for every URL that owner has.
const FALL_BACK_ON = new Set(['origin-unreachable', 'origin-timeout', 'closing', 'unauthorized', 'overloaded', 'not-found', 'forbidden-peer'])
// Of those, the ones that say the owner itself is unusable (counted towards ejection).
const PEER_FAULTS = new Set(['closing', 'unauthorized', 'not-found', 'forbidden-peer'])

export interface PassThroughHooks {
  /**
   * Runs when the response starts, with its status; for invalidation after unsafe methods.
   * When it returns a promise, the caller sees the response only after it settles, so that
   * a request the caller sends next cannot overtake the invalidation.
   */
  onStatus?: (status: number, headers: ResponseHeaders) => Promise<void> | void
  /** Runs once, when the final response's headers arrive: for the origin latency histogram. */
  onHeaders?: () => void
  /** Cache-Status to add, when the response did not come from a cache that set one. */
  cacheStatus?: string
  /** Milliseconds to wait for response headers before failing with HeadersTimeoutError. */
  headersTimeout?: number
  /**
   * True when the upstream is a plain undici dispatcher of this library's own (a peer's Pool,
   * the default origin Agent): its controller's `rawHeaders` are then exactly what the
   * headers were parsed from. A dispatcher of the user's may be composed with interceptors
   * that change the headers and pass the controller on, so its raw headers are not used.
   */
  rawHeadersMatch?: boolean
}

/**
 * The raw form of `out` (the end-to-end part of `headers`, plus `added` as Cache-Status) made
 * from the Buffers the upstream sent, or undefined when they do not match `headers` (a
 * controller that is not undici's, or headers already changed by someone else).
 */
function endToEndRawHeaders (received: unknown[], headers: ResponseHeaders, out: ResponseHeaders, added: string | undefined): Buffer[] | undefined {
  let dropped: string[] | undefined
  let count = 0
  for (const name in headers) {
    const value = headers[name]
    count += Array.isArray(value) ? value.length : 1
    if (out[name] === undefined) (dropped ??= []).push(name)
  }
  if (received.length !== count * 2) return undefined
  for (const field of received) if (!Buffer.isBuffer(field)) return undefined
  let raw = received as Buffer[]
  if (dropped !== undefined) {
    // Names are decoded only when their length is that of a dropped one.
    let lengths = 0
    for (const name of dropped) if (name.length < 32) lengths |= 1 << name.length
    raw = []
    for (let i = 0; i < received.length; i += 2) {
      const name = received[i] as Buffer
      const maybe = name.length >= 32 || (lengths & (1 << name.length)) !== 0
      if (maybe && dropped.includes(name.toString('latin1').toLowerCase())) continue
      raw.push(name, received[i + 1] as Buffer)
    }
  }
  if (added !== undefined) raw = [...raw, Buffer.from('cache-status'), Buffer.from(added, 'latin1')]
  return raw
}

// Field names as lower-case bytes, for comparing with the Buffers a response's fields came in.
const CACHE_STATUS_NAME = Buffer.from('cache-status')
const ERROR_NAME = Buffer.from(ERROR_HEADER)
const CONNECTION_NAME = Buffer.from('connection')
const KEEP_ALIVE_NAME = Buffer.from('keep-alive')
const TRANSFER_ENCODING_NAME = Buffer.from('transfer-encoding')
// The other hop-by-hop names, which node:http does not send itself: their presence sends the
// answer down the parsed path.
const NODE_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding'])
const OTHER_HOP_BY_HOP_NAMES = [...HOP_BY_HOP].filter((name) => !NODE_HOP_BY_HOP.has(name)).map((name) => Buffer.from(name))
const CLOSE_VALUE = Buffer.from('close')
// Lengths of the names above: a field of any other length is passed on unread.
let SCANNED_LENGTHS = 0
for (const name of [CACHE_STATUS_NAME, ERROR_NAME, CONNECTION_NAME, TRANSFER_ENCODING_NAME, ...OTHER_HOP_BY_HOP_NAMES]) SCANNED_LENGTHS |= 1 << name.length

/**
 * True when `field` is `lower`, ignoring case. Field names from undici's parser are tokens
 * (RFC 9110 section 5.1), and among tokens `| 0x20` folds only A-Z onto a-z.
 */
function isName (field: Buffer, lower: Buffer): boolean {
  if (field.length !== lower.length) return false
  for (let i = 0; i < lower.length; i++) if (((field[i] as number) | 0x20) !== lower[i]) return false
  return true
}

/**
 * The end-to-end part of an owner's answer in raw form, when the answer is a plain one of
 * its origin's (it carries Cache-Status and no forwardcache-error) whose only hop-by-hop fields
 * are node:http's own (Connection: keep-alive or close, Keep-Alive, Transfer-Encoding);
 * otherwise undefined, and the parsed fields decide.
 */
export function ownerAnswerRaw (raw: Buffer[]): Buffer[] | undefined {
  let cacheStatus = false
  let out: Buffer[] | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as Buffer
    const length = name.length
    if (length < 32 && (SCANNED_LENGTHS & (1 << length)) !== 0) {
      let hop = false
      if (length === 12) {
        if (isName(name, CACHE_STATUS_NAME)) cacheStatus = true
      } else if (length === 10) {
        if (isName(name, CONNECTION_NAME)) {
          // RFC 9110 section 7.6.1: Connection may name more fields to drop; that is left to
          // the parsed path.
          const value = raw[i + 1] as Buffer
          if (!isName(value, KEEP_ALIVE_NAME) && !isName(value, CLOSE_VALUE)) return undefined
          hop = true
        } else {
          hop = isName(name, KEEP_ALIVE_NAME)
        }
      } else if (length === 17 && isName(name, TRANSFER_ENCODING_NAME)) {
        hop = true
      } else if (length === 18 && isName(name, ERROR_NAME)) {
        return undefined
      } else {
        for (const other of OTHER_HOP_BY_HOP_NAMES) if (isName(name, other)) return undefined
      }
      if (hop) {
        out ??= raw.slice(0, i)
        continue
      }
    }
    out?.push(name, raw[i + 1] as Buffer)
  }
  return cacheStatus ? out ?? raw : undefined
}

type Deferred = { kind: 'data', chunk: Buffer } | { kind: 'end', trailers: ResponseHeaders } | { kind: 'error', err: Error }

/**
 * Streams an upstream response (an origin's or an owner peer's) to the caller unchanged but
 * for hop-by-hop fields, steering the upstream with the caller's pause, resume and abort.
 */
export class PassThroughHandler implements Handler {
  protected readonly sink: CallerHandler
  protected readonly ctl: CallerController
  readonly #hooks: PassThroughHooks
  // Events held back while onStatus's promise is pending.
  #held: Deferred[] | null = null

  readonly #deadline: Deadline | undefined
  // Set once an error (a timeout included) has gone to the caller: later events are stale.
  #errored = false

  constructor (sink: CallerHandler, ctl: CallerController, hooks: PassThroughHooks = {}) {
    this.sink = sink
    this.ctl = ctl
    this.#hooks = hooks
    if (hooks.headersTimeout !== undefined) {
      this.#deadline = new Deadline(hooks.headersTimeout, (err) => this.onResponseError(null, err))
    }
  }

  /** Stops the wait for headers: a subclass that takes a response over clears it itself. */
  protected clearDeadline (): void {
    this.#deadline?.clear()
  }

  /** True once this handler's response no longer goes to the caller. */
  protected isStale (): boolean {
    return this.#errored
  }

  onRequestStart (controller: Controller): void {
    this.#deadline?.attach(controller)
    if (this.isStale()) return
    this.ctl.attach(controller)
  }

  onResponseStart (controller: Controller, status: number, headers: ResponseHeaders, statusText?: string): void {
    // Only a final response ends the wait for headers. undici restarts its own headers timer
    // at each interim (1xx) response, so an upstream that sends 103s every few seconds and
    // never a final answer would otherwise hold the caller forever (a forward never falling
    // back, a fallback never failing).
    if (status >= 200) this.#deadline?.clear()
    if (this.isStale()) return
    const out = endToEndResponseHeaders(headers)
    let added: string | undefined
    if (this.#hooks.cacheStatus !== undefined && out['cache-status'] === undefined) {
      added = this.#hooks.cacheStatus
      out['cache-status'] = added
    }
    // A legacy caller takes the header Buffers as they arrived, less what was dropped, rather
    // than Buffers encoded again from the parsed object: two allocations fewer per field.
    const received = this.#hooks.rawHeadersMatch === true ? (controller as { rawHeaders?: unknown }).rawHeaders : undefined
    const raw = Array.isArray(received) ? endToEndRawHeaders(received, headers, out, added) : undefined
    if (status >= 200) this.#hooks.onHeaders?.()
    // An interim response (102, 103) passes straight on: the outcome, and so any invalidation
    // held for it, belongs to the final status still to come.
    const pending = status < 200 ? undefined : this.#hooks.onStatus?.(status, out)
    if (pending === undefined) {
      this.sink.onResponseStart(this.ctl, status, out, statusText ?? '', raw)
      return
    }
    this.#held = []
    controller.pause()
    const release = (): void => {
      // The caller gave up meanwhile and already has its error.
      if (this.#held === null) return
      const held = this.#held
      this.#held = null
      try {
        this.sink.onResponseStart(this.ctl, status, out, statusText ?? '', raw)
        for (const e of held) {
          if (e.kind === 'data') this.sink.onResponseData(this.ctl, e.chunk)
          else if (e.kind === 'end') this.sink.onResponseEnd(this.ctl, e.trailers)
          else this.sink.onResponseError(this.ctl, e.err)
        }
      } catch (err) {
        // The caller's handler threw. Here, in a promise's callback, undici is not there to
        // catch it: it was an unhandled rejection (the process's end, by Node's default) and
        // the caller was never told. As undici does, the request fails with the error.
        this.#errored = true
        controller.abort(err as Error)
        this.sink.onResponseError(this.ctl, err as Error)
        return
      }
      if (!this.ctl.paused) controller.resume()
    }
    pending.then(release, release)
  }

  onResponseData (_controller: Controller, chunk: Buffer): void {
    if (this.#errored) return
    if (this.#held !== null) this.#held.push({ kind: 'data', chunk })
    else this.sink.onResponseData(this.ctl, chunk)
  }

  onResponseEnd (_controller: Controller, trailers: ResponseHeaders): void {
    if (this.#errored) return
    if (this.#held !== null) this.#held.push({ kind: 'end', trailers })
    else this.sink.onResponseEnd(this.ctl, trailers)
  }

  onResponseError (_controller: Controller | null, err: Error): void {
    this.#deadline?.clear()
    if (this.#errored) return
    this.#errored = true
    // A caller that aborted is told at once, not after the invalidation it would wait for.
    if (this.#held !== null && !this.ctl.aborted) {
      this.#held.push({ kind: 'error', err })
      return
    }
    this.#held = null
    this.sink.onResponseError(this.ctl, err)
  }
}

/**
 * Streams an owner peer's response to the caller. A failure of the hop itself before any
 * response reaches the caller (refused, timed out, or an answer marked as the owner's own
 * error) goes to `fallback` instead, so the caller can still be served; after the response
 * has started, nothing is retried and errors reach the caller.
 */
export class ForwardHandler extends PassThroughHandler implements RawStartHandler {
  readonly #fallback: (err: Error, peerFault: boolean) => void
  readonly #onSuccess: () => void
  #started = false
  #failed = false

  /**
   * @param fallback serves the caller another way; `peerFault` says whether the owner itself
   *   failed (unreachable, timed out, shutting down) rather than reporting an origin failure.
   * @param onSuccess runs when the owner answered with a response of its origin's.
   */
  constructor (sink: CallerHandler, ctl: CallerController, fallback: (err: Error, peerFault: boolean) => void, onSuccess: () => void,
    headersTimeout?: number) {
    // A peer's Pool is always one of this library's own.
    super(sink, ctl, headersTimeout === undefined ? { rawHeadersMatch: true } : { headersTimeout, rawHeadersMatch: true })
    this.#fallback = fallback
    this.#onSuccess = onSuccess
  }

  /**
   * A plain answer of the origin's, for a caller that takes raw fields and nobody sharing it:
   * passed on without ever parsing the fields into an object (the caller's request() parses
   * them anyway). Anything else goes to onResponseStart.
   */
  onRawResponseStart (_controller: Controller, status: number, raw: Buffer[], statusText: string): boolean {
    if (status < 200) return false
    const sink = this.sink
    if (!sink.legacy && !(sink instanceof Fanout && sink.rawAlone)) return false
    const out = ownerAnswerRaw(raw)
    if (out === undefined) return false
    this.clearDeadline()
    if (this.isStale()) return true
    this.#started = true
    this.#onSuccess()
    sink.startRaw(this.ctl, status, out, statusText)
    return true
  }

  override onResponseStart (controller: Controller, status: number, headers: ResponseHeaders, statusText?: string): void {
    const ownerError = headerString(headers, ERROR_HEADER)
    if (ownerError !== undefined && FALL_BACK_ON.has(ownerError)) {
      return this.#giveUp(controller, new PeerProtocolError(`owner answered ${status}: ${ownerError}`), PEER_FAULTS.has(ownerError))
    }
    if (status >= 200 && ownerError === undefined && headers['cache-status'] === undefined) {
      // Every answer of a forwardcache owner says Cache-Status or forwardcache-error. One
      // with neither came from something in front of its handler (node:http's 431 for a
      // request too large, a framework's 404, a proxy's 502): not the origin's answer, so it
      // is not the caller's either. Not held against the owner: it may be this request alone.
      return this.#giveUp(controller, new PeerProtocolError(`the owner's server answered ${status} without forwardcache's fields`), false)
    }
    if (status >= 200) {
      this.#started = true
      this.#onSuccess()
    }
    super.onResponseStart(controller, status, headers, statusText)
  }

  // The small answer's body is not wanted: stop it and serve the caller another way.
  #giveUp (controller: Controller, err: Error, peerFault: boolean): void {
    this.clearDeadline()
    this.#failed = true
    controller.abort(err)
    this.#fallback(err, peerFault)
  }

  protected override isStale (): boolean {
    return this.#failed || super.isStale()
  }

  override onResponseData (controller: Controller, chunk: Buffer): void {
    if (!this.#failed) super.onResponseData(controller, chunk)
  }

  override onResponseEnd (controller: Controller, trailers: ResponseHeaders): void {
    if (!this.#failed) super.onResponseEnd(controller, trailers)
  }

  override onResponseError (controller: Controller | null, err: Error): void {
    if (this.#failed) return
    if (!this.#started && !this.ctl.aborted) {
      this.clearDeadline()
      this.#failed = true
      // A header block too large for this peer's parser is that one response's doing, not the
      // owner's: an origin's headers just under the limit the owner accepts them at are over
      // it once the owner adds its own (Cache-Status, Age). Counted, a single such URL asked
      // for ejectAfter times would take the owner out of routing for all of its keys.
      this.#fallback(err, (err as { code?: unknown }).code !== 'UND_ERR_HEADERS_OVERFLOW')
      return
    }
    super.onResponseError(controller, err)
  }
}
