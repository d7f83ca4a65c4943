/**
 * What is in flight, by key: a Map whose entries come and go request by request. A key whose
 * flight ends is kept, emptied, for the next flight of the same URL, instead of being deleted
 * (unless it is longer than an ordinary URL). A long-lived Map that goes from one entry to
 * none and back at every request has V8 make it a new table each time, in the old generation
 * since the Map lives there: on Node 24 that churn alone brought the major collections of a
 * peer forwarding 1 MiB responses forward by half (bench/README.md, "At 1 MiB on Node 24 the
 * difference is the garbage collector"). Emptied keys are dropped once there are more than
 * MAX_EMPTIED of them.
 */
export class FlightTable<V extends object> {
  readonly #map = new Map<string, V | undefined>()
  #live = 0

  /** Flights in progress (emptied keys do not count). */
  get size (): number {
    return this.#live
  }

  /** Keys held, emptied ones included (for tests of the bound). */
  get held (): number {
    return this.#map.size
  }

  get (key: string): V | undefined {
    return this.#map.get(key)
  }

  has (key: string): boolean {
    return this.#map.get(key) !== undefined
  }

  set (key: string, value: V): void {
    if (this.#map.get(key) === undefined) this.#live++
    this.#map.set(key, value)
  }

  delete (key: string): void {
    if (this.#map.get(key) === undefined) return
    this.#live--
    if (key.length > MAX_KEPT_KEY) {
      // A URL of a megabyte is not worth keeping for a flight that may never come again.
      this.#map.delete(key)
      return
    }
    this.#map.set(key, undefined)
    if (this.#map.size - this.#live > MAX_EMPTIED) this.#sweep()
  }

  #sweep (): void {
    if (this.#live === 0) {
      this.#map.clear()
      return
    }
    for (const [key, value] of this.#map) if (value === undefined) this.#map.delete(key)
  }
}

// Emptied keys kept for flights to come, and the longest kept: 2 MiB of keys at most.
const MAX_EMPTIED = 1024
const MAX_KEPT_KEY = 2048
