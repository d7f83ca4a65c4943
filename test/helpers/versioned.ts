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

/** A gate in front of the peer handler mounted on a server: what its DELETEs meet. */
export interface DeleteGate {
  /** DELETEs destroyed unanswered so far. */
  refused: () => number
  /** DELETEs the peer's handler has answered. */
  answered: () => number
  /** Destroys unanswered the next `n` DELETEs (a peer unreachable for a moment); 0 stops. */
  refuse: (n: number) => void
  /** Holds the next DELETE unanswered until fail() destroys its connection. */
  hold: () => void
  held: () => boolean
  fail: () => void
  /** While set, forwards (GETs with q) have their connection destroyed: the owner is ejected. */
  failForwards: (on: boolean) => void
}

/** Puts a DeleteGate in front of the peer mounted on `server`, refusing the first `refuse` DELETEs. */
export function deleteGate (server: http.Server, refuse = 0): DeleteGate {
  const handler = server.listeners('request')[0] as http.RequestListener
  server.removeAllListeners('request')
  let refused = 0
  let answered = 0
  let toRefuse = refuse
  let hold = false
  let holding: http.IncomingMessage | undefined
  let failForwards = false
  server.on('request', (req, res) => {
    if (req.method === 'DELETE') {
      if (toRefuse > 0) {
        toRefuse--
        refused++
        req.socket.destroy()
        return
      }
      if (hold) {
        hold = false
        holding = req
        return
      }
      res.on('finish', () => { answered++ })
    } else if (failForwards && req.url?.includes('?q=') === true) {
      req.socket.destroy()
      return
    }
    handler(req, res)
  })
  return {
    refused: () => refused,
    answered: () => answered,
    refuse: (n) => { toRefuse = n },
    hold: () => { hold = true },
    held: () => holding !== undefined,
    fail: () => {
      holding?.socket.destroy()
      holding = undefined
    },
    failForwards: (on) => { failForwards = on }
  }
}
