import type { Dispatcher } from 'undici'
import type { InFlight } from './in-flight.js'

/** What a caller's controller steers: an upstream request or a replay of a stored body. */
export interface FlowTarget {
  pause (): void
  resume (): void
  abort (reason: Error): void
}

/**
 * The one controller a caller's handler ever sees for a request, however many upstream
 * requests serve it (a revalidation, then a full fetch; a failed forward, then the origin).
 * Pause, resume and abort go to whatever is flowing into the caller right now, and a pause
 * made before anything flows is applied as soon as something does.
 */
export class CallerController implements Dispatcher.DispatchController {
  #paused = false
  #aborted = false
  #reason: Error | null = null
  #target: FlowTarget | null = null

  /** @internal Links of the InFlight list this request is on (see in-flight.ts). */
  inFlightList: InFlight | null = null
  /** @internal */
  inFlightPrev: CallerController | null = null
  /** @internal */
  inFlightNext: CallerController | null = null

  get paused (): boolean { return this.#paused }
  get aborted (): boolean { return this.#aborted }
  get reason (): Error | null { return this.#reason }

  attach (target: FlowTarget | null): void {
    this.#target = target
    if (target === null) return
    if (this.#aborted) target.abort(this.#reason as Error)
    else if (this.#paused) target.pause()
  }

  pause (): void {
    this.#paused = true
    this.#target?.pause()
  }

  resume (): void {
    if (!this.#paused) return
    this.#paused = false
    this.#target?.resume()
  }

  abort (reason?: Error): void {
    if (this.#aborted) return
    this.#aborted = true
    this.#reason = reason ?? new Error('aborted')
    this.#target?.abort(this.#reason)
  }
}
