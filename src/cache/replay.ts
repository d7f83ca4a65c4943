import type { CallerController, FlowTarget } from '../dispatch/controller.js'
import type { CallerHandler } from '../dispatch/compat.js'
import { toRawHeaders, type ResponseHeaders } from '../headers.js'

const NO_TRAILERS: ResponseHeaders = Object.freeze({}) as ResponseHeaders

// A caller that awaits hit after hit in a loop would otherwise never leave the microtask queue,
// and the whole process (its timers, sockets, IPC, the other peers' requests) would wait for
// that loop to end. After this many replays without a turn of the event loop, the next ones
// wait for a turn: about a millisecond or two of hits at a time.
const MAX_REPLAYS_PER_TURN = 256
let replaysThisTurn = 0
let watchingTurn = false
// Replays held for the next turn, in arrival order: while any wait, new ones queue behind
// them, so that callers which keep asking cannot starve those that were held.
let held: Replay[] = []

function newTurn (): void {
  watchingTurn = false
  replaysThisTurn = 0
  const batch = held
  held = []
  for (const r of batch) schedule(r)
}

// One microtask per replay. Batching a burst of replays behind one microtask through a shared
// queue was tried: it saved a closure per hit, but the scavenger then copied and promoted
// ~1.5 KiB per hit (pauses of ~3 ms instead of ~0.8 ms at 32 requests in flight).
function schedule (r: Replay): void {
  if (!watchingTurn) {
    watchingTurn = true
    setImmediate(newTurn)
  }
  if (held.length === 0 && ++replaysThisTurn <= MAX_REPLAYS_PER_TURN) queueMicrotask(() => { r.run() })
  else held.push(r)
}

/**
 * Plays a response held in memory into a caller's handler, honouring pause/resume and abort.
 * It starts on a microtask, never inside dispatch(), so callers see the same ordering as with
 * a network response (at once for a sink that says it is `synchronous`). One object per
 * replay: it is the flow target and the microtask.
 */
class Replay implements FlowTarget {
  readonly #sink: CallerHandler
  readonly #ctl: CallerController
  readonly #status: number
  readonly #statusText: string
  readonly #headers: ResponseHeaders
  readonly #body: readonly Buffer[]
  readonly #rawHeaders: Buffer[] | undefined
  #index = 0
  #started = false
  #finished = false

  constructor (sink: CallerHandler, ctl: CallerController, status: number, statusText: string,
    headers: ResponseHeaders, body: readonly Buffer[], rawHeaders: Buffer[] | undefined) {
    this.#sink = sink
    this.#ctl = ctl
    this.#status = status
    this.#statusText = statusText
    this.#headers = headers
    this.#body = body
    this.#rawHeaders = rawHeaders
    ctl.attach(this)
    // A request that comes in on a socket of its own is a turn of the event loop already:
    // nothing to ration.
    if (sink.synchronous === true) this.run()
    else schedule(this)
  }

  pause (): void {}

  resume (): void {
    // A replay that has started was counted in its turn's budget when it started: only
    // starts are rationed (MAX_REPLAYS_PER_TURN). Counted again at each resume, every body
    // that fills the caller's buffer (a 1 MiB one always does) spent two of a turn's 256, and
    // such hits forced twice the turns (11% of them held at 1 MiB with 32 in flight).
    if (this.#started) queueMicrotask(() => { this.run() })
    else schedule(this)
  }

  abort (reason: Error): void {
    this.#fail(reason)
  }

  #fail (err: Error): void {
    if (this.#finished) return
    this.#finished = true
    this.#sink.onResponseError(this.#ctl, err)
  }

  run (): void {
    if (this.#finished) return
    const sink = this.#sink
    const ctl = this.#ctl
    try {
      if (!this.#started) {
        this.#started = true
        if (sink.legacy) sink.startRaw(ctl, this.#status, this.#rawHeaders ?? toRawHeaders(this.#headers), this.#statusText)
        else sink.onResponseStart(ctl, this.#status, this.#headers, this.#statusText)
      }
      const body = this.#body
      while (!ctl.paused && !ctl.aborted && this.#index < body.length) {
        sink.onResponseData(ctl, body[this.#index++] as Buffer)
      }
      if (ctl.aborted || ctl.paused || this.#finished) return
      this.#finished = true
      sink.onResponseEnd(ctl, NO_TRAILERS)
    } catch (err) {
      this.#fail(err as Error)
    }
  }
}

/**
 * Plays a stored response into `sink`. `rawHeaders`, when given, is the same headers in the
 * legacy contract's form, prepared once and shared: legacy callers then get no conversion.
 */
export function replay (
  sink: CallerHandler,
  ctl: CallerController,
  status: number,
  statusText: string,
  headers: ResponseHeaders,
  body: readonly Buffer[],
  rawHeaders?: Buffer[]
): void {
  // eslint-disable-next-line no-new
  new Replay(sink, ctl, status, statusText, headers, body, rawHeaders)
}
