import type { CallerController } from './controller.js'

/**
 * The requests in flight on one dispatcher, as an intrusive doubly linked list through their
 * controllers. A Set did the same job, but with its add and delete on every request the
 * scavenger copied and promoted ~2 MB more per cycle at 32 cache hits in flight (the tables V8
 * retires when it rehashes a busy Set are the likely reason), tripling its pauses. Links are
 * cleared on removal, so a finished request points at nothing.
 */
export class InFlight {
  #head: CallerController | null = null
  #size = 0

  get size (): number {
    return this.#size
  }

  /** Adds `ctl`; a controller already on a list (this one or another) is left where it is. */
  add (ctl: CallerController): void {
    if (ctl.inFlightList !== null) return
    ctl.inFlightList = this
    ctl.inFlightPrev = null
    ctl.inFlightNext = this.#head
    if (this.#head !== null) this.#head.inFlightPrev = ctl
    this.#head = ctl
    this.#size++
  }

  /** Removes `ctl`; false when it was not listed here (or is null: a request that failed before it started). */
  delete (ctl: CallerController | null): boolean {
    if (ctl === null || ctl.inFlightList !== this) return false
    const prev = ctl.inFlightPrev
    const next = ctl.inFlightNext
    if (prev === null) this.#head = next
    else prev.inFlightNext = next
    if (next !== null) next.inFlightPrev = prev
    ctl.inFlightList = null
    ctl.inFlightPrev = null
    ctl.inFlightNext = null
    this.#size--
    return true
  }

  /** The controllers listed now, newest first: a copy, safe to iterate while they finish. */
  toArray (): CallerController[] {
    const out: CallerController[] = []
    for (let c = this.#head; c !== null; c = c.inFlightNext) out.push(c)
    return out
  }
}
