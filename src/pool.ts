import { Pool } from 'undici'

export interface PeerPoolOptions {
  connectTimeout: number
  bodyTimeout: number
  headersTimeout: number
}

interface PeerTarget {
  readonly pool: Pool
  /** The peer base URL's path prefix, if it is mounted below the root. */
  readonly basePath: string
}

/**
 * One keep-alive undici Pool per peer, created on first use and closed when the peer leaves
 * the pool.
 */
export class PeerPools {
  readonly #opts: PeerPoolOptions
  readonly #targets = new Map<string, PeerTarget>()

  constructor (opts: PeerPoolOptions) {
    this.#opts = opts
  }

  get (peer: string): PeerTarget {
    let target = this.#targets.get(peer)
    if (target === undefined) {
      const url = new URL(peer)
      target = {
        pool: new Pool(url.origin, {
          connect: { timeout: this.#opts.connectTimeout },
          headersTimeout: this.#opts.headersTimeout,
          bodyTimeout: this.#opts.bodyTimeout,
          keepAliveTimeout: 30_000
        }),
        basePath: url.pathname === '/' ? '' : url.pathname
      }
      this.#targets.set(peer, target)
    }
    return target
  }

  /** Closes the pools of peers no longer in `keep`, letting their requests finish. */
  retain (keep: ReadonlySet<string>): void {
    for (const [peer, target] of this.#targets) {
      if (!keep.has(peer)) {
        this.#targets.delete(peer)
        target.pool.close().catch(() => {})
      }
    }
  }

  async close (): Promise<void> {
    const all = [...this.#targets.values()]
    this.#targets.clear()
    await Promise.all(all.map((t) => t.pool.close().catch(() => {})))
  }

  async destroy (err: Error): Promise<void> {
    const all = [...this.#targets.values()]
    this.#targets.clear()
    await Promise.all(all.map((t) => t.pool.destroy(err).catch(() => {})))
  }
}
