import { InvalidationLog, Undelivered, type Missed } from './invalidation-log.js'
import { channels } from './observe/channels.js'
import type { Counters } from './stats.js'

// Characters of URL the invalidation log keeps per entry on average: ordinary URLs are far
// shorter, and a caller that POSTs to URLs of a megabyte must not make it hold gigabytes.
const LOG_CHARS_PER_KEY = 512
// Peers whose leaving is remembered, for the invalidations they miss. A pool changes by a few
// peers at a time; past this many departures, the ones that left first are most likely gone
// for good (a replaced pod's address), and one that does come back is taken for a new peer.
// It counts no gap: since the two cannot be told apart, a pool that has replaced more than this
// many pods would count one for every new pod of every rollout (tried, and reverted).
const MAX_DEPARTED = 1024
// Invalidations in flight at once to one peer that came back: enough to send thousands in a
// second or two, few enough to leave that peer's handler to its callers.
const REPLAY_CONCURRENCY = 4
// Timed attempts to deliver a peer's failed invalidations, when nothing else shows it is back
// (no forward to it succeeds, no later DELETE, it is not ejected and readmitted). The waits
// double from ejectBackoff up to MAX_RETRY_WAIT: 1 + 2 + 4 + 8 + 16 s at the default.
const MAX_RETRIES = 5
const MAX_RETRY_WAIT = 30_000

/** What InvalidationDelivery needs from the dispatcher it delivers for. */
export interface DeliveryOptions {
  /** Sends `peer` the signed DELETE that invalidates `key` there; true when it answered 2xx. Never rejects. */
  send: (peer: string, key: string) => Promise<boolean>
  /** Where invalidationErrors, invalidationGaps and invalidationReplays are counted. */
  counters: Counters
  /** Failures in a row after which a replay or a delivery gives up for now. */
  ejectAfter: number
  /** First wait before a timed delivery, ms; doubles after each one, up to 30 s. */
  ejectBackoff: number
  /** URLs remembered by the log of missed invalidations, and by the one of failed DELETEs. */
  invalidationLogSize: number
  /** True when `peer` is this instance: it is never sent anything. */
  isSelf: (peer: string) => boolean
  /** The pool now (ejected peers included). */
  peers: () => readonly string[]
  /** True while `peer` is ejected for failing (and probed). */
  isEjected: (peer: string) => boolean
  /** Runs when the set of peers held off the ring (see holds()) changes. */
  onHeldChanged: () => void
  /** This instance's URL for the replay and delivery channels ('' for a Client). */
  self: () => string
}

/** Delivery of the invalidations that failed to reach one peer in the pool. */
interface Retry {
  timer: NodeJS.Timeout | undefined
  /** Timed attempts made so far. */
  attempts: number
  delivering: boolean
  /**
   * Set when a probe readmits the peer while a delivery to it runs: that delivery's failures
   * date from before, and must not end the hold the readmission starts.
   */
  readmitted: boolean
  /**
   * After a delivery that failed, when a forward or a DELETE that succeeds may start the next
   * (performance.now() ms): a peer that answers GETs but refuses every DELETE (a secret it
   * does not share) must not get a burst of them after each forward.
   */
  quietUntil: number
}

/** The invalidations a peer back in the pool is being sent; it stays off the ring meanwhile. */
interface Replay {
  readonly keys: readonly string[]
  /** Index of the next key to send. */
  next: number
  /** Keys sent and not yet answered. */
  readonly inFlight: Set<string>
  /** Set when the peer leaves the pool again before the replay ends. */
  cancelled: boolean
}

/** What one #sendEach() did. */
interface Round {
  /** Keys the peer acknowledged (2xx). */
  sent: number
  /** Keys sent that failed. */
  failed: number
  /** Failures in a row at the end, those before included. */
  failuresInARow: number
}

// What setPeers() runs when no peer has come back.
const NOTHING_TO_REPLAY = (): void => {}

/**
 * Pool-wide invalidation: sends a URL's DELETE to every other peer in the pool, and makes sure
 * each gets it in the end. A peer out of the pool when it happened is sent what it missed when
 * it comes back (a replay), and one that the DELETE failed to reach is sent it again once it
 * is seen to answer; a peer being sent either is held off the ring meanwhile, so that it
 * serves none of the responses they make stale.
 *
 * A pool that does not change and whose DELETEs succeed keeps nothing, and a hit never gets
 * here at all.
 */
export class InvalidationDelivery {
  readonly #o: DeliveryOptions
  // URLs invalidated while some peer was out of the pool, for when it comes back.
  readonly #sent: InvalidationLog
  // Peers back in the pool that are being sent what they missed, kept off the ring meanwhile.
  readonly #replays = new Map<string, Replay>()
  // URLs whose DELETE failed to reach a peer in the pool, to be sent again once it answers.
  readonly #undelivered: Undelivered
  // Peers owed something there (or just delivered to); empty while every DELETE succeeds.
  readonly #retries = new Map<string, Retry>()
  // Peers readmitted after ejection that are being sent what failed to reach them meanwhile,
  // kept off the ring as a peer back in the pool is.
  readonly #held = new Set<string>()
  #closed = false

  constructor (options: DeliveryOptions) {
    this.#o = options
    this.#sent = new InvalidationLog(options.invalidationLogSize, options.invalidationLogSize * LOG_CHARS_PER_KEY, MAX_DEPARTED)
    this.#undelivered = new Undelivered(options.invalidationLogSize, options.invalidationLogSize * LOG_CHARS_PER_KEY)
  }

  /** True while some peer is held off the ring: only then is holds() worth asking. */
  get holding (): boolean {
    return this.#replays.size !== 0 || this.#held.size !== 0
  }

  /** True while `peer` is being sent what it missed or what failed to reach it, off the ring. */
  holds (peer: string): boolean {
    return this.#replays.has(peer) || this.#held.has(peer)
  }

  /** The peers held off the ring now (see holds()). */
  held (): Set<string> {
    return new Set([...this.#replays.keys(), ...this.#held])
  }

  /** True while some peer is owed a DELETE that failed: only then is answered() worth calling. */
  get owing (): boolean {
    return this.#retries.size !== 0
  }

  /**
   * Notes that the pool changes from `before` to `after` (not yet in use): a peer that left
   * gets what is invalidated from now on when it comes back, and one that came back is sent
   * what it missed. Returns what starts those replays, to be called once the new pool is in
   * use; the peers being replayed to are held off the ring until theirs ends.
   */
  poolChanging (before: ReadonlySet<string>, after: ReadonlySet<string>): () => void {
    for (const peer of before) if (!after.has(peer) && !this.#o.isSelf(peer)) this.#left(peer)
    const back: Array<[string, Missed, Replay | undefined]> = []
    for (const peer of after) {
      if (before.has(peer) || this.#o.isSelf(peer)) continue
      const missed = this.#sent.rejoined(peer)
      if (missed === undefined) continue
      const replay = missed.keys.length === 0 ? undefined : { keys: missed.keys, next: 0, inFlight: new Set<string>(), cancelled: false }
      if (replay !== undefined) this.#replays.set(peer, replay)
      back.push([peer, missed, replay])
    }
    if (back.length === 0) return NOTHING_TO_REPLAY
    return () => { for (const [peer, missed, replay] of back) void this.#replay(peer, missed, replay) }
  }

  /**
   * Sends every other peer in the pool the DELETE of `key`. Returns a promise that settles
   * when `owner` has answered (or failed to within peerTimeout), or undefined when `owner` is
   * not among them; it never rejects.
   */
  invalidate (key: string, owner: string | undefined): Promise<void> | undefined {
    // A peer out of the pool now does not get this DELETE: it is sent when it comes back.
    if (this.#sent.active) this.#sent.add(key)
    let ownerDone: Promise<void> | undefined
    for (const peer of this.#o.peers()) {
      if (this.#o.isSelf(peer)) continue
      // An ejected peer is failing already, and probed. A DELETE to it would wait out
      // peerTimeout on a connection of its own: one socket per invalidation, thousands at a
      // high rate of unsafe requests to a peer that accepts and never answers. It is owed
      // the DELETE instead, and gets it when a probe readmits it (readmitted()).
      if (this.#o.isEjected(peer)) {
        this.#owe(peer, key)
        continue
      }
      const done = this.#sendDelete(peer, key, true)
      if (peer === owner) ownerDone = done.then(() => {})
    }
    return ownerDone
  }

  /** `peer` has just answered (a forward to it succeeded): what failed to reach it can be sent now. */
  answered (peer: string): void {
    this.#poke(peer)
  }

  /**
   * `peer` has been readmitted after ejection (before the ring is rebuilt): what failed to
   * reach it meanwhile is sent, and it is held off the ring until then.
   */
  readmitted (peer: string): void {
    if (!this.#undelivered.has(peer)) return
    this.#held.add(peer)
    const retry = this.#retries.get(peer)
    if (retry?.delivering === true) retry.readmitted = true
    void this.#deliver(peer)
  }

  /** Stops every timed delivery and starts no more; replays and deliveries under way end. */
  close (): void {
    this.#closed = true
    for (const retry of this.#retries.values()) if (retry.timer !== undefined) clearTimeout(retry.timer)
    this.#retries.clear()
  }

  /** A peer has left the pool: what is invalidated from now on, it gets when it comes back. */
  #left (peer: string): void {
    this.#sent.left(peer)
    // What failed to reach it while it was in the pool is sent with the rest when it is back.
    this.#forgetRetry(peer)
    for (const key of this.#undelivered.take(peer)) this.#sent.add(key)
    const replay = this.#replays.get(peer)
    if (replay === undefined) return
    replay.cancelled = true
    this.#replays.delete(peer)
    // What it has not been seen to receive is logged again, after its leaving.
    for (const key of replay.inFlight) this.#sent.add(key)
    for (let i = replay.next; i < replay.keys.length; i++) this.#sent.add(replay.keys[i] as string)
  }

  /**
   * Sends a peer back in the pool the invalidations it missed (RFC 9111 section 4.4: it may
   * hold responses they made stale, as owner or as hot copies), then lets it onto the ring.
   * A DELETE of an entry refilled since only costs a refill. Gives up after ejectAfter
   * failures in a row: a peer that is down would hold each one for peerTimeout.
   */
  async #replay (peer: string, missed: Missed, replay: Replay | undefined): Promise<void> {
    if (!missed.complete) this.#o.counters.add('invalidationGaps')
    let sent = 0
    let failed = 0
    if (replay !== undefined) {
      const round = await this.#sendEach(replay, replay.keys.length, 0, () => !replay.cancelled, async (i) => {
        const key = replay.keys[i] as string
        replay.inFlight.add(key)
        const ok = await this.#sendDelete(peer, key, true)
        replay.inFlight.delete(key)
        return ok
      })
      sent = round.sent
      failed = round.failed
      const failuresInARow = round.failuresInARow
      // Left again meanwhile: what it did not get is logged again for its next return.
      if (replay.cancelled) return
      const abandoned = replay.keys.length - replay.next
      if (abandoned > 0 && !this.#closed) {
        failed += abandoned
        // Not forgotten: they are sent again once it answers, as any DELETE that failed. Never
        // sent, they are no errors: one counts in invalidationErrors if that later send fails.
        for (let i = replay.next; i < replay.keys.length; i++) this.#owe(peer, replay.keys[i] as string)
      }
      // What failed during a replay that did not give up is sent at once, and the peer stays
      // off the ring until it has been (as a readmitted one does): joining now, it would serve
      // what those DELETEs make stale. One that gave up joins, and gets them when it is next
      // seen to answer (or at its retry timer).
      const owed = failuresInARow < this.#o.ejectAfter && !this.#closed && this.#undelivered.has(peer)
      if (owed) this.#held.add(peer)
      this.#replays.delete(peer)
      if (!owed) this.#o.onHeldChanged()
      if (owed || this.#held.has(peer)) void this.#deliver(peer, failuresInARow)
    }
    if (channels.replay.hasSubscribers) channels.replay.publish({ self: this.#o.self(), peer, sent, failed, complete: missed.complete })
  }

  /**
   * What a replay and a delivery share: sends the keys from `cursor.next` up to `count`,
   * REPLAY_CONCURRENCY at a time, while `go()` holds, and gives up after ejectAfter failures
   * in a row (`failedBefore` of them already): a peer that is down would hold each one for
   * peerTimeout. `sendOne(i)` sends the i-th key, true when the peer answered 2xx. `cursor.next`
   * is the next key to send throughout, for a replay cancelled meanwhile.
   */
  async #sendEach (cursor: { next: number }, count: number, failedBefore: number, go: () => boolean, sendOne: (i: number) => Promise<boolean>): Promise<Round> {
    const round: Round = { sent: 0, failed: 0, failuresInARow: failedBefore }
    const worker = async (): Promise<void> => {
      while (go() && !this.#closed && round.failuresInARow < this.#o.ejectAfter && cursor.next < count) {
        const i = cursor.next++
        this.#o.counters.add('invalidationReplays')
        if (await sendOne(i)) {
          round.sent++
          round.failuresInARow = 0
        } else {
          round.failed++
          round.failuresInARow++
        }
      }
    }
    const workers: Array<Promise<void>> = []
    for (let i = 0; i < Math.min(REPLAY_CONCURRENCY, count - cursor.next); i++) workers.push(worker())
    await Promise.all(workers)
    return round
  }

  /**
   * Sends a peer the DELETE that invalidates `key` there. Resolves true when the peer answered
   * 2xx, false (counted in invalidationErrors) otherwise; never rejects. With `owe`, a failure
   * is kept to be sent again, and a success sends what failed to reach that peer before.
   */
  #sendDelete (peer: string, key: string, owe: boolean): Promise<boolean> {
    return this.#o.send(peer, key).then((ok) => {
      if (!ok) {
        this.#o.counters.add('invalidationErrors')
        if (owe) this.#owe(peer, key)
      } else if (owe && this.#retries.size !== 0) {
        this.#poke(peer)
      }
      return ok
    })
  }

  /**
   * Keeps `key` for `peer`, whose DELETE failed (RFC 9111 section 4.4: it may still hold what
   * the unsafe request made stale), to send again once it answers. A peer that has left the
   * pool meanwhile gets it with what it misses while out, when it comes back.
   */
  #owe (peer: string, key: string): void {
    if (this.#closed) return
    if (!this.#o.peers().includes(peer)) {
      if (this.#sent.active) this.#sent.add(key)
      return
    }
    const gaps = this.#undelivered.add(peer, key)
    if (gaps > 0) this.#o.counters.add('invalidationGaps', gaps)
    let retry = this.#retries.get(peer)
    if (retry === undefined) {
      retry = { timer: undefined, attempts: 0, delivering: false, readmitted: false, quietUntil: 0 }
      this.#retries.set(peer, retry)
      this.#scheduleRetry(peer, retry)
    }
  }

  /** The next timed delivery to `peer`, unless its attempts are spent or one is pending. */
  #scheduleRetry (peer: string, retry: Retry): void {
    if (retry.timer !== undefined || retry.attempts >= MAX_RETRIES || this.#closed) return
    const wait = Math.min(this.#o.ejectBackoff * 2 ** retry.attempts, MAX_RETRY_WAIT)
    retry.attempts++
    retry.timer = setTimeout(() => {
      retry.timer = undefined
      // An ejected peer is probed already: its readmission delivers.
      if (!this.#o.isEjected(peer)) void this.#deliver(peer)
    }, wait)
    // Like the health probes: never what keeps a process alive.
    retry.timer.unref()
  }

  /** `peer` has just answered: delivers what it is owed, unless a failed delivery was too recent. */
  #poke (peer: string): void {
    const retry = this.#retries.get(peer)
    if (retry !== undefined && performance.now() >= retry.quietUntil) void this.#deliver(peer)
  }

  #forgetRetry (peer: string): void {
    const retry = this.#retries.get(peer)
    if (retry === undefined) return
    if (retry.timer !== undefined) clearTimeout(retry.timer)
    this.#retries.delete(peer)
    if (this.#held.delete(peer)) this.#o.onHeldChanged()
  }

  /**
   * Sends `peer` again the invalidations that failed to reach it, four at a time, as a replay
   * does; one that fails again stays owed. Gives up after ejectAfter failures in a row and
   * waits for the next sign of the peer, or the next timed attempt. A peer held off the ring
   * for this joins it once all is sent, or when this gives up; `failedBefore` carries the
   * failures in a row of what ran before for it (a replay, the previous round).
   */
  async #deliver (peer: string, failedBefore = 0): Promise<void> {
    const retry = this.#retries.get(peer)
    if (retry === undefined) {
      if (this.#held.delete(peer)) this.#o.onHeldChanged()
      return
    }
    // A replay to it in progress delivers when it ends.
    if (retry.delivering || this.#closed || this.#replays.has(peer)) return
    const owed = this.#undelivered.owed(peer)
    if (owed.length === 0) return this.#forgetRetry(peer)
    retry.delivering = true
    if (retry.timer !== undefined) {
      clearTimeout(retry.timer)
      retry.timer = undefined
    }
    const current = (): boolean => !this.#closed && this.#retries.get(peer) === retry
    const round = await this.#sendEach({ next: 0 }, owed.length, failedBefore, current, async (i) => {
      const [key, seq] = owed[i] as [string, number]
      if (await this.#sendDelete(peer, key, false)) {
        this.#undelivered.delivered(peer, key, seq)
        return true
      }
      // It left the pool meanwhile: kept for its return instead.
      if (!current()) this.#owe(peer, key)
      return false
    })
    let failuresInARow = round.failuresInARow
    retry.delivering = false
    if (channels.delivery.hasSubscribers) channels.delivery.publish({ self: this.#o.self(), peer, sent: round.sent, failed: round.failed, remaining: this.#undelivered.count(peer) })
    if (!current()) return
    if (retry.readmitted) {
      // Readmitted while this ran: its failures were the peer's before it answered the probe.
      retry.readmitted = false
      failuresInARow = 0
    }
    if (!this.#undelivered.has(peer)) return this.#forgetRetry(peer)
    // Failed anew meanwhile, while this ran: sent at once. A held peer stays off the ring
    // until all is sent or this gives up, ejectAfter failures in a row (the peer is likely
    // down again): it would serve what the rest make stale.
    const held = this.#held.has(peer)
    if (failuresInARow === 0 || (held && failuresInARow < this.#o.ejectAfter)) return void this.#deliver(peer, failuresInARow)
    if (this.#held.delete(peer)) this.#o.onHeldChanged()
    // Failed again: another timed attempt.
    retry.quietUntil = performance.now() + Math.min(this.#o.ejectBackoff * 2 ** retry.attempts, MAX_RETRY_WAIT)
    this.#scheduleRetry(peer, retry)
  }
}
