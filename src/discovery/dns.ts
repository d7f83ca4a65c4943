import dns from 'node:dns'
import { InvalidArgumentError } from '../errors.js'

// What a resolver answers for a name that has no records of one address family.
const NO_RECORDS: ReadonlySet<string> = new Set(['ENODATA', 'ENOTFOUND'])

/** The part of node:dns's Resolver that discovery uses; inject a stub in tests. */
export interface DnsResolver {
  /** IPv4 addresses of a name (A records). */
  resolve4 (hostname: string): Promise<string[]>
  /** IPv6 addresses of a name (AAAA records). */
  resolve6 (hostname: string): Promise<string[]>
  /** Targets and ports of an SRV name. */
  resolveSrv (hostname: string): Promise<dns.SrvRecord[]>
  /** Ends the queries in flight, which then reject (node:dns: ECANCELLED). Called by stop(). */
  cancel? (): void
}

/** Something whose pool can be replaced: a Peer or a Client. */
export interface PoolTarget {
  /** Replaces the pool. */
  setPeers (peers: readonly string[]): void
  /** The pool now. */
  readonly peers: readonly string[]
  /** The target's own URL, kept in the pool while DNS does not list it yet (Peers only). */
  readonly self?: string
}

/** Options of a DnsDiscovery. */
export interface DnsDiscoveryOptions {
  /**
   * The name to resolve: a headless Service (`cache.default.svc.cluster.local`) for A/AAAA,
   * or an SRV name (`_http._tcp.cache.service.consul`) with `srv: true`.
   */
  name: string
  /** Look up SRV records (targets and ports) instead of A/AAAA. @default false */
  srv?: boolean
  /** Port of every peer, for A/AAAA records. @default 80 (443 with https) */
  port?: number
  /** Scheme of the peer URLs. @default 'http' */
  protocol?: 'http' | 'https'
  /** Path prefix of the peer URLs, if the handler is mounted below the root. @default '' */
  basePath?: string
  /** Milliseconds between resolutions. @default 10000 */
  interval?: number
  /** Keep the target's own URL in the pool even before DNS lists it. @default true */
  includeSelf?: boolean
  /**
   * Give it a Resolver of its own: stop() cancels the queries in flight on it, so a DNS
   * server that does not answer cannot keep the process alive for the resolver's timeout.
   * @default a new node:dns Resolver using the system's servers
   */
  resolver?: DnsResolver
  /** Called with each resolution failure; the pool is left as it was. */
  onError?: (err: Error) => void
}

/**
 * Keeps a Peer's (or Client's) pool equal to what DNS says, re-resolving on an interval.
 * A failed or empty answer never empties the pool: the last good one stays, so a DNS blip
 * does not make the ring flap.
 */
export class DnsDiscovery {
  readonly #target: PoolTarget
  readonly #o: Required<Omit<DnsDiscoveryOptions, 'onError' | 'port'>> & { port: number | undefined, onError: ((err: Error) => void) | undefined }
  #timer: NodeJS.Timeout | undefined
  #stopped = false
  #inFlight = 0
  #last = ''
  // Lookups can overlap (a refresh() while start()'s or the timer's is in flight) and answer
  // in any order: each is numbered, and an answer older than the one already applied is
  // dropped, or a slow lookup would put back peers a newer answer had removed.
  #lookups = 0
  #applied = 0

  constructor (target: PoolTarget, options: DnsDiscoveryOptions) {
    if (target === null || typeof target !== 'object' || typeof target.setPeers !== 'function') {
      throw new InvalidArgumentError('expected a Peer or Client to keep in sync')
    }
    if (options === null || typeof options !== 'object' || typeof options.name !== 'string' || options.name === '') {
      throw new InvalidArgumentError('expected opts.name to be a DNS name')
    }
    const interval = options.interval ?? 10_000
    if (!Number.isSafeInteger(interval) || interval <= 0) throw new InvalidArgumentError('expected opts.interval to be a positive integer')
    if (options.port !== undefined && (!Number.isInteger(options.port) || options.port <= 0 || options.port > 65535)) {
      throw new InvalidArgumentError('expected opts.port to be a port number')
    }
    this.#target = target
    this.#o = {
      name: options.name,
      srv: options.srv ?? false,
      port: options.port,
      protocol: options.protocol ?? 'http',
      basePath: (options.basePath ?? '').replace(/\/+$/, ''),
      interval,
      includeSelf: options.includeSelf ?? true,
      resolver: options.resolver ?? new dns.promises.Resolver(),
      onError: options.onError
    }
  }

  /**
   * Resolves once now, then on the interval (again after stop()). Rejects if that first
   * resolution fails, but keeps trying on the interval all the same: a pod that starts before
   * any peer is ready (a first rollout, a scale-up from zero) joins the pool as soon as DNS
   * lists it. Stopped meanwhile, it resolves with the pool as it is.
   */
  async start (): Promise<readonly string[]> {
    this.#stopped = false
    const n = ++this.#lookups
    try {
      this.#apply(await this.#resolve(), n)
    } catch (err) {
      if (!this.#stopped) throw err
    } finally {
      this.#schedule()
    }
    return this.#target.peers
  }

  /** Resolves now and applies the result; the pool is unchanged on failure. */
  async refresh (): Promise<void> {
    const n = ++this.#lookups
    try {
      this.#apply(await this.#resolve(), n)
    } catch (err) {
      // What stop() cancelled is no failure.
      if (this.#stopped) return
      // An onError that throws must not become an unhandled rejection of the timer's refresh.
      try {
        this.#o.onError?.(err as Error)
      } catch {}
    }
  }

  /** Stops re-resolving and ends the lookup in flight; the pool stays as it is. */
  stop (): void {
    this.#stopped = true
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#inFlight > 0) this.#o.resolver.cancel?.()
  }

  #schedule (): void {
    if (this.#stopped) return
    // start() twice must not leave a second timer running for ever.
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = setTimeout(() => {
      this.refresh().finally(() => this.#schedule())
    }, this.#o.interval)
    this.#timer.unref()
  }

  #url (host: string, port: number): string {
    const h = host.includes(':') ? `[${host}]` : host.replace(/\.$/, '')
    return `${this.#o.protocol}://${h}:${port}${this.#o.basePath}`
  }

  async #resolve (): Promise<string[]> {
    this.#inFlight++
    try {
      return await this.#lookup()
    } finally {
      this.#inFlight--
    }
  }

  async #lookup (): Promise<string[]> {
    const { resolver, name } = this.#o
    const defaultPort = this.#o.port ?? (this.#o.protocol === 'https' ? 443 : 80)
    let urls: string[]
    if (this.#o.srv) {
      const records = await resolver.resolveSrv(name)
      urls = records.map((r) => this.#url(r.name, r.port))
    } else {
      // Either family may legitimately have no records (ENODATA, or ENOTFOUND for both);
      // any other failure of one (a timeout, a refused query) leaves its half of the pool
      // unknown, and applying the other half alone would move most keys for nothing.
      const [v4, v6] = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)])
      if (v4.status === 'rejected' && v6.status === 'rejected') throw v4.reason as Error
      for (const r of [v4, v6]) {
        if (r.status === 'rejected' && !NO_RECORDS.has((r.reason as { code?: string }).code ?? '')) throw r.reason as Error
      }
      const addresses = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])]
      urls = addresses.map((a) => this.#url(a, defaultPort))
    }
    if (urls.length === 0) throw new Error(`DNS returned no peers for ${name}`)
    return urls
  }

  #apply (urls: string[], n: number): void {
    if (this.#stopped || n < this.#applied) return
    this.#applied = n
    const self = this.#target.self
    const peers = this.#o.includeSelf && self !== undefined && !urls.includes(self) ? [...urls, self] : urls
    const key = [...peers].sort().join(' ')
    if (key === this.#last) return
    this.#target.setPeers(peers)
    // Remembered once applied: a pool the target refused (too large for its ring) is refused,
    // and reported to onError, at every resolution, not once and then silently skipped.
    this.#last = key
  }
}
