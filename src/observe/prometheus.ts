import type { PeerStats } from '../stats.js'
import type { Histogram } from './histogram.js'

function escapeLabel (value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
}

function labels (pairs: Record<string, string>): string {
  const parts = Object.entries(pairs).map(([k, v]) => `${k}="${escapeLabel(v)}"`)
  return parts.length === 0 ? '' : `{${parts.join(',')}}`
}

/** Renders the Prometheus text exposition format (version 0.0.4). */
export class Exposition {
  readonly #lines: string[] = []

  metric (name: string, type: 'counter' | 'gauge', help: string, samples: Array<[Record<string, string>, number]>): this {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
    for (const [l, v] of samples) this.#lines.push(`${name}${labels(l)} ${v}`)
    return this
  }

  histogram (name: string, help: string, h: Histogram, base: Record<string, string> = {}): this {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`)
    let cumulative = 0
    for (let i = 0; i < h.buckets.length; i++) {
      cumulative += h.counts[i] as number
      this.#lines.push(`${name}_bucket${labels({ ...base, le: String(h.buckets[i]) })} ${cumulative}`)
    }
    this.#lines.push(`${name}_bucket${labels({ ...base, le: '+Inf' })} ${h.count}`)
    this.#lines.push(`${name}_sum${labels(base)} ${h.sum}`)
    this.#lines.push(`${name}_count${labels(base)} ${h.count}`)
    return this
  }

  toString (): string {
    return this.#lines.join('\n') + '\n'
  }
}

export interface Latencies {
  origin: Histogram
  peer: Histogram
}

/** A peer's counters, gauges and latency histograms in Prometheus' conventions. */
export function renderPeerMetrics (s: PeerStats, latencies: Latencies, peers: { healthy: number, ejected: number, held: number }): string {
  const e = new Exposition()
  e.metric('forwardcache_requests_total', 'counter', 'GET/HEAD requests by how they were answered.', [
    [{ result: 'hit' }, s.localHits],
    [{ result: 'miss' }, s.misses],
    [{ result: 'stale' }, s.staleServed],
    [{ result: 'forward' }, s.forwards],
    [{ result: 'forward_error' }, s.forwardErrors],
    [{ result: 'coalesced' }, s.coalescedWaits],
    [{ result: 'revalidation' }, s.revalidations]
  ])
  e.metric('forwardcache_local_requests_total', 'counter', 'GET/HEAD requests dispatched by local callers.', [[{}, s.requests]])
  e.metric('forwardcache_served_for_peers_total', 'counter', 'Requests received on handler() from other peers.', [[{}, s.servedForPeers]])
  e.metric('forwardcache_origin_fetches_total', 'counter', 'Requests sent to origins.', [[{}, s.originFetches]])
  e.metric('forwardcache_stored_total', 'counter', 'Responses stored.', [[{}, s.stored]])
  e.metric('forwardcache_evictions_total', 'counter', 'Stored responses evicted to stay within the byte budgets.', [[{}, s.evictions]])
  e.metric('forwardcache_invalidations_total', 'counter', 'URLs invalidated after unsafe methods.', [[{}, s.invalidations]])
  e.metric('forwardcache_pass_through_total', 'counter', 'Non-GET/HEAD requests passed to origins.', [[{}, s.passThrough]])
  e.metric('forwardcache_invalidation_errors_total', 'counter', 'Invalidations sent to peers that failed or were refused.', [[{}, s.invalidationErrors]])
  e.metric('forwardcache_invalidation_replays_total', 'counter', 'Invalidations sent again to peers that came back to the pool or that a DELETE failed to reach.', [[{}, s.invalidationReplays]])
  e.metric('forwardcache_invalidation_gaps_total', 'counter', 'Times invalidations owed to a peer were forgotten to stay within invalidationLogSize.', [[{}, s.invalidationGaps]])
  e.metric('forwardcache_cache_bytes', 'gauge', 'Bytes held in the cache.', [[{}, s.cacheBytes]])
  e.metric('forwardcache_cache_entries', 'gauge', 'Responses held in the cache.', [[{}, s.cacheEntries]])
  e.metric('forwardcache_cache_hosts', 'gauge', 'Origin hosts with cached responses.', [[{}, s.hosts]])
  e.metric('forwardcache_inflight_keys', 'gauge', 'Keys with an origin fetch or forward in flight.', [[{}, s.flights]])
  e.metric('forwardcache_peers', 'gauge', 'Peers in the pool by routing state (held: off the ring while sent the invalidations they missed).', [[{ state: 'healthy' }, peers.healthy], [{ state: 'ejected' }, peers.ejected], [{ state: 'held' }, peers.held]])
  const hosts = Object.entries(s.perHost)
  e.metric('forwardcache_host_requests_total', 'counter', 'Owned requests per origin host.', hosts.map(([host, r]) => [{ host }, r.requests]))
  e.metric('forwardcache_host_hits_total', 'counter', 'Cache hits per origin host.', hosts.map(([host, r]) => [{ host }, r.hits]))
  e.metric('forwardcache_host_bytes', 'gauge', 'Cached bytes per origin host.', hosts.map(([host, r]) => [{ host }, r.bytes]))
  e.histogram('forwardcache_origin_duration_seconds', 'Time from sending a request to an origin to its response headers.', latencies.origin)
  e.histogram('forwardcache_peer_duration_seconds', 'Time from forwarding a request to the owner peer to its response headers.', latencies.peer)
  return e.toString()
}
