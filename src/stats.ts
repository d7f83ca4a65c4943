/** Per-origin-host counters. */
export interface HostStats {
  /** Requests for this host served by this peer as owner. */
  requests: number
  /** Of those, answered from the cache. */
  hits: number
  /** Of those, with nothing usable stored. */
  misses: number
  /** Requests sent to this host (fills and validations). */
  originFetches: number
  /** Bytes this host's responses hold in the cache now. */
  bytes: number
}

/** A Client's counters: totals since it was created. */
export interface ClientStats {
  /** GET/HEAD requests dispatched through the Client. */
  requests: number
  /** Requests sent to their owner peer. */
  forwards: number
  /** Forwards that failed before a response started (each then went to the origin). */
  forwardErrors: number
  /** Requests sent to origins directly (other methods, Authorization, fallbacks). */
  originFetches: number
  /** Non-GET/HEAD requests passed straight to origins. */
  passThrough: number
  /** Invalidations (DELETEs) sent to peers that failed or got an answer other than 2xx, each attempt. */
  invalidationErrors: number
  /** Invalidations sent again: to peers that came back to the pool, or that a DELETE failed to reach. */
  invalidationReplays: number
  /** Times invalidations owed to a peer were forgotten to stay within `invalidationLogSize`. */
  invalidationGaps: number
}

/**
 * Plain counters, in the manner of groupcache's Stats. All are totals since the peer was
 * created, except the cache gauges (`cacheBytes`, `cacheEntries`, `hosts`).
 */
export interface PeerStats {
  /** GET/HEAD requests dispatched through this peer by local callers. */
  requests: number
  /** Requests answered from this peer's cache without contacting the origin. */
  localHits: number
  /** Owned requests that found nothing usable stored. */
  misses: number
  /** Requests sent to the owning peer. */
  forwards: number
  /** Forwards that failed before a response started (each then fell back to the origin). */
  forwardErrors: number
  /** Requests received on handler() from other peers or clients. */
  servedForPeers: number
  /** Waits that joined an origin fetch already in flight for the same key. */
  coalescedWaits: number
  /** Requests sent to origins (full fetches, revalidations and non-GET/HEAD methods). */
  originFetches: number
  /** Conditional requests sent to validate a stored response. */
  revalidations: number
  /** Stale responses served (request max-stale). */
  staleServed: number
  /** Responses stored. */
  stored: number
  /** Stored URLs dropped after an unsafe method (RFC 9111 section 4.4). */
  invalidations: number
  /** Non-GET/HEAD requests passed straight to the origin. */
  passThrough: number
  /**
   * Invalidations (DELETEs) sent to other peers that failed or got an answer other than 2xx,
   * each attempt (those sent again included). What failed is kept and sent again when that
   * peer next answers (see `invalidationReplays`); until then it may serve what the
   * invalidation should have removed.
   */
  invalidationErrors: number
  /**
   * Invalidations sent again: to a peer that came back to the pool (re-added by `setPeers()`
   * or DNS discovery), for URLs invalidated while it was out of this peer's pool; and to a peer
   * in the pool whose DELETE failed, once it is seen to answer (readmitted after ejection, a
   * forward or a later DELETE to it succeeds, or a timed retry).
   */
  invalidationReplays: number
  /**
   * Times invalidations owed to a peer were forgotten to stay within `invalidationLogSize`:
   * a peer that came back to the pool after more invalidations than the log keeps (once per
   * return), or a peer whose failed DELETEs were dropped from the set kept to send again (once
   * until it owes nothing again). That peer may serve what the forgotten invalidations should
   * have removed, until it goes stale.
   */
  invalidationGaps: number
  /** Bytes held in the cache now (bodies, headers and bookkeeping). */
  cacheBytes: number
  /** Stored responses now (each Vary variant counts). */
  cacheEntries: number
  /** Stored responses evicted to stay within maxSize or maxHostSize. */
  evictions: number
  /** Origin hosts with something stored now. */
  hosts: number
  /** Keys with an origin fetch or a forward in flight (coalescing table size): 0 when idle. */
  flights: number
  /** Requests answered from hot copies of keys owned by other peers. */
  hotHits: number
  /** Bytes held in hot copies. */
  hotBytes: number
  /** Counters per origin host (the 1,000 most recently seen hosts). */
  perHost: Record<string, HostStats>
}

export type CounterName = Exclude<keyof PeerStats, 'perHost' | 'cacheBytes' | 'cacheEntries' | 'evictions' | 'hosts' | 'flights' | 'hotHits' | 'hotBytes'>
export type HostCounterName = Exclude<keyof HostStats, 'bytes'>

// Bounds the per-host table: a peer asked for a million hosts must not keep a million rows.
const MAX_HOST_ROWS = 1000

import { Histogram } from './observe/histogram.js'

export class Counters {
  /** Seconds to response headers, from origins and from owner peers. */
  readonly latency = { origin: new Histogram(), peer: new Histogram() }

  readonly values: Record<CounterName, number> = {
    requests: 0,
    localHits: 0,
    misses: 0,
    forwards: 0,
    forwardErrors: 0,
    servedForPeers: 0,
    coalescedWaits: 0,
    originFetches: 0,
    revalidations: 0,
    staleServed: 0,
    stored: 0,
    invalidations: 0,
    passThrough: 0,
    invalidationErrors: 0,
    invalidationReplays: 0,
    invalidationGaps: 0
  }

  readonly hosts = new Map<string, HostStats>()

  add (name: CounterName, n = 1): void {
    this.values[name] += n
  }

  addHost (host: string, name: HostCounterName): void {
    this.hostRow(host)[name]++
  }

  // The host asked for last, and its row: requests mostly come for one host after another,
  // and for those the table's order is already right.
  #lastHost = ''
  #lastRow: HostStats | undefined

  /**
   * The counters of one origin host, created on first use. The table is bounded and kept in
   * order of use, so a new host past the bound drops the least recently seen one, never a
   * busy host that was merely seen first.
   */
  hostRow (host: string): HostStats {
    if (host === this.#lastHost && this.#lastRow !== undefined) return this.#lastRow
    let row = this.hosts.get(host)
    if (row === undefined) {
      if (this.hosts.size >= MAX_HOST_ROWS) {
        const first = this.hosts.keys().next()
        if (first.done !== true) this.hosts.delete(first.value)
      }
      row = { requests: 0, hits: 0, misses: 0, originFetches: 0, bytes: 0 }
    } else {
      this.hosts.delete(host)
    }
    this.hosts.set(host, row)
    this.#lastHost = host
    this.#lastRow = row
    return row
  }
}
