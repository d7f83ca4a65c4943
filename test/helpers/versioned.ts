import type http from 'node:http'
import { request, type Dispatcher } from 'undici'

// What the invalidation tests share: an origin whose bodies name a version that each POST
// moves on, so a stale entry is told from a fresh one by its body alone.

export interface Got { status: number, headers: Record<string, string | string[] | undefined>, body: string }

/** A request through `dispatcher`, its body read whole. */
export async function send (dispatcher: Dispatcher, url: string, method: Dispatcher.HttpMethod = 'GET'): Promise<Got> {
  const res = await request(url, { dispatcher, method })
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

/**
 * An origin handler whose GETs answer the path's current version (fresh for 300 s); a POST
 * makes the next, and with `related` (POST path -> other path) also the other's, named in
 * Content-Location. `gets(path)` counts the GETs of a path.
 */
export function versionedPaths (related = new Map<string, string>()): { route: (req: http.IncomingMessage, res: http.ServerResponse) => void, gets: (path: string) => number } {
  const versions = new Map<string, number>()
  const gets = new Map<string, number>()
  const bump = (path: string): void => { versions.set(path, (versions.get(path) ?? 1) + 1) }
  return {
    gets: (path) => gets.get(path) ?? 0,
    route: (req, res) => {
      const path = req.url ?? '/'
      if (req.method === 'POST') {
        bump(path)
        const other = related.get(path)
        if (other !== undefined) bump(other)
        res.writeHead(204, other === undefined ? {} : { 'content-location': other })
        res.end()
        return
      }
      gets.set(path, (gets.get(path) ?? 0) + 1)
      const body = `${path} v${versions.get(path) ?? 1}`
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    }
  }
}

/** The path and query of `url`: what the versioned bodies name. */
export function pathOf (url: string): string {
  const u = new URL(url)
  return u.pathname + u.search
}
