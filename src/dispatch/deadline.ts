import type { Dispatcher } from 'undici'
import { errors } from 'undici'

type Controller = Dispatcher.DispatchController

/**
 * A precise wait for response headers. undici's own headersTimeout runs on coarse timers
 * that can fire up to a second late, which is too late for a peer hop meant to fail over in
 * a few hundred milliseconds; this one expires within a millisecond or two of its time and
 * aborts the upstream request.
 *
 * Deadlines of one length share one native timer (DeadlineQueue): a timer set and cleared for
 * every forward and every origin fetch cost a microsecond each, and on Node 24 more major
 * collections per request (bench/README.md, "At 1 MiB on Node 24 the difference is the
 * garbage collector").
 */
export class Deadline {
  /** When it expires, on performance.now()'s clock. */
  readonly expiresAt: number
  // Links in the queue of deadlines of the same length; queue is null once cleared or expired.
  prev: Deadline | null = null
  next: Deadline | null = null
  queue: DeadlineQueue | null
  readonly #onExpire: (err: Error) => void
  #upstream: Controller | null = null
  #error: Error | null = null

  /** @param onExpire runs once if the deadline passes before `clear()`, with the error. */
  constructor (ms: number, onExpire: (err: Error) => void) {
    this.#onExpire = onExpire
    this.expiresAt = performance.now() + ms
    let queue = queues.get(ms)
    if (queue === undefined) {
      queue = new DeadlineQueue()
      queues.set(ms, queue)
    }
    this.queue = queue
    queue.add(this)
  }

  get expired (): boolean {
    return this.#error !== null
  }

  attach (controller: Controller): void {
    this.#upstream = controller
    if (this.#error !== null) controller.abort(this.#error)
  }

  clear (): void {
    this.queue?.remove(this)
  }

  /** Called by the queue once the time has come (and the deadline is out of it). */
  expire (): void {
    this.#error = new errors.HeadersTimeoutError()
    this.#onExpire(this.#error)
    this.#upstream?.abort(this.#error)
  }
}

// One queue per length of deadline: lengths are options (peerTimeout, originTimeout), so few.
const queues = new Map<number, DeadlineQueue>()

/**
 * Deadlines of `ms` made so far, and those still waiting (neither cleared nor expired): for
 * tests that check a request which has been answered leaves nothing waiting for its time.
 */
export function deadlineCounts (ms: number): { made: number, waiting: number } {
  const queue = queues.get(ms)
  return { made: queue?.made ?? 0, waiting: queue?.waiting ?? 0 }
}

// A timer may fire this much before its deadline on performance.now()'s clock (libuv counts
// from the loop's cached time, whole milliseconds): it still expires then, not a turn later.
const EARLY_MS = 1

/**
 * Deadlines of one length, oldest first: made one after another, they expire in the order
 * they were made, so the head is always the next to expire and one timer, armed for the head,
 * serves them all. A deadline cleared leaves the list at once (nothing is kept for those
 * that never expire); the timer is not moved for it: when it fires for a head that has gone,
 * it is armed again for the new head. So with requests one after another, a timer is set
 * about once per deadline length, not once per request.
 */
class DeadlineQueue {
  made = 0
  waiting = 0
  #head: Deadline | null = null
  #tail: Deadline | null = null
  #timer: NodeJS.Timeout | null = null

  add (deadline: Deadline): void {
    this.made++
    this.waiting++
    deadline.prev = this.#tail
    if (this.#tail === null) this.#head = deadline
    else this.#tail.next = deadline
    this.#tail = deadline
    if (this.#timer === null) this.#arm(deadline.expiresAt)
  }

  remove (deadline: Deadline): void {
    this.waiting--
    if (deadline.prev === null) this.#head = deadline.next
    else deadline.prev.next = deadline.next
    if (deadline.next === null) this.#tail = deadline.prev
    else deadline.next.prev = deadline.prev
    deadline.prev = null
    deadline.next = null
    deadline.queue = null
  }

  #arm (at: number): void {
    this.#timer = setTimeout(() => { this.#fire() }, Math.max(1, Math.ceil(at - performance.now())))
    // A deadline never keeps the process alive: a peer with nothing else to do may exit.
    this.#timer.unref()
  }

  #fire (): void {
    this.#timer = null
    const now = performance.now() + EARLY_MS
    try {
      for (let head = this.#head; head !== null && head.expiresAt <= now; head = this.#head) {
        this.remove(head)
        // What expiry sets off (a fallback fetch, say) may add deadlines: they go at the tail,
        // later than now, and arm the timer if it is not armed.
        head.expire()
      }
    } finally {
      // A handler that throws from its error callback goes on to the process as before, and
      // does not leave the deadlines behind it without a timer.
      if (this.#head !== null && this.#timer === null) this.#arm(this.#head.expiresAt)
    }
  }
}
