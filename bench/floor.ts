/**
 * The least any Dispatcher can cost: replays a prebuilt response held in a Map, keyed by
 * origin + path, with no parsing, no policy and no copies. Whatever a caching Dispatcher spends
 * above this is its own overhead; what this costs is undici.request's.
 */
import { Dispatcher, errors } from 'undici'
import { ORIGIN_CACHE_CONTROL, hitUrls } from './common.js'

export interface FloorEntry {
  statusCode: number
  statusText: string
  /** The legacy contract's raw headers: alternating name and value Buffers. */
  rawHeaders: Buffer[]
  /** Headers in the new contract's shape, for handlers that speak it. */
  headers: Record<string, string>
  body: Buffer
}

export function floorEntry (headers: Record<string, string>, body: Buffer): FloorEntry {
  const rawHeaders: Buffer[] = []
  for (const [name, value] of Object.entries(headers)) rawHeaders.push(Buffer.from(name, 'latin1'), Buffer.from(value, 'latin1'))
  return { statusCode: 200, statusText: 'OK', rawHeaders, headers, body }
}

const NO_TRAILERS: string[] = []

export class FloorDispatcher extends Dispatcher {
  readonly #entries: Map<string, FloorEntry>

  constructor (entries: Map<string, FloorEntry>) {
    super()
    this.#entries = entries
  }

  static key (origin: string, path: string): string {
    return origin + path
  }

  override dispatch (opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const origin = typeof opts.origin === 'string' ? opts.origin : String(opts.origin?.origin ?? '')
    const entry = this.#entries.get(FloorDispatcher.key(origin, opts.path))
    // Delivered on a microtask, never inside dispatch(), as a real response would be.
    queueMicrotask(() => {
      if (typeof handler.onRequestStart === 'function' || typeof handler.onResponseStart === 'function') {
        deliverModern(handler, entry)
      } else {
        deliverLegacy(handler, entry)
      }
    })
    return true
  }

  override close (): Promise<void>
  override close (callback: () => void): void
  override close (callback?: () => void): Promise<void> | void {
    if (callback !== undefined) { queueMicrotask(callback); return }
    return Promise.resolve()
  }

  override destroy (): Promise<void>
  override destroy (err: Error | null): Promise<void>
  override destroy (callback: () => void): void
  override destroy (err: Error | null, callback: () => void): void
  override destroy (a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const callback = typeof a === 'function' ? a : b
    if (callback !== undefined) { queueMicrotask(callback); return }
    return Promise.resolve()
  }
}

/** onConnect, onHeaders, onData, onComplete: what undici.request and fetch pass. */
function deliverLegacy (handler: Dispatcher.DispatchHandler, entry: FloorEntry | undefined): void {
  let aborted: Error | null = null
  let paused = false
  let delivered = false
  const finish = (): void => {
    if (delivered || aborted !== null || entry === undefined) return
    delivered = true
    handler.onComplete?.(NO_TRAILERS)
  }
  handler.onConnect?.((err?: Error) => { aborted = err ?? new errors.RequestAbortedError() })
  if (aborted !== null) { handler.onError?.(aborted); return }
  if (entry === undefined) { handler.onError?.(new Error('floor: no such entry')); return }
  const resume = (): void => {
    if (!paused) return
    paused = false
    queueMicrotask(finish)
  }
  // Backpressure: one chunk, so a pause can only delay the end.
  if (handler.onHeaders?.(entry.statusCode, entry.rawHeaders, resume, entry.statusText) === false) paused = true
  if (aborted !== null) { handler.onError?.(aborted); return }
  if (handler.onData?.(entry.body) === false) paused = true
  if (aborted !== null) { handler.onError?.(aborted); return }
  if (!paused) finish()
}

/** onRequestStart, onResponseStart, ...: what compose()d interceptors pass. */
function deliverModern (handler: Dispatcher.DispatchHandler, entry: FloorEntry | undefined): void {
  let aborted: Error | null = null
  const controller: Dispatcher.DispatchController = {
    get aborted () { return aborted !== null },
    get paused () { return false },
    get reason () { return aborted },
    abort (reason: Error) { aborted = reason },
    pause () {},
    resume () {}
  }
  handler.onRequestStart?.(controller, {})
  if (aborted !== null) { handler.onResponseError?.(controller, aborted); return }
  if (entry === undefined) { handler.onResponseError?.(controller, new Error('floor: no such entry')); return }
  handler.onResponseStart?.(controller, entry.statusCode, entry.headers, entry.statusText)
  handler.onResponseData?.(controller, entry.body)
  if (aborted !== null) { handler.onResponseError?.(controller, aborted); return }
  handler.onResponseEnd?.(controller, {})
}

/**
 * The floor Dispatcher with the HIT_KEYS responses built here, with the origin's headers (no
 * origin), plus `extra` fields.
 */
export function floorOf (size: number, extra: Record<string, string> = {}): { floor: FloorDispatcher, urls: string[] } {
  const urls = hitUrls('http://127.0.0.1:9', size, 'hit')
  const body = Buffer.alloc(size, 'forwardcache bench body\n')
  const entries = new Map<string, FloorEntry>()
  for (const u of urls) {
    const url = new URL(u)
    entries.set(FloorDispatcher.key(url.origin, url.pathname), floorEntry({
      'content-type': 'application/octet-stream',
      'content-length': String(body.length),
      'cache-control': ORIGIN_CACHE_CONTROL,
      etag: `"${size}"`,
      ...extra
    }, body))
  }
  return { floor: new FloorDispatcher(entries), urls }
}

/**
 * The least memory any in-process cache can hold responses in: an Agent's response kept in a
 * Map as it arrived (its fields and the body's chunks, nothing copied), replayed from there for
 * later requests of the same origin + path. No policy, no bounds, no per-entry bookkeeping: for
 * the memory cell, where what a cache holds above this is its own overhead, and what this
 * holds above the stored bytes is the runtime's. Speaks the legacy contract only, which is
 * what undici.request() uses.
 */
export class MapCache extends Dispatcher {
  readonly #upstream: Dispatcher
  readonly #entries = new Map<string, { statusCode: number, statusText: string, rawHeaders: Buffer[], chunks: Buffer[] }>()

  constructor (upstream: Dispatcher) {
    super()
    this.#upstream = upstream
  }

  /** Body bytes held. */
  get storedBytes (): number {
    let n = 0
    for (const e of this.#entries.values()) for (const c of e.chunks) n += c.length
    return n
  }

  get entries (): number {
    return this.#entries.size
  }

  override dispatch (opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const caller = handler as unknown as LegacyHandler
    const origin = typeof opts.origin === 'string' ? opts.origin : String(opts.origin?.origin ?? '')
    const key = FloorDispatcher.key(origin, opts.path)
    const entry = this.#entries.get(key)
    if (entry !== undefined) {
      queueMicrotask(() => {
        let aborted: Error | null = null
        caller.onConnect?.((err?: Error) => { aborted = err ?? new errors.RequestAbortedError() })
        // Backpressure is not honoured: the chunks are held anyway, and the caller reads them all.
        if (aborted === null) caller.onHeaders?.(entry.statusCode, entry.rawHeaders, () => {}, entry.statusText)
        for (const c of entry.chunks) if (aborted === null) caller.onData?.(c)
        if (aborted !== null) caller.onError?.(aborted)
        else caller.onComplete?.([])
      })
      return true
    }
    const chunks: Buffer[] = []
    let statusCode = 0
    let statusText = ''
    let rawHeaders: Buffer[] = []
    return this.#upstream.dispatch(opts, {
      onConnect: (abort: (err?: Error) => void) => caller.onConnect?.(abort),
      onHeaders: (status: number, raw: Buffer[], resume: () => void, text: string) => {
        statusCode = status
        statusText = text
        rawHeaders = raw
        return caller.onHeaders?.(status, raw, resume, text) ?? true
      },
      onData: (chunk: Buffer) => {
        chunks.push(chunk)
        return caller.onData?.(chunk) ?? true
      },
      onComplete: (trailers: Buffer[]) => {
        if (statusCode === 200) this.#entries.set(key, { statusCode, statusText, rawHeaders, chunks })
        caller.onComplete?.(trailers)
      },
      onError: (err: Error) => caller.onError?.(err)
    } as unknown as Dispatcher.DispatchHandler)
  }

  override close (): Promise<void>
  override close (callback: () => void): void
  override close (callback?: () => void): Promise<void> | void {
    const done = this.#upstream.close()
    if (callback !== undefined) { done.then(callback, callback); return }
    return done
  }

  override destroy (): Promise<void>
  override destroy (err: Error | null): Promise<void>
  override destroy (callback: () => void): void
  override destroy (err: Error | null, callback: () => void): void
  override destroy (a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const callback = typeof a === 'function' ? a : b
    const done = this.#upstream.destroy(typeof a === 'function' || a === undefined ? null : a)
    if (callback !== undefined) { done.then(callback, callback); return }
    return done
  }
}

interface LegacyHandler {
  onConnect?: (abort: (err?: Error) => void) => void
  onHeaders?: (statusCode: number, raw: Buffer[], resume: () => void, statusText: string) => boolean
  onData?: (chunk: Buffer) => boolean
  onComplete?: (trailers: Buffer[]) => void
  onError?: (err: Error) => void
}
